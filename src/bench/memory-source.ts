/**
 * @module bench/memory-source
 * A ClusterSource over an in-memory cluster the bench edits directly, so that incremental-sync
 * latency is measured from the moment a change exists to the moment the kernel holds it, with
 * the daemon's own runner, proxier and nft in between (no API server or file watching in the way).
 */
import type { ClusterSnapshot, EndpointSlice, Service } from '../model/cluster.ts';
import type { ClusterSource, SourceChange } from '../source/api-source.ts';

export class MemorySource implements ClusterSource {
  private services: Service[];
  private slices: EndpointSlice[];
  private readonly rest: Omit<ClusterSnapshot, 'services' | 'endpointSlices'>;
  private readonly listeners: ((c: SourceChange) => void)[] = [];
  private cached: ClusterSnapshot | undefined;
  /** Number of changes put so far. */
  generation = 0;
  /** The generation the last snapshot() showed: a sync includes the changes up to it. */
  readGeneration = 0;

  constructor(snapshot: ClusterSnapshot) {
    this.services = [...snapshot.services];
    this.slices = [...snapshot.endpointSlices];
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
    this.cached ??= { ...this.rest, services: this.services, endpointSlices: this.slices };
    return this.cached;
  }
  onChange(listener: (c: SourceChange) => void): void {
    this.listeners.push(listener);
  }

  /** Replaces (or adds, or with `undefined` removes) one Service and its slices, then notifies. */
  put(key: string, service: Service | undefined, slices: readonly EndpointSlice[]): void {
    const [namespace, name] = key.split('/');
    this.services = this.services.filter((s) => s.namespace !== namespace || s.name !== name);
    this.slices = this.slices.filter((s) => s.namespace !== namespace || s.serviceName !== name);
    if (service) {
      this.services.push(service);
      this.slices.push(...slices);
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
    const [namespace, name] = key.split('/');
    const service = this.services.find((s) => s.namespace === namespace && s.name === name);
    return service
      ? { service, slices: this.slices.filter((s) => s.namespace === namespace && s.serviceName === name) }
      : undefined;
  }
}
