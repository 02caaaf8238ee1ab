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
import { fragmentContext, type TableContext } from '../render/nftables/layout.ts';
import { renderServicePort, type FragmentContext, type ServicePortFragment } from '../render/nftables/service-port.ts';
import { TableState } from '../render/nftables/table-state.ts';
import { planTransaction } from '../render/nftables/diff.ts';
import type { Fragment } from '../render/nftables/syntax.ts';
import type { NftablesBackend } from '../kernel/nftables-backend.ts';
import { cleanupStaleConntrack, type Run } from '../kernel/conntrack.ts';
import type { Logger } from '../util/log.ts';
import { formatProblem } from '../util/problems.ts';
import { FAMILIES } from '../sync/desired.ts';
import type { ProxyMetrics } from './metrics.ts';
import { ipFamilyLabel } from './metrics.ts';
import type { ProxyHealth } from './proxy-health.ts';
import type { ServiceHealthServer, ServiceRef } from './service-health.ts';
import { appendAll } from '../util/arrays.ts';

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
  /** The table as last committed; undefined: unknown (start, failure), the next sync is full. */
  table?: TableState;
  readonly portsOfService: Map<string, string[]>;
  /** The state of the last successful sync, for conntrack cleanup of deleted Services. */
  state?: NodeState;
  problems: string;
}

export type SyncKind = 'full' | 'partial';

/** Every this many full syncs, one reads every rule back (the others read chains, sets and maps). */
const COMPLETE_READ_EVERY = 10;

export interface SyncResult {
  readonly kind: SyncKind;
  /** Commands committed (0: the kernel already matched). */
  readonly commands: number;
  readonly servicesRendered: number;
}

export class Proxier {
  private readonly o: ProxierOptions;
  private readonly now: () => number;
  private readonly families = new Map<Family, FamilyCache>();
  private pendingServices = new Set<string>();
  private fullPending = true;
  private nextFullAt = 0;
  private fullSyncs = 0;
  /** Trigger times already turned into network-programming observations, per slice. */
  private readonly observedTriggers = new Map<string, number>();

  constructor(options: ProxierOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
    for (const f of FAMILIES) this.families.set(f, { contextKey: '', portsOfService: new Map(), problems: '' });
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
    const contexts = new Map(FAMILIES.map((f) => [f, nodeContext(snapshot, f, this.o.config)]));
    const contextKeys = new Map(FAMILIES.map((f) => [f, JSON.stringify(contexts.get(f))]));
    // A family re-renders everything on a full sync, when its table is unknown (start, failure),
    // or when what every port depends on changed (node IPs, detector, ServiceCIDRs...).
    const rerender = new Map(
      FAMILIES.map((f) => {
        const cache = this.cache(f);
        return [f, full || !cache.table || contextKeys.get(f) !== cache.contextKey];
      }),
    );
    const everything = [...rerender.values()].some(Boolean);
    // Otherwise only the Services that changed are looked up.
    const wanted = (key: string) => everything || changed.has(key);
    const services = new Map(snapshot.services.filter((s) => wanted(serviceKey(s))).map((s) => [serviceKey(s), s]));
    const slices = groupSlices(snapshot.endpointSlices.filter((s) => wanted(`${s.namespace}/${s.serviceName}`)));
    const tables = new Map<Family, TableState>();
    const commands: Fragment[] = [];
    const fullFamilies: Family[] = [];
    let drift = false;
    // Stale conntrack entries exist only for UDP/SCTP frontends: a partial sync that touched none
    // skips the cleanup (two process runs per family).
    let datagramTouched = false;
    const datagram = (p: { ref: { protocol: string } }) => p.ref.protocol !== 'TCP';
    for (const family of FAMILIES) {
      const cache = this.cache(family);
      const context = contexts.get(family) as TableContext;
      const contextKey = contextKeys.get(family) as string;
      let table = cache.table;
      if (rerender.get(family) || !table) {
        // Re-render everything and compare with what the kernel really holds.
        const ctx = fragmentContext(context);
        cache.portsOfService.clear();
        const fragments = [...services.values()].flatMap((service) =>
          this.renderService(cache, service, slices, family, snapshot, ctx),
        );
        const unchanged = table !== undefined && changed.size === 0 && contextKey === cache.contextKey;
        const committed = table?.ruleset();
        table = new TableState(context, fragments);
        const rs = table.ruleset();
        // Reading the rules back costs more than writing them (7 s at 10,000 Services): a periodic
        // check reads chains, sets and maps only, and every rule only now and then.
        const complete = !committed || this.fullSyncs % COMPLETE_READ_EVERY === 0;
        const observed = complete ? await this.o.backend.observe(rs) : await this.o.backend.observeLight(rs, committed);
        const plan = planTransaction(rs, observed);
        if (unchanged && plan.commands.length > 0) {
          drift = true;
          log.warn(
            { family: rs.family, repairing: plan.summary, reason: plan.reason },
            'drift: the kernel did not hold what kproxy last wrote; restoring',
          );
        }
        appendAll(commands, plan.commands);
        fullFamilies.push(family);
      } else {
        // Only the Services that changed: swap their fragments.
        const ctx = fragmentContext(context);
        const removed: string[] = [];
        const added: ServicePortFragment[] = [];
        for (const key of changed) {
          removed.push(...(cache.portsOfService.get(key) ?? []));
          cache.portsOfService.delete(key);
          const service = services.get(key);
          if (service) appendAll(added, this.renderService(cache, service, slices, family, snapshot, ctx));
        }
        const current = table;
        datagramTouched ||=
          removed.some((k) => {
            const f = current.get(k);
            return f !== undefined && datagram(f.sp);
          }) || added.some((f) => datagram(f.sp));
        appendAll(commands, table.update(removed, added));
      }
      cache.contextKey = contextKey;
      cache.table = undefined; // set again once the kernel has taken the transaction
      tables.set(family, table);
      this.reportProblems(cache, table.problems().map(formatProblem));
    }

    try {
      await this.o.backend.apply(commands);
    } catch (err) {
      this.fullPending = true;
      for (const f of FAMILIES) metrics.nftablesSyncFailuresTotal.inc({ ip_family: ipFamilyLabel(f) });
      throw err;
    }
    for (const [family, table] of tables) this.cache(family).table = table;
    if (full) {
      this.nextFullAt = this.now() + this.o.config.syncPeriodMs;
      this.fullSyncs++;
    }
    const kind: SyncKind = fullFamilies.length > 0 ? 'full' : 'partial';
    await this.afterApply(
      kind,
      tables,
      commands.length,
      changed,
      snapshot,
      started,
      drift,
      kind === 'full' || datagramTouched,
    );
    return {
      kind,
      commands: commands.length,
      servicesRendered: kind === 'full' ? snapshot.services.length : changed.size,
    };
  }

  private cache(family: Family): FamilyCache {
    return this.families.get(family) as FamilyCache;
  }

  /** One Service's fragments for a family (none without a ClusterIP of the family). */
  private renderService(
    cache: FamilyCache,
    service: ClusterSnapshot['services'][number],
    slices: ReadonlyMap<string, EndpointSlice[]>,
    family: Family,
    snapshot: ClusterSnapshot,
    ctx: FragmentContext,
  ): ServicePortFragment[] {
    const key = serviceKey(service);
    const ports = servicePortsOf(service, slices.get(key) ?? [], family, this.o.config.nodeName, snapshot.node);
    if (ports.length > 0)
      cache.portsOfService.set(
        key,
        ports.map((p) => p.key),
      );
    return ports.map((sp) => renderServicePort(sp, ctx));
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
    tables: ReadonlyMap<Family, TableState>,
    commands: number,
    changed: ReadonlySet<string>,
    snapshot: ClusterSnapshot,
    started: number,
    drift: boolean,
    cleanConntrack: boolean,
  ): Promise<void> {
    const { log, metrics, health } = this.o;
    for (const [family, table] of tables) {
      const cache = this.cache(family);
      const ports = [...table.ports()];
      if (cleanConntrack) {
        const state: NodeState = { ...table.context, servicePorts: ports };
        try {
          const r = await cleanupStaleConntrack(this.o.run, {
            state,
            ...(cache.state ? { previous: cache.state } : {}),
          });
          if (r.deleted > 0)
            log.debug({ family, deleted: r.deleted, stale: r.stale }, 'stale conntrack entries deleted');
          for (const e of r.errors) log.warn({ family }, `conntrack cleanup: ${e}`);
        } catch (err) {
          log.warn({ family, err: err instanceof Error ? err.message : String(err) }, 'conntrack cleanup failed');
        }
        cache.state = state;
      }
      health.updated(family);
      const labels = { ip_family: ipFamilyLabel(family) };
      const seconds = (performance.now() - started) / 1000;
      metrics.syncProxyRulesDuration.observe(labels, seconds);
      (kind === 'full' ? metrics.syncFullProxyRulesDuration : metrics.syncPartialProxyRulesDuration).observe(
        labels,
        seconds,
      );
      metrics.syncProxyRulesLastTimestamp.setToCurrentTime(labels);
      metrics.noLocalEndpointsTotal.set(
        { ...labels, traffic_policy: 'internal' },
        ports.filter((sp) => sp.internal.kind === 'drop').length,
      );
      metrics.noLocalEndpointsTotal.set(
        { ...labels, traffic_policy: 'external' },
        ports.filter((sp) => sp.external?.kind === 'local' && sp.external.local.length === 0).length,
      );
    }
    this.observeProgrammingLatency(kind === 'full' ? undefined : changed, snapshot);
    await this.syncServiceHealth(tables);
    log.info(
      {
        kind,
        commands,
        servicePorts: [...tables.values()].map((t) => t.size),
        ...(drift ? { drift } : {}),
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
      this.o.metrics.networkProgrammingDuration.observe(
        { ip_family: ipFamilyLabel(family) },
        Math.max(0, (now - t) / 1000),
      );
    }
  }

  /** Health-check NodePorts answer with this node's ready local endpoints (primary family first). */
  private async syncServiceHealth(tables: ReadonlyMap<Family, TableState>): Promise<void> {
    const server = this.o.serviceHealth;
    if (!server) return;
    const ports = new Map<number, ServiceRef>();
    const counts = new Map<string, number>();
    for (const table of tables.values()) {
      for (const sp of table.ports()) {
        if (sp.healthCheckNodePort === undefined) continue;
        const key = `${sp.ref.namespace}/${sp.ref.name}`;
        if (!ports.has(sp.healthCheckNodePort))
          ports.set(sp.healthCheckNodePort, { namespace: sp.ref.namespace, name: sp.ref.name });
        counts.set(key, Math.max(counts.get(key) ?? 0, sp.localEndpointCount));
      }
    }
    await server.syncServices(ports);
    server.syncEndpoints(counts);
  }
}
