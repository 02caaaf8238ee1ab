/**
 * @module proxy/proxier
 * The one reconciler, whatever the mode: source snapshot → node state (the model's per-port
 * decisions) → the backend (render, diff, one atomic apply) → conntrack, health, metrics. It keeps
 * each family's desired state between syncs, so a partial sync re-derives only the Services a
 * change touched; full syncs (at start, after a failure, after this Node's labels changed, after
 * the backend's light check saw drift or a flush, and every `fullSyncPeriodMs`, upstream's
 * FullSyncPeriod of one hour) re-derive everything and let the backend compare with what the
 * kernel actually holds, which also repairs drift. A run with nothing to do (the periodic tick of
 * a quiet cluster) touches neither the model nor the backend. A timed full sync waits while
 * changes are pending: it never delays a partial sync (docs/adr/0007).
 *
 * Stale UDP conntrack entries: the listing and the plan run while the commit runs, and the
 * deletions go out the moment the commit returns, then a second pass catches flows created between
 * the listing and the commit. With a conntrack table (the daemon's ctnetlink channel) the stale
 * entries listed are deleted by exact tuple and kernel id, one hash lookup each, and the second
 * pass starts at once; without one, the deletions are `conntrack -D` filters (predicted ones first,
 * without waiting for the listing), each walking the whole conntrack table.
 */
import type { ProxyConfig } from '../config/proxy-config.ts';
import type { ClusterSnapshot, EndpointSlice, Family, Service } from '../model/cluster.ts';
import { groupSlices, nodeContext, serviceKey, servicePortsOf } from '../model/build-node-state.ts';
import type { NodeState, ServicePortState } from '../model/node-state.ts';
import { deletionKey, predictStaleDeletions, type ConntrackDeletion } from '../model/conntrack-plan.ts';
import type { ClusterSource, SourceChange } from '../source/api-source.ts';
import {
  deleteConntrackEntries,
  planStaleConntrack,
  runConntrackDeletions,
  type ConntrackCleanupPlanned,
  type ConntrackCleanupResult,
  type ConntrackTable,
} from '../kernel/conntrack.ts';
import type { Exec } from '../kernel/exec.ts';
import type { Logger } from '../util/log.ts';
import { formatProblem } from '../util/problems.ts';
import type { ProxyMetrics } from '../daemon/metrics.ts';
import { ipFamilyLabel } from '../daemon/metrics.ts';
import type { ProxyHealth } from '../daemon/proxy-health.ts';
import type { ServiceHealthServer, ServiceRef } from '../daemon/service-health.ts';
import { nodeStateOf, type FamilyState, type NodeContext, type ProxyBackend } from './backend.ts';
import { FAMILIES } from './desired.ts';
import type { AuditLog } from './audit.ts';
import { ServicePortsMap } from './service-ports-map.ts';

export interface ProxierOptions {
  readonly config: ProxyConfig;
  readonly source: ClusterSource;
  readonly backend: ProxyBackend;
  /** Runs conntrack in the node's network namespace. */
  readonly run: Exec;
  /** Runs `conntrack -D` (a persistent channel, `kernel/conntrack-channel.ts`); default: `run`. */
  readonly conntrackDelete?: Exec;
  /**
   * Lists and deletes by exact tuple (the ctnetlink channel, `kernel/ctnetlink-client.ts`); while it
   * is available it replaces `conntrack -L` and the `-D` filters (which remain its fallback).
   */
  readonly conntrackTable?: ConntrackTable;
  /** Full re-render at least this often while nothing else asks for one. Default 1 h (upstream's FullSyncPeriod). */
  readonly fullSyncPeriodMs?: number;
  readonly log: Logger;
  readonly metrics: ProxyMetrics;
  readonly health: ProxyHealth;
  readonly serviceHealth?: ServiceHealthServer;
  readonly now?: () => number;
  /** Told of every transaction applied or refused (`kproxy run --audit-log`). */
  readonly audit?: AuditLog;
}

/** The last applied sync of a family, beside the cache (`Proxier.applied`). */
interface AppliedFamily {
  readonly context: NodeContext;
  readonly before: Map<string, readonly ServicePortState[] | undefined>;
}

/** What the reconciler keeps per family between syncs. */
interface FamilyCache {
  context?: NodeContext;
  readonly services: ServicePortsMap;
  /** The state of the last successful sync, for conntrack cleanup of deleted Services. */
  state?: NodeState;
}

export type SyncKind = 'full' | 'partial';

/** Upstream's `proxyutil.FullSyncPeriod`. */
export const DEFAULT_FULL_SYNC_PERIOD_MS = 3_600_000;

export interface SyncResult {
  /** `none`: nothing was pending and no full sync was due; the backend was not called. */
  readonly kind: SyncKind | 'none';
  /** Changes written to the kernel (0: it already matched). */
  readonly commands: number;
  readonly servicesRendered: number;
}

export class Proxier {
  private readonly o: ProxierOptions;
  private readonly now: () => number;
  private readonly families = new Map<Family, FamilyCache>();
  private pendingServices = new Set<string>();
  /** This Node or the ServiceCIDRs changed: every family's context must be recomputed. */
  private contextPending = false;
  private fullPending = true;
  /** The first full sync of this process has listed conntrack before its commit. */
  private listedAtStart = false;
  private nextFullAt = 0;
  private readonly fullSyncPeriodMs: number;
  private problems = '';
  /** Trigger times already turned into network-programming observations, per slice. */
  private readonly observedTriggers = new Map<string, number>();
  /**
   * What the kernel took at the last successful sync, per family: its context, and the ports of
   * every Service a later sync has touched since, as they were then (undefined: absent); the rest
   * is the cache. So a partial sync does not copy the map of every Service (at 50k Services ~2.5 MiB
   * of garbage per change); `lastApplied()` builds the copy when asked.
   */
  private readonly applied = new Map<Family, AppliedFamily>();

  constructor(options: ProxierOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
    this.fullSyncPeriodMs = options.fullSyncPeriodMs ?? DEFAULT_FULL_SYNC_PERIOD_MS;
    for (const f of FAMILIES) this.families.set(f, { services: new ServicePortsMap() });
  }

  /** Records a change from the source; the caller asks the runner for a sync. */
  noteChange(change: SourceChange): void {
    for (const s of change.services) this.pendingServices.add(s);
    if (change.nodeChanged || change.serviceCIDRsChanged) this.contextPending = true;
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

  /** Forces the next sync to be full (a consistency check, or the backend saw its rules flushed). */
  requestFull(): void {
    this.fullPending = true;
  }

  /**
   * The desired state of the last sync the kernel took, per family (IPv4 first); empty before the
   * first one. A copy the following syncs leave alone (`/rules` reads it).
   */
  lastApplied(): readonly FamilyState[] {
    const out: FamilyState[] = [];
    for (const family of FAMILIES) {
      const applied = this.applied.get(family);
      if (!applied) continue;
      const services = new Map(this.cache(family).services);
      for (const [key, ports] of applied.before) {
        if (ports === undefined) services.delete(key);
        else services.set(key, ports);
      }
      out.push({ context: applied.context, services });
    }
    return out;
  }

  /**
   * One sync. Returns undefined while the source has not synced: an unsynced (or failed) source
   * is never read as "there are no Services". Throws when the kernel refused; the previous rules
   * stay and the next sync is full.
   */
  async sync(): Promise<SyncResult | undefined> {
    const { source, log, metrics } = this.o;
    if (!source.isSynced()) {
      log.debug({ caches: source.syncedDetail() }, 'waiting for the caches to sync');
      return undefined;
    }
    const pendingChanges = this.pendingServices.size > 0 || this.contextPending;
    // A timed full sync waits for a quiet moment: a partial sync for pending changes goes first.
    const full = this.fullPending || (this.now() >= this.nextFullAt && !pendingChanges);
    if (!full && !pendingChanges) {
      // Nothing changed and no full sync is due: the kernel already holds everything queued so far.
      for (const f of FAMILIES) if (this.cache(f).context) this.o.health.updated(f);
      // One line per periodic tick, as for every sync (the backend's light check runs on its own timer).
      log.info({ kind: 'none', commands: 0, ms: 0 }, 'sync');
      return { kind: 'none', commands: 0, servicesRendered: 0 };
    }
    const started = performance.now();
    const changed = this.pendingServices;
    this.pendingServices = new Set();
    this.fullPending = false;
    this.contextPending = false;
    metrics.serviceChangesPending.set(0);

    // A full sync re-derives every Service; a partial one only those that changed.
    const wanted = (key: string) => full || changed.has(key);
    const selected = full ? undefined : source.select?.(changed);
    // The audit log compares point-in-time views of the whole cluster; without it a partial sync
    // reads only its own Services.
    const snapshot = selected && !this.o.audit ? selected : source.snapshot();
    const services =
      selected?.services ?? (full ? snapshot.services : snapshot.services.filter((s) => changed.has(serviceKey(s))));
    const sliceList =
      selected?.endpointSlices ??
      (full
        ? snapshot.endpointSlices
        : snapshot.endpointSlices.filter((s) => wanted(`${s.namespace}/${s.serviceName}`)));
    const slices = groupSlices(sliceList);
    // Stale conntrack entries exist only for UDP/SCTP frontends: a partial sync that touched none
    // skips the cleanup (process runs per family).
    let datagramTouched = false;
    /** The families in which a touched Service has (or had) a datagram port: only there can this change make flows stale. */
    const datagramFamilies = new Set<Family>();
    const datagram = (ports: readonly ServicePortState[] | undefined) => ports?.some((p) => p.ref.protocol !== 'TCP');
    const requests: FamilyState[] = [];
    for (const family of FAMILIES) {
      const cache = this.cache(family);
      cache.context = nodeContext(snapshot, family, this.o.config);
      // Until this sync is applied, what the last applied one had for each key it touches.
      const before = this.applied.get(family)?.before;
      const keep = (key: string) => {
        if (before && !before.has(key)) before.set(key, cache.services.get(key));
      };
      if (full) {
        for (const key of cache.services.keys()) keep(key);
        cache.services.clear();
      } else for (const key of changed) if (datagram(cache.services.get(key))) datagramFamilies.add(family);
      if (!full)
        for (const key of changed) {
          keep(key);
          cache.services.delete(key);
        }
      for (const service of services) {
        const ports = this.portsOf(service, slices, family, snapshot);
        keep(serviceKey(service));
        if (ports.length > 0) cache.services.set(serviceKey(service), ports);
        if (!full && datagram(ports)) datagramFamilies.add(family);
      }
      requests.push({ context: cache.context, services: cache.services });
    }
    datagramTouched = datagramFamilies.size > 0;

    // The conntrack listing and plan run while the backend renders and commits, so the deletions
    // can go out the moment the commit returns.
    const listedAt = performance.now();
    const states = requests.map((fs) => lazy(() => nodeStateOf(fs)));
    // Only for a partial sync: full ones (failure, drift) list after the commit, as a retry loop of
    // failing syncs must not pile listings up. Except a new process's first full sync (once): after
    // a restart the kernel may hold UDP flows to endpoints that went away while no kproxy ran, and
    // listing after the commit leaves them black-holed for the listing's time (issue 10, item 6).
    const restart = full && !this.listedAtStart;
    if (restart) this.listedAtStart = true;
    // Deletion by exact tuple needs the listing; without the table, predicted filters need none.
    const exact = this.table() !== undefined;
    // A partial sync lists only the families it can have made flows stale in (each listing is a walk
    // of the kernel's whole table, and the deletions wait for it); the second pass lists them all.
    const planned =
      (!full && datagramTouched) || restart
        ? this.planConntrack(requests, states, restart ? undefined : datagramFamilies)
        : undefined;
    // When the listing was in hand (logged relative to the commit: negative, before it returned).
    let plannedAt: number | undefined;
    void planned?.then(() => {
      plannedAt = performance.now();
    });
    // What an endpoint swap makes stale is known before the commit: those filters run the moment it returns.
    const predicted = !full && datagramTouched ? this.predictConntrack(requests, states, changed) : [];
    let report: Awaited<ReturnType<ProxyBackend['sync']>>;
    try {
      report = await this.o.backend.sync({ families: requests, full, changed });
    } catch (err) {
      this.fullPending = true;
      for (const f of FAMILIES) metrics.syncFailuresTotal.inc({ ip_family: ipFamilyLabel(f) });
      this.audit(full ? 'full' : 'partial', full, changed, requests, snapshot, 0, started, err);
      // The plan's listing is not needed any more; its failure (if any) must not go unhandled.
      void planned?.catch(() => undefined);
      throw err;
    }
    const committedAt = performance.now();
    if (report.kind === 'full') this.nextFullAt = this.now() + this.fullSyncPeriodMs;
    for (const fs of requests) this.applied.set(fs.context.family, { context: fs.context, before: new Map() });
    this.audit(report.kind, full, changed, requests, snapshot, report.changes, started);
    if (report.drift)
      log.warn({ detail: report.detail }, 'drift: the kernel did not hold what kproxy last wrote; restored');
    this.reportProblems(report.problems.map(formatProblem));
    // A full sync (or a partial request the backend turned into one) plans after the commit.
    const cleanup =
      planned ??
      (report.kind === 'full' ? this.planConntrack(requests, states) : undefined) ??
      Promise.resolve(undefined);
    const conntrack = await this.cleanConntrack(cleanup, {
      exact,
      predicted: report.kind === 'partial' ? predicted : [],
      secondPass: planned !== undefined && listedAt < committedAt,
      committedAt,
      requests,
      states,
    });
    await this.afterApply(
      report.kind,
      requests,
      report.changes,
      sliceList,
      started,
      report.drift,
      report.detail,
      conntrack && {
        ...conntrack,
        ...(plannedAt !== undefined ? { listedMs: Math.round((plannedAt - committedAt) * 10) / 10 } : {}),
      },
    );
    // Flows the old rules created between the listing and the commit (through the table: already
    // under way; through the tool: after the sync's log line).
    await conntrack?.secondPass?.();
    return { kind: report.kind, commands: report.changes, servicesRendered: services.length };
  }

  /** Deletion filters an endpoint change calls for, from the previous and the new state (no I/O). */
  private predictConntrack(
    requests: readonly FamilyState[],
    states: readonly (() => NodeState)[],
    services: ReadonlySet<string>,
  ): ConntrackDeletion[] {
    const out: ConntrackDeletion[] = [];
    requests.forEach((fs, i) => {
      const previous = this.cache(fs.context.family).state;
      if (previous) out.push(...predictStaleDeletions({ previous, state: (states[i] as () => NodeState)(), services }));
    });
    // Each filter makes conntrack walk the whole table: past a few, the listing-based plan does better.
    return out.length <= 16 ? out : [];
  }

  /** The conntrack table, when one is given and available now. */
  private table(): ConntrackTable | undefined {
    const t = this.o.conntrackTable;
    return t && (t.available?.() ?? true) ? t : undefined;
  }

  /** Lists and plans each family's stale conntrack entries against the states being committed. */
  private planConntrack(
    requests: readonly FamilyState[],
    states: readonly (() => NodeState)[],
    families?: ReadonlySet<Family>,
  ): Promise<(ConntrackCleanupPlanned | Error | undefined)[]> {
    return Promise.all(
      requests.map(async (fs, i) => {
        if (families && !families.has(fs.context.family)) return undefined;
        const previous = this.cache(fs.context.family).state;
        try {
          return await planStaleConntrack(
            this.o.run,
            { state: (states[i] as () => NodeState)(), ...(previous ? { previous } : {}) },
            this.table(),
          );
        } catch (err) {
          return err instanceof Error ? err : new Error(String(err));
        }
      }),
    );
  }

  /**
   * Runs the planned deletions at once; when the listing may predate the commit, also returns a
   * second pass for flows the old rules created between the listing and the commit. Never throws.
   */
  private async cleanConntrack(
    planned: Promise<(ConntrackCleanupPlanned | Error | undefined)[] | undefined>,
    o: {
      /** The plan lists through the conntrack table: its stale entries go by exact tuple; predicted filters only if it failed. */
      readonly exact: boolean;
      readonly predicted: readonly ConntrackDeletion[];
      readonly secondPass: boolean;
      readonly committedAt: number;
      readonly requests: readonly FamilyState[];
      readonly states: readonly (() => NodeState)[];
    },
  ): Promise<{ deleted: number; ms: number; secondPass?: () => Promise<void> } | undefined> {
    const { requests, states } = o;
    const { log } = this.o;
    const del = this.o.conntrackDelete ?? this.o.run;
    const filters = (ds: readonly ConntrackDeletion[]): Promise<number> =>
      Promise.all(
        ds.map((d) =>
          deleteConntrackEntries(del, d).catch((err: unknown) => {
            log.warn({ family: d.family }, `conntrack cleanup: ${err instanceof Error ? err.message : String(err)}`);
            return 0;
          }),
        ),
      ).then((n) => n.reduce((a, b) => a + b, 0));
    // Without the table, the predicted filters go out first, without waiting for the listing. With
    // it, the listing (started before the commit) is awaited: deleting what it found by exact tuple
    // takes a fraction of a millisecond, a filter the walk of the whole table.
    const early = (o.exact ? Promise.resolve(0) : filters(o.predicted)).then((deleted) => ({
      deleted,
      at: performance.now(),
    }));
    const done = new Set(o.exact ? [] : o.predicted.map(deletionKey));
    const listed = await planned;
    if (!listed) return undefined;
    const plans = listed.map((p) =>
      p === undefined || p instanceof Error || done.size === 0
        ? p
        : { ...p, deletions: p.deletions.filter((d) => !done.has(deletionKey(d))) },
    );
    const report = (family: Family, r: ConntrackCleanupResult): number => {
      if (r.deleted > 0) log.debug({ family, deleted: r.deleted, stale: r.stale }, 'stale conntrack entries deleted');
      for (const e of r.errors) log.warn({ family }, `conntrack cleanup: ${e}`);
      return r.deleted;
    };
    const table = this.table();
    const run = (p: ConntrackCleanupPlanned | Error | undefined, fs: FamilyState, first: boolean): Promise<number> => {
      const family = fs.context.family;
      // Not listed: this change cannot have made flows of the family stale (the second pass lists it).
      if (p === undefined) return Promise.resolve(0);
      if (p instanceof Error) {
        log.warn({ family, err: p.message }, 'conntrack cleanup failed');
        // The listing failed: what the change predictably made stale still goes, as filters.
        return first && o.exact ? filters(o.predicted.filter((d) => d.family === family)) : Promise.resolve(0);
      }
      return runConntrackDeletions(del, p, { concurrency: 16, ...(table ? { table } : {}) }).then((r) =>
        report(family, r),
      );
    };
    const counts = await Promise.all(plans.map((p, i) => run(p, requests[i] as FamilyState, true)));
    const first = await early;
    const deleted = counts.reduce((a, b) => a + b, first.deleted);
    // When the first deletions were done: the predicted ones if they found anything, else the listed ones.
    const ms = (first.deleted > 0 ? first.at : performance.now()) - o.committedAt;
    requests.forEach((fs, i) => {
      this.cache(fs.context.family).state = (states[i] as () => NodeState)();
    });
    const secondPass = async (): Promise<void> => {
      const again = await this.planConntrack(requests, states);
      await Promise.all(again.map((p, i) => run(p, requests[i] as FamilyState, false)));
    };
    // Through the table the second pass starts now (its listing costs the daemon nothing, and new
    // flows the old rules sent astray meanwhile are found sooner); through the tool, after the log line.
    const started = o.secondPass && o.exact ? secondPass() : undefined;
    const later = started ? () => started : secondPass;
    return { deleted, ms: Math.round(ms * 10) / 10, ...(o.secondPass ? { secondPass: later } : {}) };
  }

  /** Tells the audit log (if any) of the transaction just applied or refused; never throws. */
  private audit(
    kind: SyncKind,
    full: boolean,
    changed: ReadonlySet<string>,
    families: readonly FamilyState[],
    snapshot: ClusterSnapshot,
    changes: number,
    started: number,
    err?: unknown,
  ): void {
    if (!this.o.audit) return;
    const durationMs = performance.now() - started;
    try {
      this.o.audit.record({
        time: new Date(this.now() - durationMs),
        kind,
        rederivedAll: full,
        changedServices: changed,
        families,
        snapshot,
        changes,
        durationMs,
        ...(err !== undefined ? { error: err instanceof Error ? err.message : String(err) } : {}),
      });
    } catch (e) {
      this.o.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'audit log failed');
    }
  }

  private cache(family: Family): FamilyCache {
    return this.families.get(family) as FamilyCache;
  }

  /** One Service's ports for a family (none without a ClusterIP of the family). */
  private portsOf(
    service: Service,
    slices: ReadonlyMap<string, EndpointSlice[]>,
    family: Family,
    snapshot: ClusterSnapshot,
  ): ServicePortState[] {
    return servicePortsOf(
      service,
      slices.get(serviceKey(service)) ?? [],
      family,
      this.o.config.nodeName,
      snapshot.node,
    );
  }

  /** Conflicts are logged when they change, not on every sync. */
  private reportProblems(problems: string[]): void {
    const text = problems.join('\n');
    if (text === this.problems) return;
    this.problems = text;
    for (const p of problems) this.o.log.warn(`skipped: ${p}`);
  }

  private async afterApply(
    kind: SyncKind,
    families: readonly FamilyState[],
    commands: number,
    slices: readonly EndpointSlice[],
    started: number,
    drift: boolean,
    detail: Readonly<Record<string, unknown>> | undefined,
    conntrack: { deleted: number; ms: number; listedMs?: number } | undefined,
  ): Promise<void> {
    const { log, metrics, health } = this.o;
    for (const fs of families) {
      const family = fs.context.family;
      health.updated(family);
      const labels = { ip_family: ipFamilyLabel(family) };
      const seconds = (performance.now() - started) / 1000;
      metrics.syncProxyRulesDuration.observe(labels, seconds);
      (kind === 'full' ? metrics.syncFullProxyRulesDuration : metrics.syncPartialProxyRulesDuration).observe(
        labels,
        seconds,
      );
      metrics.syncProxyRulesLastTimestamp.setToCurrentTime(labels);
      const { internalDrops, externalDrops } = this.cache(family).services;
      metrics.noLocalEndpointsTotal.set({ ...labels, traffic_policy: 'internal' }, internalDrops);
      metrics.noLocalEndpointsTotal.set({ ...labels, traffic_policy: 'external' }, externalDrops);
    }
    this.observeProgrammingLatency(slices);
    await this.syncServiceHealth(families);
    log.info(
      {
        kind,
        commands,
        ...detail,
        ...(drift ? { drift } : {}),
        // Stale UDP flows deleted, and how long after the commit the first pass took.
        ...(conntrack && conntrack.deleted > 0
          ? {
              conntrackDeleted: conntrack.deleted,
              conntrackMs: conntrack.ms,
              ...(conntrack.listedMs !== undefined ? { conntrackListedMs: conntrack.listedMs } : {}),
            }
          : {}),
        ms: Math.round(performance.now() - started),
      },
      'sync',
    );
  }

  /** From each EndpointSlice's last-change-trigger-time to now, once per trigger time (the sync's slices). */
  private observeProgrammingLatency(slices: readonly EndpointSlice[]): void {
    const now = this.now();
    for (const slice of slices) {
      if (!slice.triggerTime) continue;
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
  private async syncServiceHealth(families: readonly FamilyState[]): Promise<void> {
    const server = this.o.serviceHealth;
    if (!server) return;
    const ports = new Map<number, ServiceRef>();
    const counts = new Map<string, number>();
    for (const fs of families) {
      for (const [key, check] of this.cache(fs.context.family).services.healthChecks) {
        if (!ports.has(check.nodePort)) ports.set(check.nodePort, check.ref);
        counts.set(key, Math.max(counts.get(key) ?? 0, check.localEndpoints));
      }
    }
    await server.syncServices(ports);
    server.syncEndpoints(counts);
  }
}

/** A value computed on first use, then kept. */
function lazy<T>(make: () => T): () => T {
  let made = false;
  let value: T | undefined;
  return () => {
    if (!made) {
      value = make();
      made = true;
    }
    return value as T;
  };
}
