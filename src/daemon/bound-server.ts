/**
 * @module daemon/bound-server
 * The health and metrics servers' binding, with upstream's `bindAddressHardFail`: a server that
 * cannot bind (the port taken, the address not on this host) stops kproxy only when it is set;
 * otherwise the failure is logged and the bind retried every 5 s (upstream's period), so the
 * server appears once the port is free, and kproxy proxies meanwhile.
 */
import type { Logger } from '../util/log.ts';
import type { RunningServer } from './http-listen.ts';

/** Upstream retries a failed health or metrics server every 5 s. */
export const BIND_RETRY_MS = 5000;

export interface BoundServer {
  /** The server while it is bound; null while retrying, or when disabled. */
  readonly current: RunningServer | null;
  /** Stops retrying and closes the server. */
  close(): Promise<void>;
}

/** `start` resolves null for a disabled server; rejects when it cannot bind. */
export async function bindServer(
  start: () => Promise<RunningServer | null>,
  o: { hardFail: boolean; log: Logger; retryMs?: number },
): Promise<BoundServer> {
  let current: RunningServer | null = null;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let lastError = '';
  const attempt = async (): Promise<void> => {
    try {
      const server = await start();
      if (closed) await server?.close();
      else current = server;
      if (lastError !== '') o.log.info({ url: server?.url }, 'bound at last; the failure before is over');
    } catch (err) {
      if (o.hardFail) throw err;
      const message = (err as Error).message;
      // Logged when it changes, not every 5 s.
      if (message !== lastError)
        o.log.error(
          `${message}; retrying every ${(o.retryMs ?? BIND_RETRY_MS) / 1000} s (bindAddressHardFail is false)`,
        );
      lastError = message;
      if (!closed) timer = setTimeout(() => void attempt(), o.retryMs ?? BIND_RETRY_MS);
    }
  };
  await attempt();
  return {
    get current() {
      return current;
    },
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      await current?.close();
    },
  };
}
