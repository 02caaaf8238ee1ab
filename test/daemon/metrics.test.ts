import { afterEach, describe, expect, it } from 'vitest';
import { register as globalRegistry } from 'prom-client';
import type { RunningServer } from '../../src/daemon/http-listen.ts';
import { createProxyMetrics, ipFamilyLabel } from '../../src/daemon/metrics.ts';
import { startMetricsServer } from '../../src/daemon/metrics-server.ts';

let servers: RunningServer[] = [];
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
});

const UPSTREAM_NAMES = [
  'kubeproxy_sync_proxy_rules_duration_seconds',
  'kubeproxy_sync_full_proxy_rules_duration_seconds',
  'kubeproxy_sync_partial_proxy_rules_duration_seconds',
  'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
  'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
  'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
  'kubeproxy_sync_proxy_rules_endpoint_changes_total',
  'kubeproxy_sync_proxy_rules_service_changes_pending',
  'kubeproxy_sync_proxy_rules_service_changes_total',
  'kubeproxy_network_programming_duration_seconds',
  'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
  'kubeproxy_sync_proxy_rules_nftables_sync_failures_total',
  'kubeproxy_proxy_healthz_total',
  'kubeproxy_proxy_livez_total',
];

describe('metrics', () => {
  it('serves upstream names on /metrics and the mode on /proxyMode', async () => {
    const m = createProxyMetrics({ defaultMetrics: true });
    const v4 = { ip_family: ipFamilyLabel('ipv4') };
    m.syncProxyRulesDuration.observe(v4, 0.012);
    m.syncFullProxyRulesDuration.observe(v4, 0.012);
    m.syncProxyRulesLastTimestamp.setToCurrentTime(v4);
    m.syncProxyRulesLastQueuedTimestamp.setToCurrentTime(v4);
    m.endpointChangesPending.set(3);
    m.endpointChangesTotal.inc(3);
    m.serviceChangesTotal.inc();
    m.networkProgrammingDuration.observe(v4, 1.5);
    m.noLocalEndpointsTotal.set({ ip_family: 'IPv4', traffic_policy: 'internal' }, 2);
    m.syncFailuresTotal.inc(v4);
    m.proxyHealthzTotal.inc({ code: '200' });

    const server = await startMetricsServer({
      bindAddress: '127.0.0.1:0',
      registry: m.registry,
      proxyMode: 'nftables',
    });
    if (!server) throw new Error('disabled');
    servers.push(server);

    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (const name of UPSTREAM_NAMES) expect(text).toContain(`# TYPE ${name} `);
    expect(text).toContain('# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram');
    expect(text).toContain('# TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total gauge');
    expect(text).toContain('# TYPE kubeproxy_proxy_healthz_total counter');
    expect(text).toContain('kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.016",ip_family="IPv4"} 1');
    expect(text).toContain(
      'kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="internal"} 2',
    );
    expect(text).toContain('kubeproxy_sync_proxy_rules_endpoint_changes_pending 3');
    expect(text).toContain('kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv4"} 1');
    expect(text).toContain('kubeproxy_proxy_healthz_total{code="200"} 1');
    expect(text).toContain('kubeproxy_network_programming_duration_seconds_bucket{le="2",ip_family="IPv4"} 1');
    expect(text).toContain('process_cpu_seconds_total');

    const mode = await fetch(`${server.url}/proxyMode`);
    expect(mode.status).toBe(200);
    expect(mode.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(await mode.text()).toBe('nftables');

    const nf = await fetch(`${server.url}/nope`);
    expect(nf.status).toBe(404);
    await nf.text();
  });

  it('uses a private registry: instances do not collide and the global one stays empty', async () => {
    const a = createProxyMetrics();
    const b = createProxyMetrics();
    a.serviceChangesTotal.inc(5);
    expect((await b.serviceChangesTotal.get()).values[0]?.value).toBe(0);
    expect(await globalRegistry.getMetricsAsJSON()).toEqual([]);
  });

  it('empty bind address disables the server', async () => {
    const m = createProxyMetrics();
    expect(await startMetricsServer({ bindAddress: '', registry: m.registry, proxyMode: 'nftables' })).toBeNull();
  });
});
