/**
 * The behavioural suite: real TCP and UDP packets through real kernel rules in network
 * namespaces, IPv4 and IPv6, for every backend in backends.ts. Each flow states where the packets
 * must end up (which pods, or rejected / dropped / not intercepted) and whether the pod saw the
 * client's address or a masqueraded one.
 *
 * Topology (src/sandbox/topology.ts): a node; pods cli (a client pod with no endpoints), a, b
 * (on this node) and c, d (their EndpointSlices say node-b); outside clients ext (192.0.2.2) and
 * ext2 (192.0.2.3); the node IP is 192.0.2.1 / 2001:db8:1::1. Pods serve TCP 8080 and UDP 5353.
 *
 * Every flow is also explained (`kproxy explain` with the manifests and flags of the last sync,
 * test/flows/explain.ts): `explained(from, spec, outcome)` fails the flow when what explain says
 * (verdict, endpoints, masquerade) is not what the packets did.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProbeResult, ProbeSpec, Tally, Topology } from '../../src/sandbox/topology.ts';
import { createTopology, nthHost } from '../../src/sandbox/topology.ts';
import { BACKENDS, type SyncOutcome } from './backends.ts';
import type { Explanation } from '../../src/explain/explain.ts';
import { explainChecker } from './explain.ts';
import {
  CLUSTER_CIDR,
  FAMILIES,
  NODE,
  clusterIP,
  endpoints,
  externalIP,
  lbIP,
  nodeObjects,
  service,
  type EndpointSpec,
  type ServiceSpec,
} from './cluster.ts';

const TCP = 8080;
const UDP = 5353;
const IN_VM = process.env['KPROXY_IPVS_VM'] === '1';
// Inside the IPVS VM (test/ipvs/ipvs-vm.test.ts; software emulation) the namespaces' agents alone take minutes to start.
const SETUP_TIMEOUT_MS = IN_VM ? 600_000 : 60_000;
// There an agent's answer can take longer than the host's 400 ms probe timeout (1 probe of ~20 did
// once), and explain's cross-check holds every probe of a flow to the verdict: a drop is waited for longer.
const PROBE_TIMEOUT_MS = IN_VM ? 1500 : undefined;
const BASE_FLAGS = [`--hostname-override=${NODE}`, `--cluster-cidr=${CLUSTER_CIDR}`];

// ---------------------------------------------------------------------------------------------
// The cluster: one Service per behaviour, all programmed in one sync.

const http = (extra: Partial<ServiceSpec> & Pick<ServiceSpec, 'name' | 'index'>): ServiceSpec => ({
  ports: [{ name: 'http', port: 80, targetPort: TCP }],
  ...extra,
});

const S = {
  web: http({
    name: 'web',
    index: 10,
    ports: [
      { name: 'http', port: 80, targetPort: TCP, nodePort: 30010 },
      { name: 'dns', protocol: 'UDP', port: 53, targetPort: UDP },
    ],
  }),
  empty: http({
    name: 'empty',
    index: 11,
    externalIPs: true,
    ports: [
      { name: 'http', port: 80, targetPort: TCP, nodePort: 30011 },
      { name: 'dns', protocol: 'UDP', port: 53, targetPort: UDP },
    ],
  }),
  itpLocal: http({ name: 'itp-local', index: 12, internalTrafficPolicy: 'Local' }),
  itpLocalNone: http({ name: 'itp-local-none', index: 13, internalTrafficPolicy: 'Local' }),
  etpLocal: http({
    name: 'etp-local',
    index: 14,
    loadBalancer: true,
    externalTrafficPolicy: 'Local',
    ports: [{ name: 'http', port: 80, targetPort: TCP, nodePort: 30014 }],
  }),
  etpLocalNone: http({
    name: 'etp-local-none',
    index: 15,
    loadBalancer: true,
    externalTrafficPolicy: 'Local',
    ports: [{ name: 'http', port: 80, targetPort: TCP, nodePort: 30015 }],
  }),
  extIP: http({ name: 'external-ip', index: 16, externalIPs: true }),
  ranges: http({
    name: 'source-ranges',
    index: 17,
    loadBalancer: true,
    ports: [{ name: 'http', port: 80, targetPort: TCP, nodePort: 30017 }],
    // Only ext may reach the LB IP; ext2 may not.
    sourceRanges: (f) => (f === 'v4' ? ['192.0.2.2/32'] : ['2001:db8:1::2/128']),
  }),
  affinity: http({ name: 'affinity', index: 18, affinitySeconds: 600 }),
  terminating: http({ name: 'terminating', index: 19 }),
  topology: http({ name: 'topology', index: 20 }),
  hairpin: http({ name: 'hairpin', index: 21 }),
  otherProxy: http({
    name: 'other-proxy',
    index: 22,
    labels: { 'service.kubernetes.io/service-proxy-name': 'someone-else' },
  }),
  udp: { name: 'udp', index: 23, ports: [{ name: 'dns', protocol: 'UDP' as const, port: 53, targetPort: UDP }] },
} satisfies Record<string, ServiceSpec>;

function cluster(topo: Topology, overrides: Partial<Record<keyof typeof S, EndpointSpec[]>> = {}): object[] {
  const eps: Record<keyof typeof S, EndpointSpec[]> = {
    web: [{ pod: 'a' }, { pod: 'b' }, { pod: 'c' }],
    empty: [],
    itpLocal: [{ pod: 'a' }, { pod: 'c' }],
    itpLocalNone: [{ pod: 'c' }, { pod: 'd' }],
    etpLocal: [{ pod: 'a' }, { pod: 'c' }],
    etpLocalNone: [{ pod: 'c' }],
    extIP: [{ pod: 'a' }, { pod: 'c' }],
    ranges: [{ pod: 'a' }],
    affinity: [{ pod: 'a' }, { pod: 'b' }, { pod: 'c' }],
    terminating: [
      { pod: 'a', ready: false, serving: true, terminating: true },
      { pod: 'b', ready: false, serving: false, terminating: true },
    ],
    topology: [
      { pod: 'a', zoneHint: 'zone-a' },
      { pod: 'c', zoneHint: 'zone-b' },
    ],
    hairpin: [{ pod: 'a' }],
    otherProxy: [{ pod: 'a' }],
    udp: [{ pod: 'a' }],
    ...overrides,
  };
  const objects: object[] = [...nodeObjects(topo)];
  for (const key of Object.keys(S) as (keyof typeof S)[]) {
    objects.push(...service(S[key]), ...endpoints(topo, S[key], eps[key]));
  }
  return objects;
}

/** Malformed objects that travel with the good ones: each is reported and skipped. */
const BAD_OBJECTS: object[] = [
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'bad-ip', namespace: 'flows' },
    spec: { clusterIP: '10.96.0.300', ports: [{ port: 80 }] },
  },
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'bad-port', namespace: 'flows' },
    spec: { clusterIP: '10.96.0.30', ports: [{ port: 70000 }] },
  },
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'x"; flush ruleset', namespace: 'flows' },
    spec: { clusterIP: '10.96.0.31', ports: [{ port: 80 }] },
  },
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'bad-proto', namespace: 'flows' },
    spec: { clusterIP: '10.96.0.32', ports: [{ port: 80, protocol: 'ICMP' }] },
  },
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'huge', namespace: 'flows' },
    spec: {
      clusterIP: '10.96.0.33',
      ports: [{ port: 80 }],
      externalIPs: Array.from({ length: 10_000 }, (_, i) => `10.${i >> 8}.${i & 255}.1`),
    },
  },
  {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'no-label', namespace: 'flows' },
    addressType: 'IPv4',
    endpoints: [],
  },
];

// ---------------------------------------------------------------------------------------------
// Assertions on where packets end up.

function pods(t: Tally): string[] {
  return [...t.byPod.keys()].sort();
}

/** What explain left out of this family's endpoints, as `endpoint reason`. */
function sameFamilyExclusions(e: Explanation): string[] {
  return e.excluded.filter((x) => x.reason !== 'wrong-family').map((x) => `${x.endpoint} ${x.reason}`);
}

function expectAnswered(r: ProbeResult): asserts r is Extract<ProbeResult, { kind: 'answered' }> {
  expect(r.kind, JSON.stringify(r)).toBe('answered');
}

for (const backend of BACKENDS) {
  describe.skipIf(backend.skip !== undefined)(
    `packet flows through the ${backend.name} backend${backend.skip ? ` (skipped: ${backend.skip})` : ''}`,
    () => {
      let topo: Topology;
      let first: SyncOutcome;
      /**
       * Where a packet to a ServiceCIDR address no Service serves ends: nftables mode drops it (no
       * answer); upstream's iptables mode has no rule, so it is routed on to the node's default route,
       * whose upstream answers admin-prohibited ('error').
       */
      const unallocated = () => (backend.behaviour.dropsUnallocatedServiceIps ? 'timeout' : 'error');
      // Inside the IPVS VM each CLI start costs tens of seconds: explain answers in-process there.
      const explain = explainChecker(backend.mode, () => topo, IN_VM);
      const explained = explain.expectExplained;
      const sync = async (objects: readonly object[], flags: readonly string[] = []) => {
        const all = [...BASE_FLAGS, ...flags];
        const outcome = await backend.sync(topo, objects, all);
        await explain.synced(objects, all);
        return outcome;
      };

      beforeAll(async () => {
        topo = await createTopology({
          pods: [
            { name: 'cli', tcpPorts: [], udpPorts: [] },
            { name: 'a' },
            { name: 'b' },
            { name: 'c', local: false },
            { name: 'd', local: false },
          ],
          clients: [{ name: 'ext' }, { name: 'ext2' }],
          tcpPorts: [TCP],
          udpPorts: [UDP],
          ...(PROBE_TIMEOUT_MS ? { probeTimeoutMs: PROBE_TIMEOUT_MS } : {}),
        });
        // Something listening on the node itself: traffic kproxy does not intercept lands here.
        await topo.serve(topo.node, { tcp: [30010, 30014], udp: [] });
        first = await sync([...cluster(topo), ...BAD_OBJECTS]);
      }, SETUP_TIMEOUT_MS);
      afterAll(async () => {
        await explain.close();
        await topo?.destroy();
      });

      it('the sync succeeds, and every malformed object is reported by name and skipped', () => {
        expect(first.exitCode, JSON.stringify(first.log)).toBe(0);
        const warnings = first.log
          .filter((l) => l['msg'] !== undefined && String(l['msg']).startsWith('skipped:'))
          .map((l) => String(l['msg']));
        for (const name of ['bad-ip', 'bad-port', 'flush ruleset', 'bad-proto', 'huge', 'no-label']) {
          expect(
            warnings.some((w) => w.includes(name)),
            `no warning naming ${name} in ${warnings.join('\n')}`,
          ).toBe(true);
        }
      });

      for (const fam of FAMILIES) {
        describe(fam === 'v4' ? 'IPv4' : 'IPv6', () => {
          const cip = (s: ServiceSpec) => clusterIP(s.index, fam);
          const tcp = (host: string, port = 80): ProbeSpec => ({ proto: 'tcp', host, port });
          const udp = (host: string, port = 53): ProbeSpec => ({ proto: 'udp', host, port });
          const nodeIP = () => topo.node[fam];
          const from = (name: string) =>
            name === 'node' ? topo.node : name.startsWith('ext') ? topo.client(name) : topo.pod(name);
          const endpointOf = (pod: string, f: typeof fam) =>
            f === 'v4' ? `${topo.pod(pod).v4}:${TCP}` : `[${topo.pod(pod).v6}]:${TCP}`;

          it('ClusterIP from a pod reaches every endpoint, TCP and UDP, with the pod address kept', async () => {
            const t = await topo.probeCovering(from('cli'), tcp(cip(S.web)), ['a', 'b', 'c']);
            expect(pods(t)).toEqual(['a', 'b', 'c']);
            expect([...t.byPeer.keys()]).toEqual([topo.pod('cli')[fam]]);
            await explained(from('cli'), tcp(cip(S.web)), t);
            const u = await topo.probeCovering(from('cli'), udp(cip(S.web)), ['a', 'b', 'c']);
            expect(pods(u)).toEqual(['a', 'b', 'c']);
            await explained(from('cli'), udp(cip(S.web)), u);
          });

          it('ClusterIP from outside the cluster CIDR (an outside client, the node) is masqueraded', async () => {
            for (const who of ['ext', 'node']) {
              const r = await topo.probe(from(who), tcp(cip(S.web)));
              expectAnswered(r);
              expect(topo.peerIsNode(r), who).toBe(true);
              await explained(from(who), tcp(cip(S.web)), r);
            }
          });

          it('a ClusterIP port the Service does not have is rejected (nftables) or routed on (iptables)', async () => {
            // Upstream's iptables mode has no rule for a ClusterIP's other ports: the packet is routed
            // on like any other, here to the node's default route (the sandbox's upstream answers
            // admin-prohibited, which the probe reports as 'error').
            const wrongPort = await topo.probe(from('cli'), tcp(cip(S.web), 81));
            expect(wrongPort.kind).toBe(backend.behaviour.rejectsUnusedClusterIpPorts ? 'rejected' : 'error');
            await explained(from('cli'), tcp(cip(S.web), 81), wrongPort);
          });

          it('an unallocated ServiceCIDR address is dropped (nftables) or routed on (iptables)', async () => {
            const r = await topo.probe(from('cli'), tcp(clusterIP(200, fam)));
            expect(r.kind).toBe(unallocated());
            await explained(from('cli'), tcp(clusterIP(200, fam)), r);
          });

          it('NodePort on the primary node IP reaches the endpoints, masqueraded; other node addresses per the mode', async () => {
            const t = await topo.probeCovering(from('ext'), tcp(nodeIP(), 30010), ['a', 'b', 'c']);
            expect(pods(t)).toEqual(['a', 'b', 'c']);
            expect([...t.byPeer.keys()].every((p) => topo.nodeAddresses().includes(p))).toBe(true);
            await explained(from('ext'), tcp(nodeIP(), 30010), t);
            // The pod-gateway address is a node address too, but not the primary node IP: upstream's
            // iptables mode answers NodePorts on every local address, nftables mode on the primary IPs.
            const other = await topo.probe(from('cli'), tcp(nthHost(topo.podCidr[fam], 1), 30010));
            expectAnswered(other);
            if (backend.behaviour.nodePortsOnEveryLocalAddress) expect(['a', 'b', 'c']).toContain(other.pod);
            else expect(other.pod).toBe('node');
            await explained(from('cli'), tcp(nthHost(topo.podCidr[fam], 1), 30010), other);
          });

          it('NodePort on loopback from the node: answered only with iptables.localhostNodePorts (IPv4 only)', async () => {
            const r = await topo.probe(from('node'), tcp(fam === 'v4' ? '127.0.0.1' : '::1', 30010));
            expectAnswered(r);
            // The node itself listens on 30010: a NodePort that is not intercepted lands there.
            if (backend.behaviour.localhostNodePorts && fam === 'v4') expect(['a', 'b', 'c']).toContain(r.pod);
            else expect(r.pod).toBe('node');
            await explained(from('node'), tcp(fam === 'v4' ? '127.0.0.1' : '::1', 30010), r);
          });

          it('a Service with no endpoints rejects on its ClusterIP (TCP, UDP), NodePort and externalIP', async () => {
            const flows: [string, ProbeSpec][] = [
              ['cli', tcp(cip(S.empty))],
              ['cli', udp(cip(S.empty))],
              ['ext', tcp(nodeIP(), 30011)],
              ['ext', tcp(externalIP(S.empty.index, fam))],
            ];
            for (const [who, spec] of flows) {
              const r = await topo.probe(from(who), spec);
              expect(r.kind).toBe('rejected');
              await explained(from(who), spec, r);
            }
          });

          it('internalTrafficPolicy Local: only local endpoints; none local → dropped', async () => {
            const t = await topo.probeMany(from('cli'), tcp(cip(S.itpLocal)), 12);
            expect(pods(t)).toEqual(['a']);
            await explained(from('cli'), tcp(cip(S.itpLocal)), t);
            const none = await topo.probe(from('cli'), tcp(cip(S.itpLocalNone)));
            expect(none.kind).toBe('timeout');
            await explained(from('cli'), tcp(cip(S.itpLocalNone)), none);
          });

          it('externalTrafficPolicy Local: outside clients reach local endpoints with their address kept', async () => {
            const lb = await topo.probeMany(from('ext'), tcp(lbIP(S.etpLocal.index, fam)), 12);
            expect(pods(lb)).toEqual(['a']);
            expect([...lb.byPeer.keys()]).toEqual([topo.client('ext')[fam]]);
            await explained(from('ext'), tcp(lbIP(S.etpLocal.index, fam)), lb);
            const np = await topo.probeMany(from('ext'), tcp(nodeIP(), 30014), 12);
            expect(pods(np)).toEqual(['a']);
            expect([...np.byPeer.keys()]).toEqual([topo.client('ext')[fam]]);
            await explained(from('ext'), tcp(nodeIP(), 30014), np);
          });

          it('externalTrafficPolicy Local: pods short-circuit to all endpoints unmasqueraded, the node is masqueraded', async () => {
            const p = await topo.probeCovering(from('cli'), tcp(lbIP(S.etpLocal.index, fam)), ['a', 'c']);
            expect(pods(p)).toEqual(['a', 'c']);
            expect([...p.byPeer.keys()]).toEqual([topo.pod('cli')[fam]]);
            await explained(from('cli'), tcp(lbIP(S.etpLocal.index, fam)), p);
            const n = await topo.probe(from('node'), tcp(lbIP(S.etpLocal.index, fam)));
            expectAnswered(n);
            expect(topo.peerIsNode(n)).toBe(true);
            await explained(from('node'), tcp(lbIP(S.etpLocal.index, fam)), n);
          });

          it('externalTrafficPolicy Local with no local endpoint: outside traffic dropped, pods still served', async () => {
            const lb = await topo.probe(from('ext'), tcp(lbIP(S.etpLocalNone.index, fam)));
            expect(lb.kind).toBe('timeout');
            await explained(from('ext'), tcp(lbIP(S.etpLocalNone.index, fam)), lb);
            const np = await topo.probe(from('ext'), tcp(nodeIP(), 30015));
            expect(np.kind).toBe('timeout');
            await explained(from('ext'), tcp(nodeIP(), 30015), np);
            const p = await topo.probe(from('cli'), tcp(lbIP(S.etpLocalNone.index, fam)));
            expectAnswered(p);
            expect(p.pod).toBe('c');
            await explained(from('cli'), tcp(lbIP(S.etpLocalNone.index, fam)), p);
          });

          it('externalIP with policy Cluster reaches every endpoint, masqueraded', async () => {
            const t = await topo.probeCovering(from('ext'), tcp(externalIP(S.extIP.index, fam)), ['a', 'c']);
            expect(pods(t)).toEqual(['a', 'c']);
            expect([...t.byPeer.keys()].every((p) => topo.nodeAddresses().includes(p))).toBe(true);
            await explained(from('ext'), tcp(externalIP(S.extIP.index, fam)), t);
          });

          it('loadBalancerSourceRanges: an allowed client reaches the LB IP, another is dropped, NodePort is not filtered', async () => {
            const ok = await topo.probe(from('ext'), tcp(lbIP(S.ranges.index, fam)));
            expectAnswered(ok);
            await explained(from('ext'), tcp(lbIP(S.ranges.index, fam)), ok);
            const denied = await topo.probe(from('ext2'), tcp(lbIP(S.ranges.index, fam)));
            expect(denied.kind).toBe('timeout');
            await explained(from('ext2'), tcp(lbIP(S.ranges.index, fam)), denied);
            const np = await topo.probe(from('ext2'), tcp(nodeIP(), 30017));
            expectAnswered(np);
            await explained(from('ext2'), tcp(nodeIP(), 30017), np);
          });

          it('ClientIP affinity: every connection of a client lands on one endpoint', async () => {
            for (const who of ['cli', 'ext']) {
              const t = await topo.probeMany(from(who), tcp(cip(S.affinity)), 15);
              expect(t.answered, who).toBe(15);
              expect(t.byPod.size, `${who}: ${JSON.stringify([...t.byPod])}`).toBe(1);
              const e = await explained(from(who), tcp(cip(S.affinity)), t);
              expect(e.affinity).toEqual({ timeoutSeconds: 600 });
            }
          });

          it('with no ready endpoint, serving-terminating endpoints are used (not-serving ones never)', async () => {
            const t = await topo.probeMany(from('cli'), tcp(cip(S.terminating)), 10);
            expect(pods(t)).toEqual(['a']);
            const e = await explained(from('cli'), tcp(cip(S.terminating)), t);
            expect(sameFamilyExclusions(e)).toEqual([`${endpointOf('b', fam)} not-serving`]);
          });

          it('topology hints: zone hints matching this node keep traffic in the zone', async () => {
            const t = await topo.probeMany(from('cli'), tcp(cip(S.topology)), 12);
            expect(pods(t)).toEqual(['a']);
            const e = await explained(from('cli'), tcp(cip(S.topology)), t);
            expect(sameFamilyExclusions(e)).toEqual([`${endpointOf('c', fam)} other-zone`]);
          });

          it('hairpin: a pod reaching its own Service and landing on itself is masqueraded', async () => {
            const r = await topo.probe(from('a'), tcp(cip(S.hairpin)));
            expectAnswered(r);
            expect(r.pod).toBe('a');
            expect(topo.wasMasqueraded(r, from('a'))).toBe(true);
            const e = await explained(from('a'), tcp(cip(S.hairpin)), r);
            expect(e.hairpin).toBe(true);
          });

          it('a Service labelled for another proxy gets no rules (its address is treated as unallocated)', async () => {
            const r = await topo.probe(from('cli'), tcp(cip(S.otherProxy)));
            expect(r.kind).toBe(unallocated());
            await explained(from('cli'), tcp(cip(S.otherProxy)), r);
          });
        });
      }

      describe('changes', () => {
        it('a second sync with nothing changed writes nothing', async () => {
          const again = await sync([...cluster(topo), ...BAD_OBJECTS]);
          expect(again.exitCode).toBe(0);
          expect(
            again.log.find((l) => l['msg'] === 'kernel already up to date'),
            JSON.stringify(again.log),
          ).toBeDefined();
        });

        it('UDP: after an endpoint change (and a scale to zero) the same client flow follows, stale conntrack removed', async () => {
          for (const fam of FAMILIES) {
            const flow: ProbeSpec = { proto: 'udp', host: clusterIP(S.udp.index, fam), port: 53, sourcePort: 40_053 };
            const before = await topo.probe(topo.pod('cli'), flow);
            expectAnswered(before);
            expect(before.pod).toBe('a');
          }
          const moved = await sync(cluster(topo, { udp: [{ pod: 'b' }] }));
          expect(moved.exitCode).toBe(0);
          for (const fam of FAMILIES) {
            const flow: ProbeSpec = { proto: 'udp', host: clusterIP(S.udp.index, fam), port: 53, sourcePort: 40_053 };
            const after = await topo.probe(topo.pod('cli'), flow);
            expectAnswered(after);
            expect(after.pod, fam).toBe('b');
            await explained(topo.pod('cli'), flow, after);
          }
          const zero = await sync(cluster(topo, { udp: [] }));
          expect(zero.exitCode).toBe(0);
          for (const fam of FAMILIES) {
            const flow: ProbeSpec = { proto: 'udp', host: clusterIP(S.udp.index, fam), port: 53, sourcePort: 40_053 };
            const r = await topo.probe(topo.pod('cli'), flow);
            expect(r.kind, fam).toBe('rejected');
            await explained(topo.pod('cli'), flow, r);
          }
        });

        it('masqueradeAll masquerades pod traffic to ClusterIPs too', async () => {
          expect((await sync(cluster(topo), ['--masquerade-all'])).exitCode).toBe(0);
          for (const fam of FAMILIES) {
            const flow: ProbeSpec = { proto: 'tcp', host: clusterIP(S.web.index, fam), port: 80 };
            const r = await topo.probe(topo.pod('cli'), flow);
            expectAnswered(r);
            expect(topo.wasMasqueraded(r, topo.pod('cli')), fam).toBe(true);
            await explained(topo.pod('cli'), flow, r);
          }
        });

        it('detect-local InterfaceNamePrefix: pods (by interface) keep their address, outside clients are masqueraded', async () => {
          const podIfacePrefix = `kp${topo.id}p`;
          const r = await sync(cluster(topo), [
            '--detect-local-mode=InterfaceNamePrefix',
            `--pod-interface-name-prefix=${podIfacePrefix}`,
          ]);
          expect(r.exitCode, JSON.stringify(r.log)).toBe(0);
          for (const fam of FAMILIES) {
            const pod = await topo.probe(topo.pod('cli'), {
              proto: 'tcp',
              host: clusterIP(S.web.index, fam),
              port: 80,
            });
            expectAnswered(pod);
            expect(topo.wasMasqueraded(pod, topo.pod('cli')), fam).toBe(false);
            await explained(topo.pod('cli'), { proto: 'tcp', host: clusterIP(S.web.index, fam), port: 80 }, pod);
            const ext = await topo.probe(topo.client('ext'), {
              proto: 'tcp',
              host: clusterIP(S.web.index, fam),
              port: 80,
            });
            expectAnswered(ext);
            expect(topo.wasMasqueraded(ext, topo.client('ext')), fam).toBe(true);
            await explained(topo.client('ext'), { proto: 'tcp', host: clusterIP(S.web.index, fam), port: 80 }, ext);
          }
        });

        it('nodePortAddresses all: NodePorts answer on every node address', async () => {
          expect((await sync(cluster(topo), ['--nodeport-addresses=all'])).exitCode).toBe(0);
          const r = await topo.probe(topo.pod('cli'), { proto: 'tcp', host: '10.244.0.1', port: 30010 });
          expectAnswered(r);
          expect(['a', 'b', 'c']).toContain(r.pod);
          await explained(topo.pod('cli'), { proto: 'tcp', host: '10.244.0.1', port: 30010 }, r);
        });

        it("all Services deleted: their addresses stop answering; cleanup removes kproxy's rules", async () => {
          expect((await sync(nodeObjects(topo))).exitCode).toBe(0);
          const gone: ProbeSpec = { proto: 'tcp', host: clusterIP(S.web.index, 'v4'), port: 80 };
          const r = await topo.probe(topo.pod('cli'), gone);
          expect(r.kind).toBe(unallocated());
          await explained(topo.pod('cli'), gone, r);
          expect(await backend.hasRules(topo)).toBe(true);
          expect((await backend.cleanup(topo)).exitCode).toBe(0);
          expect(await backend.hasRules(topo)).toBe(false);
        });
      });
    },
  );
}
