/**
 * @module daemon/metrics-server
 * The metrics HTTP server (upstream `serveMetrics`): `/metrics` in Prometheus text format,
 * `/proxyMode` (plain text, e.g. `nftables`), a trivial `/healthz` ("ok") and, when given a source,
 * `/rules` (the last applied state: rules-endpoint.ts), on
 * metricsBindAddress (default 127.0.0.1:10249). An empty address disables it.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import type { ProxyMode } from '../config/proxy-config.ts';
import type { Logger } from '../util/log.ts';
import { listen, splitHostPort, type RunningServer } from './http-listen.ts';
import { type RulesSource, serveRules } from './rules-endpoint.ts';

export interface MetricsServerOptions {
  /** `IP:port` / `[IPv6]:port`; empty disables the server. */
  readonly bindAddress: string;
  readonly registry: Registry;
  readonly proxyMode: ProxyMode;
  readonly logger?: Logger;
  /** Serves `/rules` from it; absent: 404. */
  readonly rules?: RulesSource;
}

/** Resolves null when disabled; rejects when the address cannot be bound. */
export async function startMetricsServer(opts: MetricsServerOptions): Promise<RunningServer | null> {
  if (opts.bindAddress === '') return null;
  const at = splitHostPort(opts.bindAddress);
  const server = createServer((req, res) => {
    handle(opts, req, res).catch((err: unknown) => {
      opts.logger?.error({ err }, 'metrics request failed');
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('internal error\n');
    });
  });
  try {
    const running = await listen(server, at, (err) => opts.logger?.error({ err }, 'metrics server error'));
    opts.logger?.info({ address: opts.bindAddress }, 'Starting metrics server');
    return running;
  } catch (err) {
    throw new Error(`failed to start metrics server on ${opts.bindAddress}: ${(err as Error).message}`, { cause: err });
  }
}

async function handle(opts: MetricsServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  switch (path) {
    case '/metrics': {
      const body = await opts.registry.metrics();
      res.writeHead(200, { 'Content-Type': opts.registry.contentType });
      res.end(body);
      return;
    }
    case '/proxyMode':
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
      res.end(opts.proxyMode);
      return;
    case '/healthz':
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
      res.end('ok');
      return;
    case '/rules':
      if (!opts.rules) break;
      serveRules(opts.rules, new URL(req.url ?? '/', 'http://localhost').searchParams, res);
      return;
  }
  res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
  res.end('404 page not found\n');
}
