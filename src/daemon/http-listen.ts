/**
 * @module daemon/http-listen
 * Binding an `http.Server` to a `host:port` text, with listen errors delivered as a rejected
 * promise (never an asynchronous throw), and closing it without waiting for idle keep-alives.
 * Shared by the healthz, metrics and per-Service health-check servers.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HostPort {
  /** Undefined: every local address, both families (what Go does for `0.0.0.0`, `::` or empty). */
  readonly host: string | undefined;
  readonly port: number;
}

/**
 * Splits `IP:port`, `[IPv6]:port` or `:port`. Port 0 is allowed (an ephemeral port, for tests).
 * The wildcard addresses `0.0.0.0` and `::` become "every address" (host undefined), as Go's
 * `net.Listen("tcp", …)` listens dual-stack for them. Throws on malformed text.
 */
export function splitHostPort(text: string): HostPort {
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port > 65535)
    throw new Error(`invalid bind address ${JSON.stringify(text)}: want IP:port or [IPv6]:port`);
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' || host === '0.0.0.0' || host === '::' ? undefined : host, port };
}

export function joinHostPort(host: string | undefined, port: number): string {
  if (host === undefined) return `:${port}`;
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export interface RunningServer {
  /** The address actually bound (the wildcard shows as `::` or `0.0.0.0`). */
  readonly host: string;
  /** The port actually bound (useful when asked for port 0). */
  readonly port: number;
  /** `http://host:port`, with the host bracketed when IPv6. */
  readonly url: string;
  /** Stops accepting, drops open connections; resolves when closed. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts `server` listening. Rejects (EADDRINUSE, EACCES, EADDRNOTAVAIL, …) instead of emitting an
 * unhandled 'error'; once listening, later server errors go to `onError`.
 */
export function listen(server: Server, at: HostPort, onError: (err: Error) => void = () => {}): Promise<RunningServer> {
  return new Promise<RunningServer>((resolve, reject) => {
    const onListenError = (err: Error): void => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = (): void => {
      server.off('error', onListenError);
      server.on('error', onError);
      const a = server.address() as AddressInfo;
      let closed: Promise<void> | undefined;
      resolve({
        host: a.address,
        port: a.port,
        url: `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`,
        close: () => (closed ??= closeServer(server)),
      });
    };
    server.once('error', onListenError);
    server.once('listening', onListening);
    if (at.host === undefined) server.listen(at.port);
    else server.listen(at.port, at.host);
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
