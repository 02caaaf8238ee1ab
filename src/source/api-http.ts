/**
 * @module source/api-http
 * kproxy's HTTP to the API server: one connection type (where requests go and how they
 * authenticate) with two makers — a plain endpoint read by kproxy itself (`api-endpoint.ts`), or
 * client-node's KubeConfig for kubeconfigs that need its auth plugins — and the three requests
 * kproxy makes: a GET or POST answered with JSON, and a GET whose body is read as a stream (lists
 * and watches). Nothing user-controlled reaches a URL unescaped: paths are built from constants
 * and `encodeURIComponent`, query values go through URLSearchParams.
 */
import type { IncomingMessage } from 'node:http';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';

/** Where requests go and how they authenticate. */
export interface ApiConnection {
  /** `https://host:port` (or `http://`), perhaps with a path prefix. */
  readonly server: string;
  /** Sets TLS options and credentials on a request's options (may refresh them first). */
  apply(opts: RequestOptions): Promise<void>;
}

/** The API server address and plain credentials (no auth plugin). */
export interface ApiEndpoint {
  readonly server: string;
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** False only when the kubeconfig says `insecure-skip-tls-verify: true`. */
  readonly rejectUnauthorized: boolean;
  readonly servername?: string;
  readonly token?: string;
}

/** How often file-based credentials are read again (client-go re-reads a token file every minute). */
export const CREDENTIALS_REFRESH_MS = 60_000;

/**
 * A connection with `endpoint`'s credentials; `reload` (when given) reads them again at most every
 * {@link CREDENTIALS_REFRESH_MS} — service account tokens and client certificates rotate. A reload
 * that fails or finds the kubeconfig no longer plain keeps the credentials it had.
 */
export function endpointConnection(
  endpoint: ApiEndpoint,
  reload?: () => Promise<ApiEndpoint | undefined>,
  now: () => number = Date.now,
): ApiConnection {
  let current = endpoint;
  let readAt = now();
  let reading: Promise<void> | undefined;
  const refresh = async (): Promise<void> => {
    if (!reload || now() - readAt < CREDENTIALS_REFRESH_MS) return;
    reading ??= reload()
      .then((next) => {
        if (next) current = { ...next, server: current.server };
      })
      .catch(() => undefined)
      .finally(() => {
        readAt = now();
        reading = undefined;
      });
    await reading;
  };
  return {
    server: endpoint.server,
    apply: async (opts) => {
      await refresh();
      const ep = current;
      if (ep.ca) opts.ca = ep.ca;
      if (ep.cert) opts.cert = ep.cert;
      if (ep.key) opts.key = ep.key;
      if (ep.servername) opts.servername = ep.servername;
      opts.rejectUnauthorized = ep.rejectUnauthorized;
      if (ep.token) opts.headers = { ...opts.headers, Authorization: `Bearer ${ep.token}` };
    },
  };
}

/** A connection through client-node's KubeConfig (exec and auth-provider credentials included). */
export function kubeConfigConnection(kc: KubeConfig): ApiConnection {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  return { server: cluster.server, apply: (opts) => kc.applyToHTTPSOptions(opts) };
}

/** A non-2xx answer (or an ERROR watch event), with the server's message made printable. */
export class ApiError extends Error {
  readonly statusCode: number;
  /** The answer's Retry-After (429, 503), in ms. */
  readonly retryAfterMs: number | undefined;
  constructor(what: string, statusCode: number, body: unknown, retryAfterMs?: number) {
    const message = isRecord(body) && typeof body['message'] === 'string' ? `: ${safeText(body['message'])}` : '';
    super(`${what}: HTTP ${statusCode}${message}`);
    this.statusCode = statusCode;
    this.retryAfterMs = retryAfterMs;
  }
}

export interface RequestSpec {
  readonly method: 'GET' | 'POST';
  /** Relative to the server URL; built from constants and encodeURIComponent'd names. */
  readonly path: string;
  readonly query?: Readonly<Record<string, string>>;
  readonly body?: unknown;
  readonly signal: AbortSignal;
  /** No answer (headers) within this long fails the request; for a stream, no bytes for this long. */
  readonly timeoutMs: number;
  /** Called once the request is written out. */
  readonly onSent?: () => void;
}

export interface JsonAnswer {
  readonly status: number;
  readonly body: unknown;
  readonly retryAfterMs?: number;
}

/** A request answered with JSON, read whole; a 2xx answer that is not JSON fails. */
export async function requestJson(conn: ApiConnection, spec: RequestSpec): Promise<JsonAnswer> {
  const answer = await readAnswer(await openStream(conn, spec));
  if (answer.body === undefined && answer.status >= 200 && answer.status < 300)
    throw new Error(`${spec.method} ${spec.path}: the answer is not JSON`);
  return answer;
}

/** Reads an answer's body as JSON (undefined when it is not, or longer than `maxBytes`), with its Retry-After. */
export async function readAnswer(res: IncomingMessage, maxBytes = 1024 * 1024): Promise<JsonAnswer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of res) {
    size += (c as Buffer).length;
    if (size <= maxBytes) chunks.push(c as Buffer);
  }
  let body: unknown;
  try {
    body = size <= maxBytes ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
  } catch {
    body = undefined;
  }
  const retryAfterMs = retryAfterOf(res.headers['retry-after']);
  return { status: res.statusCode ?? 0, body, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) };
}

/**
 * A request whose answer is read as a stream (the caller consumes `res`). The socket timeout
 * stays armed: a stream silent for `timeoutMs` is destroyed with an error.
 */
export async function openStream(conn: ApiConnection, spec: RequestSpec): Promise<IncomingMessage> {
  const url = new URL(conn.server.replace(/\/+$/, '') + spec.path);
  for (const [k, v] of Object.entries(spec.query ?? {})) url.searchParams.set(k, v);
  const payload = spec.body === undefined ? undefined : Buffer.from(JSON.stringify(spec.body));
  const opts: RequestOptions = {
    method: spec.method,
    headers: {
      Accept: 'application/json',
      ...(payload ? { 'Content-Type': 'application/json', 'Content-Length': String(payload.length) } : {}),
    },
  };
  await conn.apply(opts);
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const what = `${spec.method} ${spec.path}`;
  return new Promise((resolve, reject) => {
    const req = send(url, { ...opts, signal: spec.signal, timeout: spec.timeoutMs }, resolve);
    req.on('timeout', () => req.destroy(new Error(`${what}: nothing received for ${spec.timeoutMs} ms`)));
    if (spec.onSent) req.on('finish', spec.onSent);
    req.on('error', reject);
    req.end(payload);
  });
}

/** Retry-After in seconds (the API server never sends the HTTP-date form), as ms; at most an hour. */
function retryAfterOf(header: string | string[] | undefined): number | undefined {
  const text = Array.isArray(header) ? header[0] : header;
  if (text === undefined || !/^\d{1,6}$/.test(text.trim())) return undefined;
  return Math.min(3_600_000, Number(text.trim()) * 1000);
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** One line of printable ASCII, at most 200 characters (server text is untrusted). */
export function safeText(s: string): string {
  const clean = s.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return clean.length > 200 ? `${clean.slice(0, 200)}...` : clean;
}

export function errorText(err: unknown): string {
  if (!(err instanceof Error)) return safeText(String(err));
  const cause = err.cause instanceof Error && err.cause.message !== err.message ? ` (${err.cause.message})` : '';
  return safeText(`${err.message}${cause}`);
}
