/**
 * @module proxy/proxier
 * The one reconciler, whatever the mode: source snapshot → node state (the model's per-port
 * decisions) → the backend (render, diff, one atomic apply) → conntrack, health, metrics. It keeps
 * each family's desired state between syncs, so a partial sync re-derives only the Services a
 * change touched; full syncs (at start, after a failure, after this Node changed, after the
 * backend saw its rules flushed, every syncPeriod) re-derive everything and let the backend
 * compare with what the kernel actually holds, which also repairs drift.
 */
import type { ProxyConfig } from '../config/proxy-config.ts';
import type { ClusterSnapshot, EndpointSlice, Family, Service } from '../model/cluster.ts';
import { groupSlices, nodeContext, serviceKey, servicePortsOf } from '../model/build-node-state.ts';
import type { NodeState, ServicePortState } from '../model/node-state.ts';
import type { ClusterSource, SourceChange } from '../source/api-source.ts';
import { cleanupStaleConntrack } from '../kernel/conntrack.ts';
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

export interface ProxierOptions {
  readonly config: ProxyConfig;
  readonly source: ClusterSource;
  readonly backend: ProxyBackend;
  /** Runs conntrack in the node's network namespace. */
  readonly run: Exec;
  readonly log: Logger;
  readonly metrics: ProxyMetrics;
  readonly health: ProxyHealth;
  readonly serviceHealth?: ServiceHealthServer;
  readonly now?: () => number;
  /** Told of every transaction applied or refused (`kproxy run --audit-log`). */
  readonly audit?: AuditLog;
}

/** What the reconciler keeps per family between syncs. */
interface FamilyCache {
  context?: NodeContext;
  readonly services: Map<string, readonly ServicePortState[]>;
  /** The state of the last successful sync, for conntrack cleanup of deleted Services. */
  state?: NodeState;
}

export type SyncKind = 'full' | 'partial';

export interface SyncResult {
  readonly kind: SyncKind;
  /** Changes written to the kernel (0: it already matched). */
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
  private problems = '';
  /** Trigger times already turned into network-programming observations, per slice. */
  private readonly observedTriggers = new Map<string, number>();
  /** What the kernel took at the last successful sync (copies: later syncs do not change them). */
  private applied: readonly FamilyState[] = [];

  constructor(options: ProxierOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
    for (const f of FAMILIES) this.families.set(f, { services: new Map() });
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

  /** Forces the next sync to be full (a consistency check, or the backend saw its rules flushed). */
  requestFull(): void {
    this.fullPending = true;
  }

  /**
   * The desired state of the last sync the kernel took, per family (IPv4 first); empty before the
   * first one. A copy the following syncs leave alone (`/rules` reads it).
   */
  lastApplied(): readonly FamilyState[] {
    return this.applied;
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
    const started = performance.now();
    const full = this.fullPending || this.now() >= this.nextFullAt;
    const changed = this.pendingServices;
    this.pendingServices = new Set();
    this.fullPending = false;
    metrics.serviceChangesPending.set(0);

    const snapshot = source.snapshot();
    // A full sync re-derives every Service; a partial one only those that changed.
    const wanted = (key: string) => full || changed.has(key);
    const services = snapshot.services.filter((s) => wanted(serviceKey(s)));
    const slices = groupSlices(snapshot.endpointSlices.filter((s) => wanted(`${s.namespace}/${s.serviceName}`)));
    // Stale conntrack entries exist only for UDP/SCTP frontends: a partial sync that touched none
    // skips the cleanup (two process runs per family).
    let datagramTouched = false;
    const datagram = (ports: readonly ServicePortState[] | undefined) => ports?.some((p) => p.ref.protocol !== 'TCP');
    const requests: FamilyState[] = [];
    for (const family of FAMILIES) {
      const cache = this.cache(family);
      cache.context = nodeContext(snapshot, family, this.o.config);
      if (full) cache.services.clear();
      else for (const key of changed) datagramTouched ||= datagram(cache.services.get(key)) === true;
      if (!full) for (const key of changed) cache.services.delete(key);
      for (const service of services) {
        const ports = this.portsOf(service, slices, family, snapshot);
        if (ports.length > 0) cache.services.set(serviceKey(service), ports);
        if (!full) datagramTouched ||= datagram(ports) === true;
      }
      requests.push({ context: cache.context, services: cache.services });
    }

    let report: Awaited<ReturnType<ProxyBackend['sync']>>;
    try {
      report = await this.o.backend.sync({ families: requests, full, changed });
    } catch (err) {
      this.fullPending = true;
      for (const f of FAMILIES) metrics.syncFailuresTotal.inc({ ip_family: ipFamilyLabel(f) });
      this.audit(full ? 'full' : 'partial', full, changed, requests, snapshot, 0, started, err);
      throw err;
    }
    if (report.kind === 'full') this.nextFullAt = this.now() + this.o.config.syncPeriodMs;
    this.applied = requests.map((fs) => ({ context: fs.context, services: new Map(fs.services) }));
    this.audit(report.kind, full, changed, requests, snapshot, report.changes, started);
    if (report.drift)
      log.warn({ detail: report.detail }, 'drift: the kernel did not hold what kproxy last wrote; restored');
    this.reportProblems(report.problems.map(formatProblem));
    await this.afterApply(
      report.kind,
      requests,
      report.changes,
      changed,
      snapshot,
      started,
      report.drift,
      report.kind === 'full' || datagramTouched,
      report.detail,
    );
    return { kind: report.kind, commands: report.changes, servicesRendered: services.length };
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
    changed: ReadonlySet<string>,
    snapshot: ClusterSnapshot,
    started: number,
    drift: boolean,
    cleanConntrack: boolean,
    detail: Readonly<Record<string, unknown>> | undefined,
  ): Promise<void> {
    const { log, metrics, health } = this.o;
    for (const fs of families) {
      const family = fs.context.family;
      const cache = this.cache(family);
      if (cleanConntrack) {
        const state = nodeStateOf(fs);
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
      let internalDrop = 0;
      let externalDrop = 0;
      for (const ports of fs.services.values()) {
        for (const sp of ports) {
          if (sp.internal.kind === 'drop') internalDrop++;
          if (sp.external?.kind === 'local' && sp.external.local.length === 0) externalDrop++;
        }
      }
      metrics.noLocalEndpointsTotal.set({ ...labels, traffic_policy: 'internal' }, internalDrop);
      metrics.noLocalEndpointsTotal.set({ ...labels, traffic_policy: 'external' }, externalDrop);
    }
    this.observeProgrammingLatency(kind === 'full' ? undefined : changed, snapshot);
    await this.syncServiceHealth(families);
    log.info(
      {
        kind,
        commands,
        ...detail,
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
  private async syncServiceHealth(families: readonly FamilyState[]): Promise<void> {
    const server = this.o.serviceHealth;
    if (!server) return;
    const ports = new Map<number, ServiceRef>();
    const counts = new Map<string, number>();
    for (const fs of families) {
      for (const sp of [...fs.services.values()].flat()) {
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
