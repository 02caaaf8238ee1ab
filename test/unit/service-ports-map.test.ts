import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { EndpointTarget, ServicePortState } from '../../src/model/node-state.ts';
import { ServicePortsMap } from '../../src/proxy/service-ports-map.ts';

const endpoint: EndpointTarget = { ip: '10.0.0.1', port: 80, isLocal: true };

/** A port of Service `svc-N` with a given internal route, Local external route, health check. */
function port(
  n: number,
  portName: string,
  internal: 'cluster' | 'drop',
  externalLocal: number | undefined,
  healthCheckNodePort: number | undefined,
  localEndpointCount: number,
): ServicePortState {
  return {
    ref: { namespace: 'ns', name: `svc-${n}`, portName, protocol: 'TCP' },
    key: `ns/svc-${n}:${portName}`,
    clusterIP: `10.96.0.${n}`,
    port: 80,
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    internal: internal === 'drop' ? { kind: 'drop' } : { kind: 'cluster', endpoints: [endpoint] },
    ...(externalLocal !== undefined
      ? { external: { kind: 'local', local: Array(externalLocal).fill(endpoint), cluster: [endpoint] } }
      : {}),
    ...(healthCheckNodePort !== undefined ? { healthCheckNodePort } : {}),
    servingEndpoints: [],
    localEndpointCount,
  };
}

/** What the summaries must equal: recomputed from every entry, as the proxier once did per sync. */
function recomputed(map: ReadonlyMap<string, readonly ServicePortState[]>) {
  const portCount = [...map.values()].reduce((n, ports) => n + ports.length, 0);
  let internalDrops = 0;
  let externalDrops = 0;
  const healthChecks = new Map<string, { nodePort: number; localEndpoints: number }>();
  for (const [key, ports] of map) {
    for (const sp of ports) {
      if (sp.internal.kind === 'drop') internalDrops++;
      if (sp.external?.kind === 'local' && sp.external.local.length === 0) externalDrops++;
      if (sp.healthCheckNodePort === undefined) continue;
      const seen = healthChecks.get(key);
      healthChecks.set(key, {
        nodePort: seen?.nodePort ?? sp.healthCheckNodePort,
        localEndpoints: Math.max(seen?.localEndpoints ?? 0, sp.localEndpointCount),
      });
    }
  }
  return { portCount, internalDrops, externalDrops, healthChecks };
}

function summaries(map: ServicePortsMap) {
  return {
    portCount: map.portCount,
    internalDrops: map.internalDrops,
    externalDrops: map.externalDrops,
    healthChecks: new Map(
      [...map.healthChecks].map(([k, h]) => [k, { nodePort: h.nodePort, localEndpoints: h.localEndpoints }]),
    ),
  };
}

describe('ServicePortsMap', () => {
  it('keeps the port and drop counts and the health checks equal to a recount after any sequence of set, delete and clear', () => {
    const portArb = fc.tuple(
      fc.constantFrom('cluster' as const, 'drop' as const),
      fc.option(fc.integer({ min: 0, max: 2 }), { nil: undefined }),
      fc.option(fc.constantFrom(30001, 30002), { nil: undefined }),
      fc.integer({ min: 0, max: 3 }),
    );
    const op = fc.oneof(
      fc.record({
        op: fc.constant('set' as const),
        n: fc.integer({ min: 1, max: 5 }),
        ports: fc.array(portArb, { maxLength: 3 }),
      }),
      fc.record({ op: fc.constant('delete' as const), n: fc.integer({ min: 1, max: 5 }) }),
      fc.record({ op: fc.constant('clear' as const) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const map = new ServicePortsMap();
        for (const o of ops) {
          if (o.op === 'clear') map.clear();
          else if (o.op === 'delete') map.delete(`ns/svc-${o.n}`);
          else
            map.set(
              `ns/svc-${o.n}`,
              o.ports.map(([internal, local, hc, count], i) => port(o.n, `p${i}`, internal, local, hc, count)),
            );
          expect(summaries(map)).toEqual(recomputed(map));
        }
      }),
    );
  });

  it('names a health-checked Service by its ref and takes the most local endpoints over its ports', () => {
    const map = new ServicePortsMap();
    map.set('ns/svc-1', [port(1, 'a', 'cluster', 1, 30001, 1), port(1, 'b', 'cluster', 2, 30001, 2)]);
    expect(map.healthChecks.get('ns/svc-1')).toEqual({
      nodePort: 30001,
      ref: { namespace: 'ns', name: 'svc-1' },
      localEndpoints: 2,
    });
  });
});
