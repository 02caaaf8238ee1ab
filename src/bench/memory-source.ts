/**
 * @module bench/memory-source
 * A ClusterSource over an in-memory cluster the bench edits directly, so that incremental-sync
 * latency is measured from the moment a change exists to the moment the kernel holds it, with
 * the daemon's own runner, proxier and nft in between (no API server or file watching in the way).
 */
import type { ClusterSnapshot, EndpointSlice, Service } from '../model/cluster.ts';
import type { ClusterSource, ServiceSelection, SourceChange } from '../source/api-source.ts';
import { snapshotFrom } from '../source/normalize.ts';

export class MemorySource implements ClusterSource {
  /** By `namespace/name`; slices by the key of their Service. */
  private readonly services = new Map<string, Service>();
  private readonly slices = new Map<string, readonly EndpointSlice[]>();
  private readonly rest: Omit<ClusterSnapshot, 'services' | 'endpointSlices'>;
  private readonly listeners: ((c: SourceChange) => void)[] = [];
  private cached: ClusterSnapshot | undefined;
  /** Number of changes put so far. */
  generation = 0;
  /** The generation the last snapshot() or select() showed: a sync includes the changes up to it. */
  readGeneration = 0;

  constructor(snapshot: ClusterSnapshot) {
    for (const s of snapshot.services) this.services.set(`${s.namespace}/${s.name}`, s);
    for (const s of snapshot.endpointSlices) {
      const key = `${s.namespace}/${s.serviceName}`;
      this.slices.set(key, [...(this.slices.get(key) ?? []), s]);
    }
    this.rest = { serviceCIDRs: snapshot.serviceCIDRs, ...(snapshot.node ? { node: snapshot.node } : {}) };
  }

  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  isSynced(): boolean {
    return true;
  }
  syncedDetail(): Record<string, boolean> {
    return { memory: true };
  }
  snapshot(): ClusterSnapshot {
    this.readGeneration = this.generation;
    this.cached ??= snapshotFrom({
      ...this.rest,
      services: this.services.values(),
      endpointSlices: [...this.slices.values()].flat(),
    });
    return this.cached;
  }
  select(keys: ReadonlySet<string>): ServiceSelection {
    this.readGeneration = this.generation;
    const services: Service[] = [];
    const endpointSlices: EndpointSlice[] = [];
    for (const key of keys) {
      const service = this.services.get(key);
      if (service) services.push(service);
      endpointSlices.push(...(this.slices.get(key) ?? []));
    }
    return snapshotFrom({ ...this.rest, services, endpointSlices });
  }
  onChange(listener: (c: SourceChange) => void): void {
    this.listeners.push(listener);
  }

  /** Replaces (or adds, or with `undefined` removes) one Service and its slices, then notifies. */
  put(key: string, service: Service | undefined, slices: readonly EndpointSlice[]): void {
    if (service) {
      this.services.set(key, service);
      this.slices.set(key, slices);
    } else {
      this.services.delete(key);
      this.slices.delete(key);
    }
    this.cached = undefined;
    this.generation++;
    const change: SourceChange = {
      services: new Set([key]),
      nodeChanged: false,
      nodeLabelsChanged: false,
      serviceCIDRsChanged: false,
    };
    for (const l of this.listeners) l(change);
  }

  service(key: string): { service: Service; slices: EndpointSlice[] } | undefined {
    const service = this.services.get(key);
    return service ? { service, slices: [...(this.slices.get(key) ?? [])] } : undefined;
  }
}
