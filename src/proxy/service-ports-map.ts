/**
 * @module proxy/service-ports-map
 * A family's desired ports by Service key (`namespace/name`), the proxier's cache between syncs,
 * keeping up as it changes what every sync reports about all Services: the number of ports, the
 * metrics' counts of ports with no endpoint to send to, and the Services with a health-check NodePort. A partial sync
 * then costs its change, not a walk of every Service (at 50k Services the walks took ~10 ms per
 * sync, more than the rest of an endpoint change).
 */
import type { ServiceRef } from '../daemon/service-health.ts';
import type { ServicePortState } from '../model/node-state.ts';

/** A Service's health-check NodePort in one family and its ready local endpoints (the most of its ports). */
export interface HealthCheck {
  readonly nodePort: number;
  readonly ref: ServiceRef;
  readonly localEndpoints: number;
}

export class ServicePortsMap extends Map<string, readonly ServicePortState[]> {
  /** Ports of every Service (the nftables endpoint maps' shard count follows it). */
  portCount = 0;
  /** Ports whose internal traffic is dropped (internalTrafficPolicy Local, no local endpoint). */
  internalDrops = 0;
  /** Ports under externalTrafficPolicy Local with no local endpoint. */
  externalDrops = 0;
  /** By Service key, in the order the Services were last set. */
  readonly healthChecks = new Map<string, HealthCheck>();

  override set(key: string, ports: readonly ServicePortState[]): this {
    this.forget(key);
    super.set(key, ports);
    this.tally(ports, 1);
    let healthCheck: HealthCheck | undefined;
    for (const sp of ports) {
      if (sp.healthCheckNodePort === undefined) continue;
      healthCheck = {
        nodePort: healthCheck?.nodePort ?? sp.healthCheckNodePort,
        ref: { namespace: sp.ref.namespace, name: sp.ref.name },
        localEndpoints: Math.max(healthCheck?.localEndpoints ?? 0, sp.localEndpointCount),
      };
    }
    if (healthCheck) this.healthChecks.set(key, healthCheck);
    return this;
  }

  override delete(key: string): boolean {
    this.forget(key);
    return super.delete(key);
  }

  override clear(): void {
    super.clear();
    this.portCount = 0;
    this.internalDrops = 0;
    this.externalDrops = 0;
    this.healthChecks.clear();
  }

  /** Takes the key's current ports out of the summaries. */
  private forget(key: string): void {
    const ports = this.get(key);
    if (!ports) return;
    this.tally(ports, -1);
    this.healthChecks.delete(key);
  }

  private tally(ports: readonly ServicePortState[], sign: 1 | -1): void {
    this.portCount += sign * ports.length;
    for (const sp of ports) {
      if (sp.internal.kind === 'drop') this.internalDrops += sign;
      if (sp.external?.kind === 'local' && sp.external.local.length === 0) this.externalDrops += sign;
    }
  }
}

/** The number of ports in a family's map: kept by the proxier's cache, counted for other maps (one-shot commands, tests). */
export function portCount(services: ReadonlyMap<string, readonly ServicePortState[]>): number {
  if (services instanceof ServicePortsMap) return services.portCount;
  let n = 0;
  for (const ports of services.values()) n += ports.length;
  return n;
}
