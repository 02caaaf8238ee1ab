/**
 * @module daemon/metrics
 * kube-proxy's Prometheus metrics (upstream pkg/proxy/metrics/metrics.go, nftables mode), on a
 * private prom-client Registry (never the global one, so several instances can coexist in tests).
 * Names, label names and buckets follow upstream; label values for `ip_family` are upstream's
 * `IPv4` / `IPv6` (use `ipFamilyLabel`). Callers use the typed fields, never metric names.
 */
import {
  Counter,
  Gauge,
  Histogram,
  Registry,
  collectDefaultMetrics,
  exponentialBuckets,
  linearBuckets,
} from 'prom-client';
import type { Family } from '../model/cluster.ts';

export type IpFamilyLabel = 'IPv4' | 'IPv6';

/** Upstream's v1.IPFamily spelling, used as the `ip_family` label value and in health JSON. */
export function ipFamilyLabel(family: Family): IpFamilyLabel {
  return family === 'ipv4' ? 'IPv4' : 'IPv6';
}

/** `traffic_policy` values of `sync_proxy_rules_no_local_endpoints_total`. */
export type TrafficPolicyLabel = 'internal' | 'external';

export interface ProxyMetrics {
  readonly registry: Registry;
  /** Any sync (full or partial), seconds. */
  readonly syncProxyRulesDuration: Histogram<'ip_family'>;
  readonly syncFullProxyRulesDuration: Histogram<'ip_family'>;
  readonly syncPartialProxyRulesDuration: Histogram<'ip_family'>;
  /** Unix seconds of the last successful sync (`setToCurrentTime`). */
  readonly syncProxyRulesLastTimestamp: Gauge<'ip_family'>;
  /** Unix seconds a sync was last requested. */
  readonly syncProxyRulesLastQueuedTimestamp: Gauge<'ip_family'>;
  readonly endpointChangesPending: Gauge;
  readonly endpointChangesTotal: Counter;
  readonly serviceChangesPending: Gauge;
  readonly serviceChangesTotal: Counter;
  /** From the EndpointSlice `endpoints.kubernetes.io/last-change-trigger-time` to rules applied. */
  readonly networkProgrammingDuration: Histogram<'ip_family'>;
  /** A gauge upstream despite the name: Services with a Local policy and no local endpoints. */
  readonly noLocalEndpointsTotal: Gauge<'ip_family' | 'traffic_policy'>;
  /** Failed syncs, under the mode's upstream name (`…_nftables_sync_failures_total`, `…_iptables_restore_failures_total`). */
  readonly syncFailuresTotal: Counter<'ip_family'>;
  /** Incremented by the healthz server per response, label `code` = "200" | "503". */
  readonly proxyHealthzTotal: Counter<'code'>;
  readonly proxyLivezTotal: Counter<'code'>;
  /** kproxy's own: audit log lines that could not be written (`--audit-log`). */
  readonly auditLogWriteFailuresTotal: Counter;
}

export interface ProxyMetricsOptions {
  /** Also collect prom-client's process_* / nodejs_* metrics into this registry. Default false. */
  readonly defaultMetrics?: boolean;
  /** The mode's failed-sync counter (name without the `kubeproxy_` prefix); default nftables mode's. */
  readonly syncFailuresMetric?: { readonly name: string; readonly help: string };
}

/** exponential(0.001, 2, 15): 1ms .. ~16s, upstream's sync-duration buckets. */
const SYNC_BUCKETS = exponentialBuckets(0.001, 2, 15);

/** Upstream's MergeBuckets(…) for network programming latency; it starts with a 0 bucket. */
const NETWORK_PROGRAMMING_BUCKETS = [
  0,
  ...linearBuckets(0.25, 0.25, 2),
  ...linearBuckets(1, 1, 59),
  ...linearBuckets(60, 5, 12),
  ...linearBuckets(120, 30, 7),
];

export function createProxyMetrics(opts: ProxyMetricsOptions = {}): ProxyMetrics {
  const registry = new Registry();
  const r = [registry];
  const ipFamily = ['ip_family'] as const;
  const failures = opts.syncFailuresMetric ?? {
    name: 'sync_proxy_rules_nftables_sync_failures_total',
    help: 'Cumulative proxy nftables sync failures',
  };
  const m: ProxyMetrics = {
    registry,
    syncProxyRulesDuration: new Histogram({
      name: 'kubeproxy_sync_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds',
      labelNames: ipFamily,
      buckets: SYNC_BUCKETS,
      registers: r,
    }),
    syncFullProxyRulesDuration: new Histogram({
      name: 'kubeproxy_sync_full_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds for full resyncs',
      labelNames: ipFamily,
      buckets: SYNC_BUCKETS,
      registers: r,
    }),
    syncPartialProxyRulesDuration: new Histogram({
      name: 'kubeproxy_sync_partial_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds for partial resyncs',
      labelNames: ipFamily,
      buckets: SYNC_BUCKETS,
      registers: r,
    }),
    syncProxyRulesLastTimestamp: new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
      help: 'The last time proxy rules were successfully synced',
      labelNames: ipFamily,
      registers: r,
    }),
    syncProxyRulesLastQueuedTimestamp: new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
      help: 'The last time a sync of proxy rules was queued',
      labelNames: ipFamily,
      registers: r,
    }),
    endpointChangesPending: new Gauge({
      name: 'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
      help: 'Pending proxy rules Endpoint changes',
      registers: r,
    }),
    endpointChangesTotal: new Counter({
      name: 'kubeproxy_sync_proxy_rules_endpoint_changes_total',
      help: 'Cumulative proxy rules Endpoint changes',
      registers: r,
    }),
    serviceChangesPending: new Gauge({
      name: 'kubeproxy_sync_proxy_rules_service_changes_pending',
      help: 'Pending proxy rules Service changes',
      registers: r,
    }),
    serviceChangesTotal: new Counter({
      name: 'kubeproxy_sync_proxy_rules_service_changes_total',
      help: 'Cumulative proxy rules Service changes',
      registers: r,
    }),
    networkProgrammingDuration: new Histogram({
      name: 'kubeproxy_network_programming_duration_seconds',
      help: 'In Cluster Network Programming Latency in seconds',
      labelNames: ipFamily,
      buckets: NETWORK_PROGRAMMING_BUCKETS,
      registers: r,
    }),
    noLocalEndpointsTotal: new Gauge({
      name: 'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
      help: 'Number of services with a Local traffic policy and no endpoints',
      labelNames: ['ip_family', 'traffic_policy'] as const,
      registers: r,
    }),
    syncFailuresTotal: new Counter({
      name: `kubeproxy_${failures.name}`,
      help: failures.help,
      labelNames: ipFamily,
      registers: r,
    }),
    proxyHealthzTotal: new Counter({
      name: 'kubeproxy_proxy_healthz_total',
      help: 'Cumulative proxy healthz HTTP status',
      labelNames: ['code'] as const,
      registers: r,
    }),
    proxyLivezTotal: new Counter({
      name: 'kubeproxy_proxy_livez_total',
      help: 'Cumulative proxy livez HTTP status',
      labelNames: ['code'] as const,
      registers: r,
    }),
    auditLogWriteFailuresTotal: new Counter({
      name: 'kubeproxy_audit_log_write_failures_total',
      help: 'Audit log lines that could not be written',
      registers: r,
    }),
  };
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry });
  return m;
}
