/**
 * IPVS mode's renderer (pure): which virtual servers a service port gets and with which real
 * servers — always the model's endpoint choice — what goes on kube-ipvs0, the helper-set elements
 * each decision adds, schedulers, and frontends two Services claim.
 */
import { describe, expect, it } from 'vitest';
import { renderFamily } from '../../src/backends/ipvs/render/families.ts';
import type { IpvsFamilyState } from '../../src/backends/ipvs/render/layout.ts';
import { buildNodeState } from '../../src/model/build-node-state.ts';
import type { IpvsScheduler } from '../../src/model/ipvs-schedulers.ts';
import {
  local,
  node,
  options,
  remote,
  service,
  slice,
  snapshot,
  type SnapshotInit,
} from '../support/cluster-builders.ts';

const LOCAL = ['192.0.2.1', '192.0.2.40'];

function render(
  init: SnapshotInit,
  facts: { localAddresses?: string[]; available?: IpvsScheduler[]; scheduler?: IpvsScheduler } = {},
  opts: Parameters<typeof options>[0] = {},
): IpvsFamilyState {
  const state = buildNodeState(
    snapshot({ node: node(), ...init }),
    'ipv4',
    options({ nodePortAddresses: { kind: 'all' }, ...opts }),
  );
  return renderFamily(state, facts.scheduler ?? 'rr', {
    localAddresses: () => facts.localAddresses ?? LOCAL,
    ...(facts.available ? { availableSchedulers: new Set(facts.available) } : {}),
  });
}

/** `key: scheduler [persistence] -> real servers` per virtual server. */
function servers(r: IpvsFamilyState): string[] {
  return [...r.virtualServers].map(
    ([k, d]) =>
      `${k} ${d.vs.scheduler}${d.vs.flags.length ? `(${d.vs.flags.join(',')})` : ''}${d.vs.persistence ? ` p${d.vs.persistence}` : ''} -> ${d.realServers.map((s) => `${s.ip}:${s.port}`).join(' ') || '-'}`,
  );
}

function elements(r: IpvsFamilyState, set: string): string[] {
  return [...(r.ruleset.sets.find((s) => s.spec.name === set)?.elements ?? [])];
}

const LB = { type: 'LoadBalancer', ports: [{ name: 'http', protocol: 'TCP', port: 80, nodePort: 30080 }] } as const;

describe('renderIpvs', () => {
  it('externalTrafficPolicy Local: external servers get the local endpoints, a fwmark server the cluster ones', () => {
    const r = render({
      services: [
        service('web', {
          ...LB,
          externalTrafficPolicy: 'Local',
          externalIPs: ['192.0.2.40'],
          loadBalancerIPs: ['198.51.100.1'],
        }),
      ],
      slices: [slice('web', [local('10.244.0.2'), remote('10.244.1.2')])],
    });
    expect(servers(r)).toEqual([
      'TCP/10.96.0.10:80 rr -> 10.244.0.2:8080 10.244.1.2:8080',
      'TCP/192.0.2.40:80 rr -> 10.244.0.2:8080',
      'TCP/198.51.100.1:80 rr -> 10.244.0.2:8080',
      'TCP/192.0.2.1:30080 rr -> 10.244.0.2:8080',
      'TCP/192.0.2.40:30080 rr -> 10.244.0.2:8080',
      'FWM/4/1 rr -> 10.244.0.2:8080 10.244.1.2:8080',
    ]);
    // The externalIP is a local address already: only the ClusterIP and the LB IP go on kube-ipvs0.
    expect(r.addresses).toEqual(['10.96.0.10', '198.51.100.1']);
    expect(elements(r, 'short-circuit')).toEqual([
      '192.0.2.1 . tcp . 30080 : goto short-circuit-1',
      '192.0.2.40 . tcp . 30080 : goto short-circuit-1',
      '192.0.2.40 . tcp . 80 : goto short-circuit-1',
      '198.51.100.1 . tcp . 80 : goto short-circuit-1',
    ]);
    expect(elements(r, 'short-circuit-marks')).toEqual(['1']);
    expect(elements(r, 'no-local-endpoints')).toEqual([]);
    expect(elements(r, 'external-cluster')).toEqual([]);
    expect(elements(r, 'hairpin')).toEqual(['10.244.0.2 . 10.244.0.2']);
    expect(r.ruleset.chains.map((c) => c.name)).toContain('short-circuit-1');
  });

  it('no endpoint here under Local policies: servers without real servers, dropped by the helper table', () => {
    const r = render({
      services: [
        service('ext', { ...LB, externalTrafficPolicy: 'Local' }),
        service('int', { clusterIPs: ['10.96.0.11'], internalTrafficPolicy: 'Local' }),
        service('none', { clusterIPs: ['10.96.0.12'] }),
      ],
      slices: [slice('ext', [remote('10.244.1.2')]), slice('int', [remote('10.244.1.3')])],
    });
    expect(servers(r)).toEqual([
      'TCP/10.96.0.10:80 rr -> 10.244.1.2:8080',
      'TCP/192.0.2.1:30080 rr -> -',
      'TCP/192.0.2.40:30080 rr -> -',
      'FWM/4/1 rr -> 10.244.1.2:8080',
      'TCP/10.96.0.11:80 rr -> -',
      'TCP/10.96.0.12:80 rr -> -',
    ]);
    expect(elements(r, 'no-local-endpoints')).toEqual(['192.0.2.1 . tcp . 30080', '192.0.2.40 . tcp . 30080']);
    expect(elements(r, 'no-endpoint-services')).toEqual([
      '10.96.0.11 . tcp . 80 : drop',
      '10.96.0.12 . tcp . 80 : goto reject-chain',
    ]);
  });

  it('policy Cluster: every external frontend is masqueraded; affinity is persistence; nodePortAddresses CIDRs', () => {
    const r = render(
      {
        services: [service('web', { ...LB, sessionAffinityTimeoutSeconds: 600 })],
        slices: [slice('web', [remote('10.244.1.2')])],
      },
      {},
      { nodePortAddresses: { kind: 'cidrs', cidrs: [{ family: 'ipv4', address: '192.0.2.40', prefixLength: 32 }] } },
    );
    expect(servers(r)).toEqual([
      'TCP/10.96.0.10:80 rr p600 -> 10.244.1.2:8080',
      'TCP/192.0.2.40:30080 rr p600 -> 10.244.1.2:8080',
    ]);
    expect(elements(r, 'external-cluster')).toEqual(['192.0.2.40 . tcp . 30080']);
  });

  it("a Service's own scheduler; mh hashes ports too; one the kernel lacks falls back with a problem", () => {
    const r = render(
      {
        services: [
          service('a', { ipvsScheduler: 'sh' }),
          service('b', { clusterIPs: ['10.96.0.11'], ipvsScheduler: 'mh' }),
          service('c', { clusterIPs: ['10.96.0.12'], ipvsScheduler: 'twos' }),
        ],
      },
      { scheduler: 'wlc', available: ['wlc', 'sh', 'mh'] },
    );
    expect(servers(r)).toEqual([
      'TCP/10.96.0.10:80 sh -> -',
      'TCP/10.96.0.11:80 mh(mh-port) -> -',
      'TCP/10.96.0.12:80 wlc -> -',
    ]);
    expect(r.problems).toEqual([
      {
        kind: 'Service',
        object: 'default/c',
        path: 'metadata.annotations["kproxy.io/ipvs-scheduler"]',
        message: 'the kernel offers no IPVS scheduler "twos" (module ip_vs_twos); the Service uses wlc',
      },
    ]);
  });

  it('an address on several interfaces (a pod gateway on every veth) is one NodePort virtual server, no conflict', () => {
    const r = render(
      { services: [service('web', LB)], slices: [slice('web', [remote('10.244.1.2')])] },
      { localAddresses: ['10.244.0.1', '10.244.0.1', '192.0.2.1'] },
    );
    expect([...r.virtualServers.keys()]).toEqual(['TCP/10.96.0.10:80', 'TCP/10.244.0.1:30080', 'TCP/192.0.2.1:30080']);
    expect(r.problems).toEqual([]);
  });

  it('a frontend two Services claim goes to the first by key; the other is reported', () => {
    const r = render({
      services: [
        service('aaa', { externalIPs: ['203.0.113.5'] }),
        service('zzz', { clusterIPs: ['10.96.0.11'], externalIPs: ['203.0.113.5'] }),
      ],
    });
    expect([...r.virtualServers.keys()]).toEqual(['TCP/10.96.0.10:80', 'TCP/203.0.113.5:80', 'TCP/10.96.0.11:80']);
    expect(r.virtualServers.get('TCP/203.0.113.5:80')?.servicePort).toBe('default/aaa:http');
    expect(r.problems.map((p) => p.message)).toEqual([
      'virtual server TCP/203.0.113.5:80 is already used by Service port default/aaa:http; this port does not get it',
    ]);
  });
});
