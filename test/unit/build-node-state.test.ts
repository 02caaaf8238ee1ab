/**
 * buildNodeState: every branch of the per-port decision (kube-proxy-behaviour.md §1–2), driven
 * through validated cluster objects from test/support/cluster-builders.ts.
 */
import { describe, expect, it } from 'vitest';
import { buildNodeState } from '../../src/model/build-node-state.ts';
import type { ClusterSnapshot, Family } from '../../src/model/cluster.ts';
import type { EndpointTarget, NodeState, ServicePortState } from '../../src/model/node-state.ts';
import {
  cidr,
  ep,
  local,
  node,
  NODE,
  options,
  remote,
  service,
  serviceCIDR,
  slice,
  snapshot,
  terminating,
  type OptionsInit,
  type SnapshotInit,
} from '../support/cluster-builders.ts';

function build(init: SnapshotInit | ClusterSnapshot, family: Family = 'ipv4', opts: OptionsInit = {}): NodeState {
  return buildNodeState(snapshot(init as SnapshotInit), family, options(opts));
}

/** The only service port of the state. */
function only(state: NodeState): ServicePortState {
  expect(state.servicePorts).toHaveLength(1);
  const sp = state.servicePorts[0];
  if (!sp) throw new Error('unreachable');
  return sp;
}

/** Shorthand for one service `web` with the given slices (and optional Service fields). */
function web(
  slices: ReturnType<typeof slice>[],
  init: Parameters<typeof service>[1] = {},
  extra: SnapshotInit = {},
): ServicePortState {
  return only(build({ services: [service('web', init)], slices, node: node({ zone: 'zone-a' }), ...extra }));
}

const t = (ip: string, port = 8080, isLocal = false): EndpointTarget => ({ ip, port, isLocal });
const tl = (ip: string, port = 8080): EndpointTarget => t(ip, port, true);

const NODE_PORT = { type: 'NodePort', ports: [{ name: 'http', protocol: 'TCP', port: 80, nodePort: 30080 }] } as const;

describe('buildNodeState: service ports', () => {
  it('ClusterIP with ready endpoints: cluster route, no external, identity fields filled in', () => {
    const sp = web([slice('web', [remote('10.244.1.2'), local('10.244.0.2')])]);
    expect(sp).toEqual({
      ref: { namespace: 'default', name: 'web', portName: 'http', protocol: 'TCP' },
      key: 'default/web:http',
      clusterIP: '10.96.0.10',
      port: 80,
      externalIPs: [],
      loadBalancerIPs: [],
      loadBalancerSourceRanges: [],
      internal: { kind: 'cluster', endpoints: [tl('10.244.0.2'), t('10.244.1.2')] },
      servingEndpoints: [tl('10.244.0.2'), t('10.244.1.2')],
      localEndpointCount: 1,
    });
    expect('external' in sp).toBe(false);
    expect('nodePort' in sp).toBe(false);
    expect('affinityTimeoutSeconds' in sp).toBe(false);
    expect('healthCheckNodePort' in sp).toBe(false);
  });

  it('orders endpoints by the string "IP:port", not numerically (":" sorts after digits)', () => {
    const sp = web([
      slice('web', [remote('10.0.0.9'), remote('10.0.0.10'), remote('10.0.0.100')]),
      // Same port name with another number in a second slice: same IP, different "IP:port".
      slice('web', [remote('10.0.0.9')], { ports: [{ name: 'http', protocol: 'TCP', port: 10000 }] }),
    ]);
    expect(sp.internal).toEqual({
      kind: 'cluster',
      endpoints: [t('10.0.0.100'), t('10.0.0.10'), t('10.0.0.9', 10000), t('10.0.0.9')],
    });
  });

  it('orders IPv6 endpoints by "[IP]:port"', () => {
    const state = build(
      {
        services: [service('web', { clusterIPs: ['fd00:96::10'] })],
        slices: [slice('web', [remote('fd00::9'), remote('fd00::10'), remote('fd00::a')])],
      },
      'ipv6',
    );
    expect(only(state).internal).toEqual({ kind: 'cluster', endpoints: [t('fd00::10'), t('fd00::9'), t('fd00::a')] });
  });

  it('merges a duplicate endpoint across slices; the local copy wins whichever slice comes first', () => {
    const remoteFirst = web([slice('web', [remote('10.244.0.5')]), slice('web', [local('10.244.0.5')])]);
    const localFirst = web([slice('web', [local('10.244.0.5')]), slice('web', [remote('10.244.0.5')])]);
    for (const sp of [remoteFirst, localFirst]) {
      expect(sp.internal).toEqual({ kind: 'cluster', endpoints: [tl('10.244.0.5')] });
      expect(sp.localEndpointCount).toBe(1);
    }
    const twoRemote = web([slice('web', [remote('10.244.1.5')]), slice('web', [ep('10.244.1.5', { node: 'node-c' })])]);
    expect(twoRemote.internal).toEqual({ kind: 'cluster', endpoints: [t('10.244.1.5')] });
  });

  it('the local copy that wins brings its own conditions (a not-ready local copy beats a ready remote one)', () => {
    const sp = web([
      slice('web', [remote('10.244.0.5')]),
      slice('web', [local('10.244.0.5', { ready: false, serving: false })]),
    ]);
    expect(sp.internal).toEqual({ kind: 'reject' });
  });

  it('matches slice ports by name and protocol, taking the slice port number', () => {
    const svc = service('dns', {
      ports: [
        { name: 'dns', protocol: 'UDP', port: 53 },
        { name: 'dns-tcp', protocol: 'TCP', port: 53 },
      ],
    });
    const state = build({
      services: [svc],
      slices: [
        slice('dns', [remote('10.244.1.53')], {
          ports: [
            { name: 'dns', protocol: 'TCP', port: 1111 }, // same name, other protocol: not for dns/UDP
            { name: 'dns-tcp', protocol: 'TCP', port: 5353 },
            { name: 'metrics', protocol: 'TCP', port: 9153 },
          ],
        }),
      ],
    });
    const [dns, dnsTcp] = state.servicePorts;
    expect(dns?.key).toBe('default/dns:dns');
    expect(dns?.internal).toEqual({ kind: 'reject' });
    expect(dnsTcp?.key).toBe('default/dns:dns-tcp');
    expect(dnsTcp?.internal).toEqual({ kind: 'cluster', endpoints: [t('10.244.1.53', 5353)] });
  });

  it('an unnamed service port matches the unnamed slice port', () => {
    const sp = web([slice('web', [remote('10.244.1.2')], { ports: [{ name: '', protocol: 'TCP', port: 9000 }] })], {
      ports: [{ name: '', protocol: 'TCP', port: 80 }],
    });
    expect(sp.key).toBe('default/web:');
    expect(sp.internal).toEqual({ kind: 'cluster', endpoints: [t('10.244.1.2', 9000)] });
  });

  it('joins slices by namespace and service name only', () => {
    const sp = web([
      slice('web', [remote('10.244.1.1')], { namespace: 'other' }),
      slice('webx', [remote('10.244.1.2')]),
      slice('web', [remote('10.244.1.3')]),
    ]);
    expect(sp.internal).toEqual({ kind: 'cluster', endpoints: [t('10.244.1.3')] });
  });

  it('ignores slices of the other family', () => {
    const dual = { clusterIPs: ['10.96.0.10', 'fd00:96::10'] };
    const slices = [slice('web', [remote('10.244.1.2')]), slice('web', [remote('fd00:244::2')])];
    const v4 = only(build({ services: [service('web', dual)], slices }, 'ipv4'));
    const v6 = only(build({ services: [service('web', dual)], slices }, 'ipv6'));
    expect(v4.internal).toEqual({ kind: 'cluster', endpoints: [t('10.244.1.2')] });
    expect(v6.clusterIP).toBe('fd00:96::10');
    expect(v6.internal).toEqual({ kind: 'cluster', endpoints: [t('fd00:244::2')] });
    // Only an IPv6 slice for an IPv4 Service: no endpoints.
    expect(
      only(build({ services: [service('web')], slices: [slice('web', [remote('fd00:244::2')])] })).internal,
    ).toEqual({
      kind: 'reject',
    });
  });

  it('skips Services without a ClusterIP of the family', () => {
    const snap = { services: [service('v4'), service('v6', { clusterIPs: ['fd00:96::10'] })] };
    expect(build(snap, 'ipv4').servicePorts.map((s) => s.key)).toEqual(['default/v4:http']);
    expect(build(snap, 'ipv6').servicePorts.map((s) => s.key)).toEqual(['default/v6:http']);
  });

  it('one state per port of a multi-port Service, sorted by key across Services', () => {
    const state = build({
      services: [
        service('zeta', { clusterIPs: ['10.96.0.3'] }),
        service('alpha', {
          clusterIPs: ['10.96.0.2'],
          ports: [
            { name: 'metrics', protocol: 'TCP', port: 9090 },
            { name: 'http', protocol: 'TCP', port: 80 },
          ],
        }),
        service('alpha', { namespace: 'a-ns', clusterIPs: ['10.96.0.1'] }),
      ],
    });
    expect(state.servicePorts.map((s) => s.key)).toEqual([
      'a-ns/alpha:http',
      'default/alpha:http',
      'default/alpha:metrics',
      'default/zeta:http',
    ]);
  });
});

describe('buildNodeState: traffic policies', () => {
  it('internalTrafficPolicy Local with local endpoints: only the local ones', () => {
    const sp = web([slice('web', [remote('10.244.1.2'), local('10.244.0.2'), local('10.244.0.3')])], {
      internalTrafficPolicy: 'Local',
    });
    expect(sp.internal).toEqual({ kind: 'local', endpoints: [tl('10.244.0.2'), tl('10.244.0.3')] });
  });

  it('internalTrafficPolicy Local without local endpoints: drop', () => {
    const sp = web([slice('web', [remote('10.244.1.2')])], { internalTrafficPolicy: 'Local' });
    expect(sp.internal).toEqual({ kind: 'drop' });
  });

  it('internalTrafficPolicy Local with no endpoints anywhere: reject', () => {
    expect(web([], { internalTrafficPolicy: 'Local' }).internal).toEqual({ kind: 'reject' });
    expect(web([slice('web', [])], { internalTrafficPolicy: 'Local' }).internal).toEqual({ kind: 'reject' });
  });

  it('externalTrafficPolicy Cluster: external route to all cluster endpoints', () => {
    const sp = web([slice('web', [remote('10.244.1.2'), local('10.244.0.2')])], NODE_PORT);
    expect(sp.nodePort).toBe(30080);
    expect(sp.external).toEqual({ kind: 'cluster', endpoints: [tl('10.244.0.2'), t('10.244.1.2')] });
  });

  it('externalTrafficPolicy Local: local list plus the cluster list for short-circuits', () => {
    const sp = web([slice('web', [remote('10.244.1.2'), local('10.244.0.2')])], {
      ...NODE_PORT,
      externalTrafficPolicy: 'Local',
    });
    expect(sp.external).toEqual({
      kind: 'local',
      local: [tl('10.244.0.2')],
      cluster: [tl('10.244.0.2'), t('10.244.1.2')],
    });
    // internalTrafficPolicy is independent.
    expect(sp.internal).toEqual({ kind: 'cluster', endpoints: [tl('10.244.0.2'), t('10.244.1.2')] });
  });

  it('externalTrafficPolicy Local without local endpoints: local [] beside a non-empty cluster list', () => {
    const sp = web([slice('web', [remote('10.244.1.2')])], { ...NODE_PORT, externalTrafficPolicy: 'Local' });
    expect(sp.external).toEqual({ kind: 'local', local: [], cluster: [t('10.244.1.2')] });
  });

  it('no endpoints at all: internal and external reject, for either policy', () => {
    for (const externalTrafficPolicy of ['Cluster', 'Local'] as const) {
      const sp = web([slice('web', [remote('10.244.1.2', { ready: false, serving: false })])], {
        ...NODE_PORT,
        externalTrafficPolicy,
      });
      expect(sp.internal).toEqual({ kind: 'reject' });
      expect(sp.external).toEqual({ kind: 'reject' });
    }
  });

  it('both policies Local with local endpoints', () => {
    const sp = web([slice('web', [remote('10.244.1.2'), local('10.244.0.2')])], {
      ...NODE_PORT,
      externalTrafficPolicy: 'Local',
      internalTrafficPolicy: 'Local',
    });
    expect(sp.internal).toEqual({ kind: 'local', endpoints: [tl('10.244.0.2')] });
    expect(sp.external).toEqual({
      kind: 'local',
      local: [tl('10.244.0.2')],
      cluster: [tl('10.244.0.2'), t('10.244.1.2')],
    });
  });

  it('externally accessible through a nodePort, an externalIP or an LB IP of the family; otherwise no external', () => {
    const eps = [slice('web', [remote('10.244.1.2')])];
    expect('external' in web(eps)).toBe(false);
    expect(web(eps, NODE_PORT).external?.kind).toBe('cluster');
    expect(web(eps, { externalIPs: ['192.0.2.10'] }).external?.kind).toBe('cluster');
    expect(web(eps, { type: 'LoadBalancer', loadBalancerIPs: ['198.51.100.10'] }).external?.kind).toBe('cluster');
    // Addresses of the other family do not make this family's port externally accessible.
    const otherFamilyOnly = web(eps, { externalIPs: ['2001:db8::10'], loadBalancerIPs: ['2001:db8::20'] });
    expect('external' in otherFamilyOnly).toBe(false);
    expect(otherFamilyOnly.externalIPs).toEqual([]);
    expect(otherFamilyOnly.loadBalancerIPs).toEqual([]);
  });
});

describe('buildNodeState: terminating endpoints', () => {
  it('no ready endpoint anywhere: cluster falls back to serving+terminating ones on any node', () => {
    const sp = web([slice('web', [terminating('10.244.1.2'), terminating('10.244.0.2', { node: NODE })])], NODE_PORT);
    expect(sp.internal).toEqual({ kind: 'cluster', endpoints: [tl('10.244.0.2'), t('10.244.1.2')] });
    expect(sp.external).toEqual({ kind: 'cluster', endpoints: [tl('10.244.0.2'), t('10.244.1.2')] });
  });

  it('a ready endpoint anywhere disables the cluster fallback', () => {
    const sp = web([slice('web', [terminating('10.244.1.2'), remote('10.244.1.3')])]);
    expect(sp.internal).toEqual({ kind: 'cluster', endpoints: [t('10.244.1.3')] });
  });

  it('local: local ready ones; else local serving-terminating ones even when remote ready ones exist', () => {
    const withReady = web([slice('web', [local('10.244.0.2'), terminating('10.244.0.3', { node: NODE })])], {
      internalTrafficPolicy: 'Local',
    });
    expect(withReady.internal).toEqual({ kind: 'local', endpoints: [tl('10.244.0.2')] });

    const fallback = web([slice('web', [remote('10.244.1.2'), terminating('10.244.0.3', { node: NODE })])], {
      ...NODE_PORT,
      internalTrafficPolicy: 'Local',
      externalTrafficPolicy: 'Local',
    });
    expect(fallback.internal).toEqual({ kind: 'local', endpoints: [tl('10.244.0.3')] });
    // Cluster uses only the ready remote one: the fallback applies to cluster only when nothing is ready.
    expect(fallback.external).toEqual({ kind: 'local', local: [tl('10.244.0.3')], cluster: [t('10.244.1.2')] });
  });

  it('servingEndpoints: every serving endpoint on any node, whatever policy, topology or readiness', () => {
    const sp = web(
      [
        slice('web', [
          remote('10.244.1.2', { forZones: ['zone-a'] }),
          remote('10.244.1.3', { forZones: ['zone-b'] }),
          terminating('10.244.1.4'),
          terminating('10.244.1.5', { serving: false }),
          local('10.244.0.2', { ready: false, serving: false }),
        ]),
      ],
      { internalTrafficPolicy: 'Local' },
    );
    expect(sp.internal).toEqual({ kind: 'drop' });
    expect(sp.servingEndpoints).toEqual([t('10.244.1.2'), t('10.244.1.3'), t('10.244.1.4')]);
  });

  it('never uses terminating endpoints that are not serving, nor not-ready ones that are not terminating', () => {
    const notServing = terminating('10.244.1.2', { serving: false });
    const notReadyNotTerminating = remote('10.244.1.3', { ready: false, serving: true, terminating: false });
    const localNotServing = terminating('10.244.0.2', { node: NODE, serving: false });
    const sp = web([slice('web', [notServing, notReadyNotTerminating, localNotServing])], {
      ...NODE_PORT,
      externalTrafficPolicy: 'Local',
    });
    expect(sp.internal).toEqual({ kind: 'reject' });
    expect(sp.external).toEqual({ kind: 'reject' });
    expect(sp.localEndpointCount).toBe(0);

    const mixed = web([slice('web', [notServing, terminating('10.244.1.9')])]);
    expect(mixed.internal).toEqual({ kind: 'cluster', endpoints: [t('10.244.1.9')] });
  });
});

describe('buildNodeState: topology', () => {
  const zoned = (ip: string, zones: string[], init = {}) => remote(ip, { forZones: zones, ...init });

  it('PreferSameNode: every ready endpoint has node hints and one names this node', () => {
    const sp = web([
      slice('web', [
        remote('10.244.1.2', { forNodes: ['node-b'] }),
        local('10.244.0.2', { forNodes: [NODE] }),
        remote('10.244.1.3', { forNodes: ['node-c', NODE] }),
      ]),
    ]);
    expect(sp.internal).toEqual({ kind: 'cluster', endpoints: [tl('10.244.0.2'), t('10.244.1.3')] });
  });

  it('PreferSameNode wins over PreferSameZone when both apply', () => {
    const sp = web([
      slice('web', [
        remote('10.244.1.2', { forNodes: ['node-b'], forZones: ['zone-a'] }),
        local('10.244.0.2', { forNodes: [NODE], forZones: ['zone-a'] }),
      ]),
    ]);
    expect(sp.internal).toEqual({ kind: 'cluster', endpoints: [tl('10.244.0.2')] });
  });

  it('node hints that never name this node fall through to zone hints', () => {
    const sp = web([
      slice('web', [
        remote('10.244.1.2', { forNodes: ['node-b'], forZones: ['zone-a'] }),
        remote('10.244.1.3', { forNodes: ['node-c'], forZones: ['zone-b'] }),
      ]),
    ]);
    expect(sp.internal).toEqual({ kind: 'cluster', endpoints: [t('10.244.1.2')] });
  });

  it('PreferSameZone: every ready endpoint has zone hints and one matches the node zone label', () => {
    const sp = web([
      slice('web', [
        zoned('10.244.1.2', ['zone-a']),
        zoned('10.244.1.3', ['zone-b']),
        zoned('10.244.1.4', ['zone-b', 'zone-a']),
      ]),
    ]);
    expect(sp.internal).toEqual({ kind: 'cluster', endpoints: [t('10.244.1.2'), t('10.244.1.4')] });
  });

  it('topology filters cluster endpoints only, never local ones', () => {
    const sp = web([slice('web', [zoned('10.244.1.2', ['zone-a']), local('10.244.0.2', { forZones: ['zone-b'] })])], {
      ...NODE_PORT,
      externalTrafficPolicy: 'Local',
    });
    expect(sp.external).toEqual({ kind: 'local', local: [tl('10.244.0.2')], cluster: [t('10.244.1.2')] });
  });

  it('partial hints (one ready endpoint without) → no filtering', () => {
    const zones = web([slice('web', [zoned('10.244.1.2', ['zone-a']), remote('10.244.1.3')])]);
    expect(zones.internal).toEqual({ kind: 'cluster', endpoints: [t('10.244.1.2'), t('10.244.1.3')] });
    const nodes = web([slice('web', [local('10.244.0.2', { forNodes: [NODE] }), remote('10.244.1.3')])]);
    expect(nodes.internal).toEqual({ kind: 'cluster', endpoints: [tl('10.244.0.2'), t('10.244.1.3')] });
  });

  it('only ready endpoints count: a hintless not-ready endpoint does not disable filtering', () => {
    const sp = web([
      slice('web', [zoned('10.244.1.2', ['zone-a']), zoned('10.244.1.3', ['zone-b']), terminating('10.244.1.4')]),
    ]);
    expect(sp.internal).toEqual({ kind: 'cluster', endpoints: [t('10.244.1.2')] });
  });

  it('zone hints that do not match this zone → no filtering', () => {
    const sp = web([slice('web', [zoned('10.244.1.2', ['zone-b']), zoned('10.244.1.3', ['zone-c'])])]);
    expect(sp.internal).toEqual({ kind: 'cluster', endpoints: [t('10.244.1.2'), t('10.244.1.3')] });
  });

  it('no zone label on the Node, or no Node → no zone filtering', () => {
    const slices = [slice('web', [zoned('10.244.1.2', ['zone-a']), zoned('10.244.1.3', ['zone-b'])])];
    const all = { kind: 'cluster', endpoints: [t('10.244.1.2'), t('10.244.1.3')] };
    expect(only(build({ services: [service('web')], slices, node: node() })).internal).toEqual(all);
    expect(only(build({ services: [service('web')], slices })).internal).toEqual(all);
    // An empty zone label is no zone either.
    expect(only(build({ services: [service('web')], slices, node: node({ zone: '' }) })).internal).toEqual(all);
  });

  it('PreferSameNode works without a Node object (it needs only the node name)', () => {
    const slices = [
      slice('web', [local('10.244.0.2', { forNodes: [NODE] }), remote('10.244.1.2', { forNodes: ['node-b'] })]),
    ];
    expect(only(build({ services: [service('web')], slices })).internal).toEqual({
      kind: 'cluster',
      endpoints: [tl('10.244.0.2')],
    });
  });

  it('topology does not apply to the terminating fallback', () => {
    const sp = web([
      slice('web', [
        terminating('10.244.1.2', { forZones: ['zone-a'] }),
        terminating('10.244.1.3', { forZones: ['zone-b'] }),
      ]),
    ]);
    expect(sp.internal).toEqual({ kind: 'cluster', endpoints: [t('10.244.1.2'), t('10.244.1.3')] });
  });
});

describe('buildNodeState: addresses, source ranges, affinity, health checks', () => {
  const dualLb = {
    type: 'LoadBalancer',
    clusterIPs: ['10.96.0.10', 'fd00:96::10'],
    ports: [{ name: 'http', protocol: 'TCP', port: 80, nodePort: 30080 }],
    externalIPs: ['192.0.2.10', '2001:db8::10', '192.0.2.11'],
    loadBalancerIPs: ['198.51.100.10', '2001:db8:1::10'],
    loadBalancerSourceRanges: ['203.0.113.0/24', '2001:db8:f::/48', '10.0.0.0/8'],
  } as const;

  it('filters externalIPs, LB IPs and source ranges to the family', () => {
    const v4 = only(build({ services: [service('lb', dualLb)] }, 'ipv4'));
    const v6 = only(build({ services: [service('lb', dualLb)] }, 'ipv6'));
    expect(v4.externalIPs).toEqual(['192.0.2.10', '192.0.2.11']);
    expect(v4.loadBalancerIPs).toEqual(['198.51.100.10']);
    expect(v4.loadBalancerSourceRanges).toEqual([cidr('203.0.113.0/24'), cidr('10.0.0.0/8')]);
    expect(v6.externalIPs).toEqual(['2001:db8::10']);
    expect(v6.loadBalancerIPs).toEqual(['2001:db8:1::10']);
    expect(v6.loadBalancerSourceRanges).toEqual([cidr('2001:db8:f::/48')]);
  });

  it('keeps source ranges only when the family has LB IPs', () => {
    const noLbIps = only(build({ services: [service('lb', { ...dualLb, loadBalancerIPs: [] })] }));
    expect(noLbIps.loadBalancerSourceRanges).toEqual([]);
    const v6LbOnly = { ...dualLb, loadBalancerIPs: ['2001:db8:1::10'] };
    expect(only(build({ services: [service('lb', v6LbOnly)] }, 'ipv4')).loadBalancerSourceRanges).toEqual([]);
    expect(only(build({ services: [service('lb', v6LbOnly)] }, 'ipv6')).loadBalancerSourceRanges).toEqual([
      cidr('2001:db8:f::/48'),
    ]);
  });

  it('passes the ClientIP affinity timeout through', () => {
    expect(web([], { sessionAffinityTimeoutSeconds: 600 }).affinityTimeoutSeconds).toBe(600);
    expect('affinityTimeoutSeconds' in web([])).toBe(false);
  });

  it('passes healthCheckNodePort through and counts local endpoints', () => {
    const lb = {
      type: 'LoadBalancer',
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 32000,
      loadBalancerIPs: ['198.51.100.10'],
      ports: [{ name: 'http', protocol: 'TCP', port: 80, nodePort: 30080 }],
    } as const;
    const sp = web([slice('web', [local('10.244.0.2'), local('10.244.0.3'), remote('10.244.1.2')])], lb);
    expect(sp.healthCheckNodePort).toBe(32000);
    expect(sp.localEndpointCount).toBe(2);
    expect(web([slice('web', [remote('10.244.1.2')])], lb).localEndpointCount).toBe(0);
  });

  // Upstream (pkg/proxy/endpointsmap.go LocalReadyEndpoints) counts only READY local endpoints for the
  // health check: "the health check signal should fail if there are only terminating endpoints on a
  // node", so that load balancers drain a node whose pods are shutting down. kproxy counts the
  // serving-terminating fallback too (src/model/build-node-state.ts, `localEndpointCount: local.length`).
  it('localEndpointCount counts only ready local endpoints (health checks must fail while only terminating ones remain)', () => {
    const sp = web([slice('web', [terminating('10.244.0.3', { node: NODE }), remote('10.244.1.2')])], {
      type: 'LoadBalancer',
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 32000,
      loadBalancerIPs: ['198.51.100.10'],
    });
    expect(sp.localEndpointCount).toBe(0);
  });
});

describe('buildNodeState: node-wide settings', () => {
  const dualNode = node({
    addresses: ['192.0.2.1', '2001:db8::1', '192.0.2.2'],
    podCIDRs: ['10.244.0.0/24', 'fd00:244::/64'],
  });
  const state = (family: Family, opts: OptionsInit, withNode = true) =>
    build(withNode ? { node: dualNode } : {}, family, opts);

  it('passes family and node name through', () => {
    const s = state('ipv6', { nodeName: 'other-node' });
    expect(s.family).toBe('ipv6');
    expect(s.nodeName).toBe('other-node');
  });

  it('detect-local ClusterCIDR: the cluster CIDR of the family, none when the family has none', () => {
    const both = { detectLocal: { mode: 'ClusterCIDR' }, clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/56'] } as const;
    expect(state('ipv4', both).localDetector).toEqual({ kind: 'cidrs', cidrs: [cidr('10.244.0.0/16')] });
    expect(state('ipv6', both).localDetector).toEqual({ kind: 'cidrs', cidrs: [cidr('fd00:244::/56')] });
    const v4Only = { detectLocal: { mode: 'ClusterCIDR' }, clusterCIDRs: ['10.244.0.0/16'] } as const;
    expect(state('ipv6', v4Only).localDetector).toEqual({ kind: 'none' });
    expect(state('ipv4', { detectLocal: { mode: 'ClusterCIDR' } }).localDetector).toEqual({ kind: 'none' });
  });

  it('detect-local NodeCIDR: the Node podCIDRs of the family; none without a Node', () => {
    const opts = { detectLocal: { mode: 'NodeCIDR' }, clusterCIDRs: ['10.0.0.0/8'] } as const;
    expect(state('ipv4', opts).localDetector).toEqual({ kind: 'cidrs', cidrs: [cidr('10.244.0.0/24')] });
    expect(state('ipv6', opts).localDetector).toEqual({ kind: 'cidrs', cidrs: [cidr('fd00:244::/64')] });
    expect(state('ipv4', opts, false).localDetector).toEqual({ kind: 'none' });
    expect(build({ node: node({ podCIDRs: ['10.244.0.0/24'] }) }, 'ipv6', opts).localDetector).toEqual({
      kind: 'none',
    });
  });

  it('detect-local BridgeInterface, InterfaceNamePrefix and None', () => {
    for (const family of ['ipv4', 'ipv6'] as const) {
      expect(
        state(family, { detectLocal: { mode: 'BridgeInterface', bridgeInterface: 'cbr0' } }).localDetector,
      ).toEqual({
        kind: 'bridgeInterface',
        interfaceName: 'cbr0',
      });
      expect(
        state(family, { detectLocal: { mode: 'InterfaceNamePrefix', interfaceNamePrefix: 'veth' } }).localDetector,
      ).toEqual({
        kind: 'interfacePrefix',
        prefix: 'veth',
      });
      expect(
        state(family, { detectLocal: { mode: 'None' }, clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/56'] })
          .localDetector,
      ).toEqual({
        kind: 'none',
      });
    }
  });

  it('nodePortAddresses primary: the first Node address of the family as a host CIDR; none without a Node', () => {
    expect(state('ipv4', {}).nodePortDestinations).toEqual({ kind: 'cidrs', cidrs: [cidr('192.0.2.1/32')] });
    expect(state('ipv6', {}).nodePortDestinations).toEqual({ kind: 'cidrs', cidrs: [cidr('2001:db8::1/128')] });
    expect(state('ipv4', {}, false).nodePortDestinations).toEqual({ kind: 'cidrs', cidrs: [] });
    expect(build({ node: node({ addresses: ['192.0.2.1'] }) }, 'ipv6').nodePortDestinations).toEqual({
      kind: 'cidrs',
      cidrs: [],
    });
  });

  it('nodePortAddresses all and CIDRs (filtered by family)', () => {
    expect(state('ipv4', { nodePortAddresses: { kind: 'all' } }).nodePortDestinations).toEqual({ kind: 'allLocal' });
    const cidrs = {
      nodePortAddresses: {
        kind: 'cidrs',
        cidrs: [cidr('192.0.2.0/24'), cidr('2001:db8::/64'), cidr('198.51.100.0/24')],
      },
    } as const;
    expect(state('ipv4', cidrs).nodePortDestinations).toEqual({
      kind: 'cidrs',
      cidrs: [cidr('192.0.2.0/24'), cidr('198.51.100.0/24')],
    });
    expect(state('ipv6', cidrs).nodePortDestinations).toEqual({ kind: 'cidrs', cidrs: [cidr('2001:db8::/64')] });
    expect(
      state('ipv6', { nodePortAddresses: { kind: 'cidrs', cidrs: [cidr('192.0.2.0/24')] } }).nodePortDestinations,
    ).toEqual({
      kind: 'cidrs',
      cidrs: [],
    });
  });

  it('masqueradeAll passes through; masqueradeMark is 1 << bit', () => {
    expect(state('ipv4', {}).masqueradeAll).toBe(false);
    expect(state('ipv4', { masqueradeAll: true }).masqueradeAll).toBe(true);
    expect(state('ipv4', {}).masqueradeMark).toBe(0x4000);
    expect(state('ipv4', { masqueradeBit: 0 }).masqueradeMark).toBe(1);
    expect(state('ipv4', { masqueradeBit: 31 }).masqueradeMark).toBe(0x80000000);
  });

  it('serviceCIDRs: every ServiceCIDR object, filtered by family, in order', () => {
    const serviceCIDRs = [
      serviceCIDR('kubernetes', '10.96.0.0/16', 'fd00:96::/108'),
      serviceCIDR('extra', '10.100.0.0/16'),
    ];
    expect(build({ serviceCIDRs }, 'ipv4').serviceCIDRs).toEqual([cidr('10.96.0.0/16'), cidr('10.100.0.0/16')]);
    expect(build({ serviceCIDRs }, 'ipv6').serviceCIDRs).toEqual([cidr('fd00:96::/108')]);
    expect(build({}, 'ipv4').serviceCIDRs).toEqual([]);
  });

  it('is pure: the same input gives an equal result and the input is not changed', () => {
    const snap = snapshot({
      services: [service('b'), service('a', { clusterIPs: ['10.96.0.11'] })],
      slices: [slice('b', [remote('10.244.1.2'), local('10.244.0.2')])],
      node: dualNode,
    });
    const before = JSON.stringify(snap);
    expect(buildNodeState(snap, 'ipv4', options())).toEqual(buildNodeState(snap, 'ipv4', options()));
    expect(JSON.stringify(snap)).toBe(before);
  });
});
