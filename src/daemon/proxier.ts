/**
 * @module daemon/proxier
 * One sync of the daemon, a straight line: source snapshot → node state → rules → plan → one
 * atomic apply → record. Partial syncs re-render only the Services a change touched and plan
 * against what kproxy last committed; full syncs (at start, after a failure, after this Node
 * changed, every syncPeriod) re-render everything and plan against what the kernel actually
 * holds, which also repairs drift.
 */
import type { ProxyConfig } from '../config/proxy-config.ts';
import type { ClusterSnapshot, EndpointSlice, Family } from '../model/cluster.ts';
import { groupSlices, nodeContext, serviceKey, servicePortsOf } from '../model/build-node-state.ts';
import type { NodeState } from '../model/node-state.ts';
import type { ClusterSource, SourceChange } from '../source/api-source.ts';
import { assembleTable, fragmentContext, type TableContext } from '../render/nftables/layout.ts';
import { renderServicePort, type ServicePortFragment } from '../render/nftables/service-port.ts';
import { observedFromRuleset, type ObservedTable } from '../render/nftables/observed.ts';
import { planTransaction } from '../render/nftables/diff.ts';
import type { Ruleset } from '../render/nftables/ruleset.ts';
import { nftFamily, type NftFamily } from '../render/nftables/syntax.ts';
import type { NftablesBackend, SyncReport } from '../kernel/nftables-backend.ts';
import { cleanupStaleConntrack, type Run } from '../kernel/conntrack.ts';
import type { Logger } from '../util/log.ts';
import { formatProblem } from '../util/problems.ts';
import { FAMILIES } from '../sync/desired.ts';
import type { ProxyMetrics } from './metrics.ts';
import { ipFamilyLabel } from './metrics.ts';
import type { ProxyHealth } from './proxy-health.ts';
import type { ServiceHealthServer, ServiceRef } from './service-health.ts';

export interface ProxierOptions {
  readonly config: ProxyConfig;
  readonly source: ClusterSource;
  readonly backend: NftablesBackend;
  /** Runs conntrack (and anything else the sync needs) in the node's network namespace. */
  readonly run: Run;
  readonly log: Logger;
  readonly metrics: ProxyMetrics;
  readonly health: ProxyHealth;
  readonly serviceHealth?: ServiceHealthServer;
  readonly now?: () => number;
}

/** What kproxy keeps per family between syncs. */
interface FamilyCache {
  contextKey: string;
  context?: TableContext;
  readonly fragments: Map<string, ServicePortFragment>;
  readonly portsOfService: Map<string, string[]>;
  /** What the last successful sync committed; undefined: unknown, read the kernel. */
  applied?: ObservedTable;
  /** The state of the last successful sync, for conntrack cleanup of deleted Services. */
  state?: NodeState;
  problems: string;
}

export type SyncKind = 'full' | 'partial';

export interface SyncResult {
  readonly kind: SyncKind;
  readonly report: SyncReport;
  readonly servicesRendered: number;
}

export class Proxier {
  private readonly o: ProxierOptions;
  private readonly now: () => number;
  private readonly families = new Map<Family, FamilyCache>();
  private pendingServices = new Set<string>();
  private fullPending = true;
  private nextFullAt = 0;
  /** Trigger times already turned into network-programming observations, per slice. */
  private readonly observedTriggers = new Map<string, number>();

  constructor(options: ProxierOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
    for (const f of FAMILIES) this.families.set(f, { contextKey: '', fragments: new Map(), portsOfService: new Map(), problems: '' });
  }

  /** Records a change from the source; the caller asks the runner for a sync. */
  noteChange(change: SourceChange): void {
    for (const s of change.services) this.pendingServices.add(s);
    // Node labels drive topology for every Service: upstream forces a full resync on them.
    if (change.nodeLabelsChanged) this.fullPending = true;
    const { metrics, health } = this.o;
    metrics.serviceChangesPending.set(this.pendingServices.size);
    metrics.serviceChangesTotal.inc(change.services.size);
    for (const f of FAMILIES) {
      health.queuedUpdate(f);
      metrics.syncProxyRulesLastQueuedTimestamp.setToCurrentTime({ ip_family: ipFamilyLabel(f) });
    }
  }

  /** Forces the next sync to be full (e.g. before a consistency check). */
  requestFull(): void {
    this.fullPending = true;
  }

  /**
   * One sync. Returns undefined while the source has not synced: an unsynced (or failed) source
   * is never read as "there are no Services". Throws when the kernel refused the transaction; the
   * previous rules stay and the next sync is full.
   */
  async sync(): Promise<SyncResult | undefined> {
    const { source, log, metrics } = this.o;
    if (!source.isSynced()) {
      log.debug({ caches: source.syncedDetail() }, 'waiting for the caches to sync');
      return undefined;
    }
    const started = performance.now();
    const full = this.fullPending || this.now() >= this.nextFullAt;
    const changed = this.pendingServices;
    this.pendingServices = new Set();
    this.fullPending = false;
    metrics.serviceChangesPending.set(0);

    const snapshot = source.snapshot();
    const rulesets: Ruleset[] = [];
    const states = new Map<Family, NodeState>();
    const known = new Map<NftFamily, ObservedTable>();
    let servicesRendered = 0;
    const services = full ? undefined : new Map(snapshot.services.map((s) => [serviceKey(s), s]));
    const slices = groupSlices(snapshot.endpointSlices);
    for (const family of FAMILIES) {
      const cache = this.cache(family);
      const context = nodeContext(snapshot, family, this.o.config);
      const contextKey = JSON.stringify(context);
      if (full || contextKey !== cache.contextKey) {
        servicesRendered = this.renderAll(cache, snapshot, slices, family, context);
        cache.contextKey = contextKey;
        cache.context = context;
      } else {
        for (const key of changed) {
          this.renderService(cache, key, services?.get(key), slices.get(key) ?? [], family, snapshot, context);
        }
        servicesRendered = changed.size;
        if (cache.applied) known.set(nftFamily(family), cache.applied);
      }
      const fragments = [...cache.fragments.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, f]) => f);
      const rendered = assembleTable(context, fragments);
      this.reportProblems(cache, rendered.problems.map(formatProblem));
      rulesets.push(rendered.ruleset);
      states.set(family, { ...context, servicePorts: fragments.map((f) => f.sp) });
    }

    let report: SyncReport;
    try {
      report = await this.o.backend.sync(rulesets, { known });
    } catch (err) {
      this.fullPending = true;
      for (const f of FAMILIES) {
        this.cache(f).applied = undefined;
        metrics.nftablesSyncFailuresTotal.inc({ ip_family: ipFamilyLabel(f) });
      }
      throw err;
    }
    if (full) this.nextFullAt = this.now() + this.o.config.syncPeriodMs;
    await this.afterApply(full ? 'full' : 'partial', rulesets, states, report, changed, snapshot, started);
    return { kind: full ? 'full' : 'partial', report, servicesRendered };
  }

  private cache(family: Family): FamilyCache {
    return this.families.get(family) as FamilyCache;
  }

  private renderAll(cache: FamilyCache, snapshot: ClusterSnapshot, slices: Map<string, EndpointSlice[]>, family: Family, context: TableContext): number {
    cache.fragments.clear();
    cache.portsOfService.clear();
    for (const service of snapshot.services) {
      const key = serviceKey(service);
      this.renderService(cache, key, service, slices.get(key) ?? [], family, snapshot, context);
    }
    return snapshot.services.length;
  }

  /** Replaces one Service's fragments (none when it is gone or has no ClusterIP of the family). */
  private renderService(
    cache: FamilyCache,
    key: string,
    service: ClusterSnapshot['services'][number] | undefined,
    slices: readonly EndpointSlice[],
    family: Family,
    snapshot: ClusterSnapshot,
    context: TableContext,
  ): void {
    for (const spKey of cache.portsOfService.get(key) ?? []) cache.fragments.delete(spKey);
    cache.portsOfService.delete(key);
    if (!service) return;
    const ports = servicePortsOf(service, slices, family, this.o.config.nodeName, snapshot.node);
    const ctx = fragmentContext(context);
    for (const sp of ports) cache.fragments.set(sp.key, renderServicePort(sp, ctx));
    if (ports.length > 0) cache.portsOfService.set(key, ports.map((p) => p.key));
  }

  /** Conflicts are logged when they change, not on every sync. */
  private reportProblems(cache: FamilyCache, problems: string[]): void {
    const text = problems.join('\n');
    if (text === cache.problems) return;
    cache.problems = text;
    for (const p of problems) this.o.log.warn(`skipped: ${p}`);
  }

  private async afterApply(
    kind: SyncKind,
    rulesets: readonly Ruleset[],
    states: ReadonlyMap<Family, NodeState>,
    report: SyncReport,
    changed: ReadonlySet<string>,
    snapshot: ClusterSnapshot,
    started: number,
  ): Promise<void> {
    const { log, metrics, health } = this.o;
    for (const [i, family] of FAMILIES.entries()) {
      const cache = this.cache(family);
      const rs = rulesets[i] as Ruleset;
      const familyReport = report.families[i];
      if (kind === 'full' && cache.applied && familyReport && familyReport.commands > 0 && planTransaction(rs, cache.applied).commands.length === 0) {
        // Nothing changed in what kproxy wanted, yet the kernel differed: someone edited it.
        log.warn({ family: rs.family, repaired: familyReport.summary }, 'drift: the kernel did not hold what kproxy last wrote; restored');
      }
      cache.applied = observedFromRuleset(rs);
      const state = states.get(family) as NodeState;
      try {
        const r = await cleanupStaleConntrack(this.o.run, { state, ...(cache.state ? { previous: cache.state } : {}) });
        if (r.deleted > 0) log.debug({ family, deleted: r.deleted, stale: r.stale }, 'stale conntrack entries deleted');
        for (const e of r.errors) log.warn({ family }, `conntrack cleanup: ${e}`);
      } catch (err) {
        log.warn({ family, err: err instanceof Error ? err.message : String(err) }, 'conntrack cleanup failed');
      }
      cache.state = state;
      health.updated(family);
      const labels = { ip_family: ipFamilyLabel(family) };
      const seconds = (performance.now() - started) / 1000;
      metrics.syncProxyRulesDuration.observe(labels, seconds);
      (kind === 'full' ? metrics.syncFullProxyRulesDuration : metrics.syncPartialProxyRulesDuration).observe(labels, seconds);
      metrics.syncProxyRulesLastTimestamp.setToCurrentTime(labels);
      metrics.noLocalEndpointsTotal.set({ ...labels, traffic_policy: 'internal' }, state.servicePorts.filter((sp) => sp.internal.kind === 'drop').length);
      metrics.noLocalEndpointsTotal.set(
        { ...labels, traffic_policy: 'external' },
        state.servicePorts.filter((sp) => sp.external?.kind === 'local' && sp.external.local.length === 0).length,
      );
    }
    this.observeProgrammingLatency(kind === 'full' ? undefined : changed, snapshot);
    await this.syncServiceHealth(states);
    log.info(
      {
        kind,
        commands: report.commands,
        families: report.families.map((f) => ({ family: f.family, ...f.summary })),
        servicePorts: [...states.values()].map((s) => s.servicePorts.length),
        ms: Math.round(performance.now() - started),
      },
      'sync',
    );
  }

  /** From each EndpointSlice's last-change-trigger-time to now, once per trigger time. */
  private observeProgrammingLatency(changed: ReadonlySet<string> | undefined, snapshot: ClusterSnapshot): void {
    const now = this.now();
    for (const slice of snapshot.endpointSlices) {
      if (!slice.triggerTime) continue;
      if (changed && !changed.has(`${slice.namespace}/${slice.serviceName}`)) continue;
      const key = `${slice.namespace}/${slice.name}`;
      const t = slice.triggerTime.getTime();
      if (this.observedTriggers.get(key) === t) continue;
      this.observedTriggers.set(key, t);
      const family = slice.addressType === 'IPv4' ? 'ipv4' : 'ipv6';
      this.o.metrics.networkProgrammingDuration.observe({ ip_family: ipFamilyLabel(family) }, Math.max(0, (now - t) / 1000));
    }
  }

  /** Health-check NodePorts answer with this node's ready local endpoints (primary family first). */
  private async syncServiceHealth(states: ReadonlyMap<Family, NodeState>): Promise<void> {
    const server = this.o.serviceHealth;
    if (!server) return;
    const ports = new Map<number, ServiceRef>();
    const counts = new Map<string, number>();
    for (const state of states.values()) {
      for (const sp of state.servicePorts) {
        if (sp.healthCheckNodePort === undefined) continue;
        const key = `${sp.ref.namespace}/${sp.ref.name}`;
        if (!ports.has(sp.healthCheckNodePort)) ports.set(sp.healthCheckNodePort, { namespace: sp.ref.namespace, name: sp.ref.name });
        counts.set(key, Math.max(counts.get(key) ?? 0, sp.localEndpointCount));
      }
    }
    await server.syncServices(ports);
    server.syncEndpoints(counts);
  }
}
