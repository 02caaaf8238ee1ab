/**
 * @module daemon/healthz-server
 * The healthz HTTP server (upstream ProxyHealthServer.Run): `/healthz` (proxy health AND node
 * eligibility) and `/livez` (proxy health only), 200 or 503 with upstream's JSON body, counting
 * responses in `kubeproxy_proxy_healthz_total{code}` / `kubeproxy_proxy_livez_total{code}`.
 */
import { createServer } from 'node:http';
import type { Logger } from '../util/log.ts';
import { listen, splitHostPort, type RunningServer } from './http-listen.ts';
import type { ProxyMetrics } from './metrics.ts';
import type { ProxyHealth } from './proxy-health.ts';

export interface HealthResponse {
  readonly statusCode: 200 | 503;
  /** Compact JSON, fields in upstream's order. */
  readonly body: string;
}

/** Go's zero time.Time, which upstream prints as lastUpdated before any update. */
const GO_ZERO_TIME = '0001-01-01T00:00:00Z';

const iso = (ms: number | undefined): string => (ms === undefined ? GO_ZERO_TIME : new Date(ms).toISOString());

function render(health: ProxyHealth, forHealthz: boolean): HealthResponse {
  const h = health.health();
  const nodeEligible = health.nodeEligible;
  const ok = h.healthy && (!forHealthz || nodeEligible);
  // Upstream reports lastUpdated = now when answering 200 (compatibility with old releases).
  const body: Record<string, unknown> = {
    lastUpdated: iso(ok ? h.currentTime : h.lastUpdated),
    currentTime: iso(h.currentTime),
  };
  if (forHealthz) body['nodeEligible'] = nodeEligible;
  // As upstream, `healthy` is the proxy's own health: a 503 for an ineligible Node still says true.
  body['healthy'] = h.healthy;
  const status = Object.entries(h.status).sort(([a], [b]) => (a < b ? -1 : 1));
  if (status.length > 0) {
    body['status'] = Object.fromEntries(
      status.map(([fam, s]) => [fam, { lastUpdated: iso(s.lastUpdated), healthy: s.healthy }]),
    );
  }
  return { statusCode: ok ? 200 : 503, body: JSON.stringify(body) };
}

/** What `/healthz` answers now. */
export function healthzResponse(health: ProxyHealth): HealthResponse {
  return render(health, true);
}

/** What `/livez` answers now (node eligibility ignored and not reported). */
export function livezResponse(health: ProxyHealth): HealthResponse {
  return render(health, false);
}

export interface HealthzServerOptions {
  /** `IP:port` / `[IPv6]:port` (default upstream 0.0.0.0:10256); empty disables the server. */
  readonly bindAddress: string;
  readonly health: ProxyHealth;
  readonly metrics?: Pick<ProxyMetrics, 'proxyHealthzTotal' | 'proxyLivezTotal'>;
  readonly logger?: Logger;
}

/** Resolves null when disabled; rejects (never throws asynchronously) when it cannot bind. */
export async function startHealthzServer(opts: HealthzServerOptions): Promise<RunningServer | null> {
  if (opts.bindAddress === '') return null;
  const at = splitHostPort(opts.bindAddress);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    let r: HealthResponse;
    if (path === '/healthz') {
      r = healthzResponse(opts.health);
      opts.metrics?.proxyHealthzTotal.inc({ code: String(r.statusCode) });
    } else if (path === '/livez') {
      r = livezResponse(opts.health);
      opts.metrics?.proxyLivezTotal.inc({ code: String(r.statusCode) });
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
      res.end('404 page not found\n');
      return;
    }
    res.writeHead(r.statusCode, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' });
    res.end(r.body);
  });
  try {
    const running = await listen(server, at, (err) => opts.logger?.error({ err }, 'healthz server error'));
    opts.logger?.debug({ address: opts.bindAddress }, 'Starting healthz HTTP server');
    return running;
  } catch (err) {
    throw new Error(`failed to start proxy healthz on ${opts.bindAddress}: ${(err as Error).message}`, { cause: err });
  }
}
