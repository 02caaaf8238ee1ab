import { afterEach, describe, expect, it } from 'vitest';
import { createServer } from 'node:net';
import { startHealthzServer } from '../../src/daemon/healthz-server.ts';
import type { RunningServer } from '../../src/daemon/http-listen.ts';
import { createProxyMetrics } from '../../src/daemon/metrics.ts';
import { ProxyHealth, healthTimeoutForSyncPeriod } from '../../src/daemon/proxy-health.ts';

const SYNC_PERIOD_MS = 30_000;
const T0 = Date.UTC(2025, 0, 1, 12, 0, 0);

let servers: RunningServer[] = [];
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
});

async function setup() {
  let now = T0;
  const health = new ProxyHealth({ healthTimeoutMs: healthTimeoutForSyncPeriod(SYNC_PERIOD_MS), now: () => now });
  const metrics = createProxyMetrics();
  const server = await startHealthzServer({ bindAddress: '127.0.0.1:0', health, metrics });
  if (!server) throw new Error('disabled');
  servers.push(server);
  const get = async (path: string) => {
    const res = await fetch(`${server.url}${path}`);
    return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, unknown> };
  };
  const counter = async (name: string, code: string) => {
    const m = (await metrics.registry.getSingleMetric(name)?.get())?.values.find((v) => v.labels['code'] === code);
    return m?.value ?? 0;
  };
  return { url: server.url, health, metrics, get, counter, advance: (ms: number) => (now += ms), now: () => now };
}

describe('healthz server', () => {
  it('goes 503 when a queued update waits 2 × syncPeriod, and back to 200 once updated', async () => {
    const { health, get, advance, now } = await setup();

    // Starting up: nothing updated yet, healthy.
    let r = await get('/healthz');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('application/json');
    expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    expect(r.json).toEqual({
      lastUpdated: new Date(T0).toISOString(),
      currentTime: new Date(T0).toISOString(),
      nodeEligible: true,
      healthy: true,
    });

    health.updated('ipv4');
    health.updated('ipv6');
    advance(1000);
    health.queuedUpdate('ipv4');
    advance(2 * SYNC_PERIOD_MS - 1);
    r = await get('/healthz');
    expect(r.status).toBe(200);

    advance(1);
    const updatedAt = new Date(T0).toISOString();
    r = await get('/healthz');
    expect(r.status).toBe(503);
    expect(r.json).toEqual({
      lastUpdated: updatedAt,
      currentTime: new Date(now()).toISOString(),
      nodeEligible: true,
      healthy: false,
      status: { IPv4: { lastUpdated: updatedAt, healthy: false }, IPv6: { lastUpdated: updatedAt, healthy: true } },
    });
    expect((await get('/livez')).status).toBe(503);

    // Another queued change does not reset the clock; an update does.
    health.queuedUpdate('ipv4');
    expect((await get('/healthz')).status).toBe(503);
    health.updated('ipv4');
    r = await get('/healthz');
    expect(r.status).toBe(200);
    expect(r.json['healthy']).toBe(true);
    expect(r.json['lastUpdated']).toBe(new Date(now()).toISOString());
    expect((await get('/livez')).status).toBe(200);
  });

  it('node ineligible: /healthz 503, /livez 200 without nodeEligible', async () => {
    const { health, get } = await setup();
    health.updated('ipv4');
    health.setNodeEligible(false);
    const hz = await get('/healthz');
    expect(hz.status).toBe(503);
    expect(hz.json['nodeEligible']).toBe(false);
    expect(hz.json['healthy']).toBe(true); // upstream: the proxy itself is healthy
    const lz = await get('/livez');
    expect(lz.status).toBe(200);
    expect(lz.json).not.toHaveProperty('nodeEligible');
    expect(lz.json['healthy']).toBe(true);
    health.setNodeEligible(true);
    expect((await get('/healthz')).status).toBe(200);
  });

  it('counts responses by code', async () => {
    const { health, get, counter, advance } = await setup();
    await get('/healthz');
    await get('/healthz');
    await get('/livez');
    health.updated('ipv4');
    health.queuedUpdate('ipv4');
    advance(2 * SYNC_PERIOD_MS);
    await get('/healthz');
    await get('/livez');
    expect(await counter('kubeproxy_proxy_healthz_total', '200')).toBe(2);
    expect(await counter('kubeproxy_proxy_healthz_total', '503')).toBe(1);
    expect(await counter('kubeproxy_proxy_livez_total', '200')).toBe(1);
    expect(await counter('kubeproxy_proxy_livez_total', '503')).toBe(1);
  });

  it('answers 404 elsewhere', async () => {
    const { url } = await setup();
    const res = await fetch(`${url}/healthz/extra`);
    expect(res.status).toBe(404);
    await res.text();
  });

  it('empty address disables; a bound port rejects instead of crashing', async () => {
    const health = new ProxyHealth({ healthTimeoutMs: 1000 });
    expect(await startHealthzServer({ bindAddress: '', health })).toBeNull();
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      await expect(startHealthzServer({ bindAddress: `127.0.0.1:${port}`, health })).rejects.toThrow(
        /failed to start proxy healthz.*EADDRINUSE/,
      );
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });
});
