/**
 * The stale-flow filters the proxier computes before a commit (issue 13, item 5), from the
 * previous and the new state alone, so they can run the moment the commit returns.
 */
import { describe, expect, it } from 'vitest';
import type { Protocol } from '../../src/model/cluster.ts';
import { predictStaleDeletions } from '../../src/model/conntrack-plan.ts';
import type { EndpointTarget, NodeState, ServicePortState } from '../../src/model/node-state.ts';
import { bareState } from '../support/states.ts';

const ep = (ip: string, port = 5353): EndpointTarget => ({ ip, port, isLocal: false });

function port(name: string, endpoints: EndpointTarget[], over: { protocol?: Protocol; externalIPs?: string[] } = {}) {
  const protocol = over.protocol ?? 'UDP';
  const sp: ServicePortState = {
    ref: { namespace: 'ns', name, portName: 'p', protocol },
    key: `ns/${name}:p/${protocol}`,
    clusterIP: name === 'dns' ? '10.96.0.10' : '10.96.0.20',
    port: 53,
    externalIPs: over.externalIPs ?? [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    internal: endpoints[0] ? { kind: 'cluster', endpoints: [endpoints[0], ...endpoints.slice(1)] } : { kind: 'reject' },
    localEndpointCount: 0,
    servingEndpoints: endpoints,
  };
  return sp;
}

const state = (...ports: ServicePortState[]): NodeState => bareState(ports, 'ipv4');
const brief = (ds: ReturnType<typeof predictStaleDeletions>) =>
  ds.map((d) => `${d.reason} ${d.origDst}:${d.origDport} → ${d.replySrc}:${d.replySport}`).sort();

describe('predictStaleDeletions', () => {
  const a = ep('10.244.0.2');
  const b = ep('10.244.0.3');
  const touched = new Set(['ns/dns']);

  it('an endpoint swap: the old endpoint, on every frontend address of the port', () => {
    const previous = state(port('dns', [a], { externalIPs: ['192.0.2.9'] }));
    const next = state(port('dns', [b], { externalIPs: ['192.0.2.9'] }));
    expect(brief(predictStaleDeletions({ previous, state: next, services: touched }))).toEqual([
      'endpoint-gone 10.96.0.10:53 → 10.244.0.2:5353',
      'endpoint-gone 192.0.2.9:53 → 10.244.0.2:5353',
    ]);
  });

  it('scaled to zero, or deleted: every previous endpoint', () => {
    const previous = state(port('dns', [a, b]));
    expect(brief(predictStaleDeletions({ previous, state: state(port('dns', [])), services: touched }))).toEqual([
      'no-endpoints 10.96.0.10:53 → 10.244.0.2:5353',
      'no-endpoints 10.96.0.10:53 → 10.244.0.3:5353',
    ]);
    expect(brief(predictStaleDeletions({ previous, state: state(), services: touched }))).toEqual([
      'service-gone 10.96.0.10:53 → 10.244.0.2:5353',
      'service-gone 10.96.0.10:53 → 10.244.0.3:5353',
    ]);
  });

  it('nothing for an endpoint added, a TCP port, or a Service the sync did not touch', () => {
    expect(
      predictStaleDeletions({
        previous: state(port('dns', [a])),
        state: state(port('dns', [a, b])),
        services: touched,
      }),
    ).toEqual([]);
    expect(
      predictStaleDeletions({
        previous: state(port('dns', [a], { protocol: 'TCP' })),
        state: state(port('dns', [b], { protocol: 'TCP' })),
        services: touched,
      }),
    ).toEqual([]);
    expect(
      predictStaleDeletions({
        previous: state(port('other', [a])),
        state: state(port('other', [b])),
        services: touched,
      }),
    ).toEqual([]);
  });
});
