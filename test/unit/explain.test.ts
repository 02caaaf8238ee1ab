/**
 * kproxy explain, pure: one packet against a snapshot, per mode. The packet-flow suite checks the
 * same answers against real packets (test/flows/explain.ts); these cover the cases it has no
 * packets for, the reasons' wording and the --output json contract's fields.
 */
import { describe, expect, it } from 'vitest';
import { groupSlices, serviceKey, servicePortsOf, traceServicePortsOf } from '../../src/model/build-node-state.ts';
import type { ClusterSnapshot } from '../../src/model/cluster.ts';
import { type ExplainConfig, ExplainError, explainPacket, type Packet } from '../../src/explain/explain.ts';
import { explanationText } from '../../src/explain/format.ts';
import { MODE_TRAITS } from '../../src/explain/modes.ts';
import type { ProxyMode } from '../../src/config/proxy-config.ts';
import {
  cidr,
  ep,
  ip,
  local,
  NODE,
  node,
  remote,
  service,
  serviceCIDR,
  slice,
  snapshot,
  terminating,
} from '../support/cluster-builders.ts';

const NODE_IP = '192.0.2.1';
const POD = '10.244.0.5';
const OUTSIDE = '203.0.113.9';

function config(mode: ProxyMode, extra: Partial<ExplainConfig> = {}): ExplainConfig {
  return {
    mode,
    nodeName: NODE,
    clusterCIDRs: [cidr('10.244.0.0/16'), cidr('fd00:244::/56')],
    detectLocal: { mode: 'ClusterCIDR' },
    // Upstream's defaults differ by mode (as config/load.ts resolves them).
    nodePortAddresses: mode === 'nftables' ? { kind: 'primary' } : { kind: 'all' },
    masqueradeAll: false,
    masqueradeBit: 14,
    iptables: { localhostNodePorts: true, flavor: 'auto' },
    ...extra,
  };
}

function packet(src: string, dst: string, port: number, extra: Partial<Packet> = {}): Packet {
  return { src: ip(src), dst: ip(dst), dstPort: port, protocol: 'TCP', ...extra };
}

function explain(
  snap: ClusterSnapshot,
  p: Packet,
  mode: ProxyMode = 'nftables',
  extra: Partial<ExplainConfig> = {},
  localAddresses: readonly string[] = [],
) {
  return explainPacket({
    snapshot: snap,
    config: config(mode, extra),
    traits: MODE_TRAITS[mode],
    packet: p,
    localAddresses,
  });
}

const nodeObj = node({ zone: 'zone-a', addresses: [NODE_IP, '2001:db8::1'] });
const cidrs = [serviceCIDR('kubernetes', '10.96.0.0/16')];

/** web: ClusterIP 10.96.0.10:80 → 8080, NodePort 30080, endpoints a (local), b (remote). */
function webCluster(init: Parameters<typeof service>[1] = {}, eps = [local('10.244.0.2'), remote('10.244.1.2')]) {
  return snapshot({
    services: [
      service('web', {
        type: 'NodePort',
        ports: [{ name: 'http', protocol: 'TCP', port: 80, nodePort: 30080 }],
        ...init,
      }),
    ],
    slices: [slice('web', eps, { name: 'web-v4' })],
    node: nodeObj,
    serviceCIDRs: cidrs,
  });
}

describe('explain: ClusterIP', () => {
  it('from a pod: DNAT to every ready endpoint, the pod address kept', () => {
    const e = explain(webCluster(), packet(POD, '10.96.0.10', 80));
    expect(e).toMatchObject({
      verdict: 'dnat',
      service: 'default/web:http',
      frontend: { kind: 'ClusterIP', address: '10.96.0.10', port: 80, protocol: 'TCP' },
      route: 'internalTrafficPolicy Cluster',
      endpoints: ['10.244.0.2:8080', '10.244.1.2:8080'],
      excluded: [],
      masquerade: false,
      hairpin: false,
      affinity: null,
      packet: { from: 'pod' },
    });
    expect(e.masqueradeReason).toContain('inside the cluster');
    // The JSON contract reads top-down: the verdict first.
    expect(Object.keys(e).slice(0, 3)).toEqual(['verdict', 'service', 'reason']);
  });

  it('from outside the cluster CIDR: masqueraded; masqueradeAll masquerades pods too; detector None never', () => {
    const outside = explain(webCluster(), packet(OUTSIDE, '10.96.0.10', 80));
    expect(outside.masquerade).toBe(true);
    expect(outside.masqueradeReason).toContain('off-cluster');
    expect(explain(webCluster(), packet(POD, '10.96.0.10', 80), 'nftables', { masqueradeAll: true })).toMatchObject({
      masquerade: true,
      masqueradeReason: expect.stringContaining('masqueradeAll'),
    });
    const none = explain(webCluster(), packet(OUTSIDE, '10.96.0.10', 80), 'iptables', {
      detectLocal: { mode: 'None' },
    });
    expect(none.masquerade).toBe(false);
  });

  it('an interface detector: pods (by --from) are inside, the rest is masqueraded', () => {
    const prefix = { detectLocal: { mode: 'InterfaceNamePrefix', interfaceNamePrefix: 'veth' } } as const;
    expect(explain(webCluster(), packet(POD, '10.96.0.10', 80, { from: 'pod' }), 'nftables', prefix).masquerade).toBe(
      false,
    );
    expect(
      explain(webCluster(), packet(POD, '10.96.0.10', 80, { from: 'outside' }), 'nftables', prefix).masquerade,
    ).toBe(true);
  });

  it('no endpoints: REJECT, with every endpoint left out and why', () => {
    const e = explain(
      webCluster({}, [
        ep('10.244.0.2', { node: NODE, ready: false, serving: false }),
        ep('10.244.0.3', { node: NODE, ready: false, serving: true, terminating: false }),
      ]),
      packet(POD, '10.96.0.10', 80),
    );
    expect(e.verdict).toBe('reject');
    expect(e.service).toBe('default/web:http');
    expect(e.excluded).toEqual([
      { endpoint: '10.244.0.2:8080', reason: 'not-serving', detail: 'not ready and not serving' },
      { endpoint: '10.244.0.3:8080', reason: 'not-ready', detail: expect.stringContaining('not ready') },
    ]);
  });

  it('serving-terminating endpoints are left out while others are ready, used when none is', () => {
    const withReady = explain(
      webCluster({}, [local('10.244.0.2'), terminating('10.244.1.9')]),
      packet(POD, '10.96.0.10', 80),
    );
    expect(withReady.endpoints).toEqual(['10.244.0.2:8080']);
    expect(withReady.excluded).toEqual([
      { endpoint: '10.244.1.9:8080', reason: 'terminating', detail: expect.stringContaining('1 ready endpoint') },
    ]);
    const fallback = explain(webCluster({}, [terminating('10.244.1.9')]), packet(POD, '10.96.0.10', 80));
    expect(fallback.endpoints).toEqual(['10.244.1.9:8080']);
  });

  it('topology hints: other zones and other nodes are left out', () => {
    const zones = explain(
      webCluster({}, [local('10.244.0.2', { forZones: ['zone-a'] }), remote('10.244.1.2', { forZones: ['zone-b'] })]),
      packet(POD, '10.96.0.10', 80),
    );
    expect(zones.endpoints).toEqual(['10.244.0.2:8080']);
    expect(zones.excluded).toEqual([
      { endpoint: '10.244.1.2:8080', reason: 'other-zone', detail: expect.stringContaining('zone-b') },
    ]);
    const nodes = explain(
      webCluster({}, [local('10.244.0.2', { forNodes: [NODE] }), remote('10.244.1.2', { forNodes: ['node-b'] })]),
      packet(POD, '10.96.0.10', 80),
    );
    expect(nodes.excluded.map((x) => x.reason)).toEqual(['other-node']);
  });

  it('the other family and a slice without the port are left out with their reason', () => {
    const snap = snapshot({
      services: [service('web', { clusterIPs: ['10.96.0.10', 'fd00:96::a'] })],
      slices: [
        slice('web', [local('10.244.0.2')], { name: 'web-v4' }),
        slice('web', [local('fd00:244::2')], { name: 'web-v6' }),
        slice('web', [local('10.244.0.7')], {
          name: 'web-other',
          ports: [{ name: 'metrics', protocol: 'TCP', port: 9090 }],
        }),
      ],
      node: nodeObj,
    });
    const e = explain(snap, packet(POD, '10.96.0.10', 80));
    expect(e.excluded.map((x) => `${x.endpoint} ${x.reason}`)).toEqual([
      '10.244.0.7 no-such-port',
      '[fd00:244::2]:8080 wrong-family',
    ]);
  });

  it('internalTrafficPolicy Local: remote endpoints left out; none here → DROP', () => {
    const e = explain(webCluster({ internalTrafficPolicy: 'Local' }), packet(POD, '10.96.0.10', 80));
    expect(e.endpoints).toEqual(['10.244.0.2:8080']);
    expect(e.excluded).toEqual([
      { endpoint: '10.244.1.2:8080', reason: 'remote', detail: expect.stringContaining('node node-b') },
    ]);
    const none = explain(
      webCluster({ internalTrafficPolicy: 'Local' }, [remote('10.244.1.2')]),
      packet(POD, '10.96.0.10', 80),
    );
    expect(none).toMatchObject({ verdict: 'drop', service: 'default/web:http', route: 'internalTrafficPolicy Local' });
  });

  it('hairpin: a pod landing on itself is masqueraded; with other endpoints, only when it lands on itself', () => {
    const alone = explain(webCluster({}, [local('10.244.0.2')]), packet('10.244.0.2', '10.96.0.10', 80));
    expect(alone).toMatchObject({ verdict: 'dnat', hairpin: true, masquerade: true });
    const several = explain(webCluster(), packet('10.244.0.2', '10.96.0.10', 80));
    expect(several).toMatchObject({ hairpin: true, masquerade: false });
    expect(several.masqueradeReason).toContain('when it lands on itself');
    // nftables mode hairpins through local endpoints only, iptables mode through any.
    const remoteSelf = packet('10.244.1.2', '10.96.0.10', 80);
    const onlyRemote = webCluster({}, [remote('10.244.1.2')]);
    expect(explain(onlyRemote, remoteSelf, 'nftables').hairpin).toBe(false);
    expect(explain(onlyRemote, remoteSelf, 'iptables').hairpin).toBe(true);
  });

  it('ClientIP affinity is reported with its timeout', () => {
    const e = explain(webCluster({ sessionAffinityTimeoutSeconds: 600 }), packet(POD, '10.96.0.10', 80));
    expect(e.affinity).toEqual({ timeoutSeconds: 600 });
  });
});

describe('explain: what each mode intercepts', () => {
  it("a ClusterIP's unused port: REJECT in nftables mode, not intercepted in iptables mode", () => {
    const p = packet(POD, '10.96.0.10', 81);
    expect(explain(webCluster(), p, 'nftables')).toMatchObject({ verdict: 'reject', service: null });
    const ipt = explain(webCluster(), p, 'iptables');
    expect(ipt.verdict).toBe('none');
    expect(ipt.reason).toContain('has no TCP port 81');
  });

  it('an unallocated ServiceCIDR address: DROP in nftables mode, not intercepted in iptables mode; outside: none', () => {
    expect(explain(webCluster(), packet(POD, '10.96.0.200', 80), 'nftables').verdict).toBe('drop');
    expect(explain(webCluster(), packet(POD, '10.96.0.200', 80), 'iptables').verdict).toBe('none');
    expect(explain(webCluster(), packet(POD, '198.18.0.1', 80), 'nftables').verdict).toBe('none');
  });

  it('NodePorts: the primary IP in nftables mode; every local address in iptables mode', () => {
    const gateway = '10.244.0.1';
    const np = explain(webCluster(), packet(OUTSIDE, NODE_IP, 30080), 'nftables');
    expect(np).toMatchObject({ verdict: 'dnat', frontend: { kind: 'NodePort' }, masquerade: true });
    expect(np.masqueradeReason).toContain('externalTrafficPolicy Cluster');
    const nft = explain(webCluster(), packet(POD, gateway, 30080), 'nftables', {}, [gateway]);
    expect(nft.verdict).toBe('none');
    expect(nft.reason).toContain(`not on ${gateway}`);
    expect(explain(webCluster(), packet(POD, gateway, 30080), 'iptables', {}, [gateway]).verdict).toBe('dnat');
    // An address this node does not hold answers no NodePort, whatever the mode.
    expect(explain(webCluster(), packet(POD, gateway, 30080), 'iptables').verdict).toBe('none');
  });

  it('NodePorts on loopback: never in nftables mode; 127.0.0.1 with localhostNodePorts in iptables mode; never ::1', () => {
    const lo = packet('127.0.0.1', '127.0.0.1', 30080);
    expect(explain(webCluster(), lo, 'nftables').verdict).toBe('none');
    expect(explain(webCluster(), lo, 'iptables')).toMatchObject({ verdict: 'dnat', packet: { from: 'node' } });
    const off = explain(webCluster(), lo, 'iptables', { iptables: { localhostNodePorts: false, flavor: 'auto' } });
    expect(off.verdict).toBe('none');
    expect(off.reason).toContain('localhostNodePorts is off');
    const v6 = snapshot({
      services: [
        service('web', {
          clusterIPs: ['fd00:96::a'],
          ports: [{ name: 'http', protocol: 'TCP', port: 80, nodePort: 30080 }],
        }),
      ],
      slices: [slice('web', [local('fd00:244::2')])],
      node: nodeObj,
    });
    expect(explain(v6, packet('::1', '::1', 30080), 'iptables').verdict).toBe('none');
  });

  it('a NodePort without endpoints on an address NodePorts do not answer on: REJECT in iptables mode only', () => {
    const empty = webCluster({}, []);
    const p = packet(POD, '10.244.0.1', 30080);
    const ipt = explain(empty, p, 'iptables', { nodePortAddresses: { kind: 'primary' } }, ['10.244.0.1']);
    expect(ipt).toMatchObject({ verdict: 'reject', service: 'default/web:http' });
    expect(explain(empty, p, 'nftables', {}, ['10.244.0.1']).verdict).toBe('none');
  });
});

describe('explain: external traffic', () => {
  const lb = (init: Parameters<typeof service>[1] = {}, eps = [local('10.244.0.2'), remote('10.244.1.2')]) =>
    webCluster(
      {
        type: 'LoadBalancer',
        loadBalancerIPs: ['198.51.100.7'],
        externalTrafficPolicy: 'Local',
        ...init,
      },
      eps,
    );

  it('externalTrafficPolicy Local: outside → local endpoints, client kept; pods → every endpoint; the node → masqueraded', () => {
    const outside = explain(lb(), packet(OUTSIDE, '198.51.100.7', 80));
    expect(outside).toMatchObject({
      verdict: 'dnat',
      frontend: { kind: 'LoadBalancerIP' },
      endpoints: ['10.244.0.2:8080'],
      masquerade: false,
    });
    expect(outside.excluded.map((x) => x.reason)).toEqual(['remote']);
    expect(explain(lb(), packet(POD, '198.51.100.7', 80))).toMatchObject({
      endpoints: ['10.244.0.2:8080', '10.244.1.2:8080'],
      masquerade: false,
    });
    expect(explain(lb(), packet(NODE_IP, '198.51.100.7', 80))).toMatchObject({
      endpoints: ['10.244.0.2:8080', '10.244.1.2:8080'],
      masquerade: true,
      packet: { from: 'node' },
    });
  });

  it("IPVS mode: the node's own connection to an LB IP leaves from that kube-ipvs0 address: from the node", () => {
    // `ip route get` answers a local route with the address itself as source; nftables mode has no such address.
    const own = explain(lb(), packet('198.51.100.7', '198.51.100.7', 80), 'ipvs');
    expect(own).toMatchObject({ endpoints: ['10.244.0.2:8080', '10.244.1.2:8080'], masquerade: true });
    expect(own.packet).toMatchObject({
      from: 'node',
      fromReason: "198.51.100.7 is an address of default/web on this node's kube-ipvs0",
    });
    expect(explain(lb(), packet('198.51.100.7', '198.51.100.7', 80), 'nftables').packet.from).toBe('outside');
  });

  it('externalTrafficPolicy Local without a local endpoint: outside traffic DROPped', () => {
    const e = explain(lb({}, [remote('10.244.1.2')]), packet(OUTSIDE, NODE_IP, 30080));
    expect(e).toMatchObject({ verdict: 'drop', frontend: { kind: 'NodePort' } });
  });

  it('loadBalancerSourceRanges: other sources are dropped before DNAT; the NodePort is not filtered', () => {
    const ranged = lb({ externalTrafficPolicy: 'Cluster', loadBalancerSourceRanges: ['203.0.113.0/28'] });
    expect(explain(ranged, packet(OUTSIDE, '198.51.100.7', 80)).verdict).toBe('dnat');
    const denied = explain(ranged, packet('198.18.0.9', '198.51.100.7', 80));
    expect(denied).toMatchObject({ verdict: 'drop', service: 'default/web:http' });
    expect(denied.reason).toContain('loadBalancerSourceRanges');
    expect(explain(ranged, packet('198.18.0.9', NODE_IP, 30080)).verdict).toBe('dnat');
    // Without endpoints, nftables mode still checks the ranges first; iptables mode rejects.
    const empty = lb({ externalTrafficPolicy: 'Cluster', loadBalancerSourceRanges: ['203.0.113.0/28'] }, []);
    expect(explain(empty, packet('198.18.0.9', '198.51.100.7', 80), 'nftables').verdict).toBe('drop');
    expect(explain(empty, packet('198.18.0.9', '198.51.100.7', 80), 'iptables').verdict).toBe('reject');
  });

  it('externalIPs: DNAT with policy Cluster, masqueraded', () => {
    const e = explain(webCluster({ externalIPs: ['203.0.113.50'] }), packet(OUTSIDE, '203.0.113.50', 80));
    expect(e).toMatchObject({ verdict: 'dnat', frontend: { kind: 'ExternalIP' }, masquerade: true });
  });

  it('a frontend two Services claim belongs to the first by name, and says so', () => {
    const snap = snapshot({
      services: [
        service('b-second', { clusterIPs: ['10.96.0.11'], externalIPs: ['203.0.113.50'] }),
        service('a-first', { clusterIPs: ['10.96.0.12'], externalIPs: ['203.0.113.50'] }),
      ],
      slices: [slice('a-first', [local('10.244.0.2')]), slice('b-second', [local('10.244.0.3')])],
      node: nodeObj,
    });
    const e = explain(snap, packet(OUTSIDE, '203.0.113.50', 80));
    expect(e.service).toBe('default/a-first:http');
    expect(e.steps.join('\n')).toContain('also claimed by default/b-second:http');
  });
});

describe('explain: the packet', () => {
  it('--from defaults to what the source says: node address, pod range, else outside', () => {
    const snap = webCluster();
    expect(explain(snap, packet(NODE_IP, '10.96.0.10', 80)).packet.from).toBe('node');
    expect(explain(snap, packet('10.0.0.1', '10.96.0.10', 80), 'nftables', {}, ['10.0.0.1']).packet.from).toBe('node');
    expect(explain(snap, packet(POD, '10.96.0.10', 80)).packet.from).toBe('pod');
    expect(explain(snap, packet(OUTSIDE, '10.96.0.10', 80)).packet.from).toBe('outside');
    expect(explain(snap, packet(OUTSIDE, '10.96.0.10', 80, { from: 'pod' })).packet).toMatchObject({
      from: 'pod',
      fromReason: 'given with --from',
    });
  });

  it('source and destination of different families are refused', () => {
    expect(() => explain(webCluster(), packet(POD, 'fd00:96::a', 80))).toThrow(ExplainError);
  });

  it('the text output leads with the verdict and lists what was left out', () => {
    const text = explanationText(
      explain(webCluster({ internalTrafficPolicy: 'Local' }), packet(POD, '10.96.0.10', 80)),
    );
    expect(text).toMatch(/^packet .*\nverdict +DNAT\n/);
    expect(text).toContain('10.244.1.2:8080  remote: on node node-b');
  });
});

describe('the decision explain reads is the decision', () => {
  it('traceServicePortsOf yields exactly servicePortsOf for every Service and family', () => {
    const snap = snapshot({
      services: [
        service('web', { clusterIPs: ['10.96.0.10', 'fd00:96::a'], internalTrafficPolicy: 'Local' }),
        service('lb', {
          type: 'LoadBalancer',
          loadBalancerIPs: ['198.51.100.7'],
          externalTrafficPolicy: 'Local',
          ports: [
            { name: 'http', protocol: 'TCP', port: 80, nodePort: 30080 },
            { name: 'dns', protocol: 'UDP', port: 53, nodePort: 30053 },
          ],
        }),
        service('topo', { clusterIPs: ['10.96.0.12'] }),
      ],
      slices: [
        slice('web', [local('10.244.0.2'), remote('10.244.1.2'), terminating('10.244.1.3')]),
        slice('web', [local('fd00:244::2')]),
        slice(
          'lb',
          [remote('10.244.1.5'), ep('10.244.0.6', { node: NODE, ready: false, serving: true, terminating: true })],
          {
            ports: [
              { name: 'http', protocol: 'TCP', port: 8080 },
              { name: 'dns', protocol: 'UDP', port: 5353 },
            ],
          },
        ),
        slice('topo', [local('10.244.0.8', { forZones: ['zone-a'] }), remote('10.244.1.8', { forZones: ['zone-b'] })]),
      ],
      node: nodeObj,
    });
    const slices = groupSlices(snap.endpointSlices);
    for (const family of ['ipv4', 'ipv6'] as const)
      for (const s of snap.services) {
        const mine = slices.get(serviceKey(s)) ?? [];
        expect(traceServicePortsOf(s, mine, family, NODE, snap.node).map((t) => t.state)).toEqual(
          servicePortsOf(s, mine, family, NODE, snap.node),
        );
      }
  });
});
