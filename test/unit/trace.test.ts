/**
 * kproxy trace, pure: the trace tables' rules, `nft monitor` lines (nft 1.0.6's text) parsed and
 * grouped per packet, and a packet mapped back to the Service port, frontend and endpoint. The
 * live trace, against real packets and explain, is test/flows/trace.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { describeTrace, tracedPacketText } from '../../src/backends/nftables/trace/describe.ts';
import { parseTraceLine, type TraceLine, TraceGrouper } from '../../src/backends/nftables/trace/events.ts';
import { traceTableCommands } from '../../src/backends/nftables/trace/table.ts';
import { servicePortNames } from '../../src/backends/nftables/render/names.ts';
import { transactionText } from '../../src/backends/nftables/render/ruleset.ts';
import { buildNodeState } from '../../src/model/build-node-state.ts';
import type { ServicePortState } from '../../src/model/node-state.ts';
import { local, node, options, service, slice, snapshot } from '../support/cluster-builders.ts';

const snap = snapshot({
  services: [
    service('web', { type: 'NodePort', ports: [{ name: 'http', protocol: 'TCP', port: 80, nodePort: 30080 }] }),
    service('other', { clusterIPs: ['10.96.0.11'] }),
  ],
  slices: [slice('web', [local('10.244.0.2')], { name: 'web-abc' })],
  node: node(),
});
const state = buildNodeState(snap, 'ipv4', options());
const ports = state.servicePorts.filter((sp) => sp.ref.name === 'web');

const SVC = servicePortNames(ports[0] as ServicePortState).svc;
const trace = (rest: string) => `trace id 2b9eafbb ip ${rest}`;
const DNAT = [
  trace(
    'kproxy-trace prerouting packet: iif "eth0" ip saddr 10.244.0.7 ip daddr 10.96.0.10 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 1 ip length 60 tcp sport 40000 tcp dport 80 tcp flags == syn tcp window 64240 ',
  ),
  trace(
    'kproxy-trace prerouting rule ct state new ip daddr . meta l4proto . th dport { 10.96.0.10 . tcp . 80 } meta nftrace set 1 comment "kproxy trace default/web" (verdict continue)',
  ),
  trace('kproxy-trace prerouting policy accept '),
  trace(
    'kproxy filter-prerouting packet: iif "eth0" ip saddr 10.244.0.7 ip daddr 10.96.0.10 tcp sport 40000 tcp dport 80',
  ),
  trace('kproxy filter-prerouting policy accept meta mark 0x00004000 '),
  trace('kproxy services rule ip daddr . meta l4proto . th dport vmap @service-ips (verdict goto SVC)'),
  trace('kproxy SVC rule meta l4proto tcp dnat to 10.244.0.2:8080 comment "sum:abc" (verdict accept)'),
  // The next base chain shows the rewritten headers: the endpoint, whether the rule named it or a map did.
  trace(
    'kproxy filter-forward packet: iif "eth0" oif "veth1" ip saddr 10.244.0.7 ip daddr 10.244.0.2 tcp sport 40000 tcp dport 8080',
  ),
  trace('kproxy filter-forward policy accept'),
].map((l) => l.replaceAll('SVC', SVC));

function lines(texts: readonly string[]): TraceLine[] {
  return texts.map(parseTraceLine).filter((l): l is TraceLine => l !== undefined);
}

describe('kproxy trace (pure)', () => {
  it('the trace tables: new connections to the frontends get nftrace, at prerouting and output, both families', () => {
    const v6 = buildNodeState(snap, 'ipv6', options());
    const text = transactionText(traceTableCommands([state, v6], 'default/web'));
    expect(text).toContain(
      'add rule ip kproxy-trace prerouting ct state new ip daddr . meta l4proto . th dport { 10.96.0.10 . tcp . 80 } meta nftrace set 1 comment "kproxy trace default/web"',
    );
    expect(text).toContain(
      'add rule ip kproxy-trace output ct state new fib daddr type local meta l4proto . th dport { tcp . 30080 } meta nftrace set 1 comment "kproxy trace default/web"',
    );
    // Owned by the session that adds it, emptied when applied again; other Services are not traced.
    expect(text.split('\n').slice(0, 3)).toEqual([
      'add table ip kproxy-trace { flags owner ; }',
      'delete table ip kproxy-trace',
      'add table ip kproxy-trace { flags owner ; }',
    ]);
    expect(text).not.toContain('10.96.0.11');
    expect(text).toContain('add table ip6 kproxy-trace');
  });

  it('parses trace lines (the verdict without the meta data nft appends) and nothing else', () => {
    const [packet, rule, policy] = lines(DNAT);
    expect(packet).toMatchObject({ id: '2b9eafbb', family: 'ip', table: 'kproxy-trace', kind: 'packet' });
    expect(rule).toMatchObject({ kind: 'rule', verdict: 'continue' });
    expect(policy).toMatchObject({ kind: 'policy', verdict: 'accept' });
    expect(lines(DNAT)[4]).toMatchObject({ kind: 'policy', verdict: 'accept' });
    expect(lines(DNAT)[5]).toMatchObject({ verdict: `goto ${SVC}` });
    expect(lines(DNAT)[7]).toMatchObject({ kind: 'packet', chain: 'filter-forward' });
    expect(parseTraceLine('add table ip kproxy-trace')).toBeUndefined();
  });

  it('groups lines per packet: a start in the trace table begins one; lines without a start are ignored', () => {
    const done: TraceLine[][] = [];
    const g = new TraceGrouper((l) => done.push([...l]), 60_000);
    for (const l of lines(['trace id 99999999 ip kproxy services rule reject (verdict drop)', ...DNAT])) g.add(l);
    expect(done).toHaveLength(0);
    // The kernel reused the id for a new packet: the first one is complete.
    g.add(lines(DNAT)[0] as TraceLine);
    expect(done.map((d) => d.length)).toEqual([DNAT.length]);
    g.flush();
    expect(done.map((d) => d.length)).toEqual([DNAT.length, 1]);
  });

  it('maps a packet back to the Service port, frontend, endpoint (slice, node) and verdict', () => {
    const t = describeTrace(lines(DNAT), ports, snap);
    expect(t).toMatchObject({
      id: '2b9eafbb',
      family: 'ipv4',
      packet: { src: '10.244.0.7', dst: '10.96.0.10', protocol: 'TCP', srcPort: 40000, dstPort: 80, iif: 'eth0' },
      verdict: 'dnat',
      service: 'default/web:http',
      frontend: { kind: 'ClusterIP', address: '10.96.0.10', port: 80, protocol: 'TCP' },
      endpoint: '10.244.0.2:8080',
      endpointSlice: 'default/web-abc',
      endpointNode: 'node-a',
      masquerade: false,
    });
    // The trace table's own lines are left out of the steps; the fingerprint comment out of the text.
    expect(t.steps.map((s) => s.chain)).toEqual(['filter-prerouting', 'services', SVC, 'filter-forward']);
    expect(tracedPacketText(t)).toContain(`kproxy ${SVC}: meta l4proto tcp dnat to 10.244.0.2:8080 → accept`);
  });

  it('a REJECT, and a packet kproxy lets pass: their verdicts in explain words', () => {
    const start = DNAT.slice(0, 1);
    const reject = [...start, trace('kproxy reject-chain rule reject (verdict drop)')];
    expect(describeTrace(lines(reject), ports, snap)).toMatchObject({ verdict: 'reject', endpoint: null });
    const drop = [...start, trace('kproxy cluster-ips-check rule ip daddr @service-cidrs drop (verdict drop)')];
    expect(describeTrace(lines(drop), ports, snap).verdict).toBe('drop');
    expect(describeTrace(lines([...start, trace('kproxy filter-forward policy accept')]), ports, snap).verdict).toBe(
      'none',
    );
  });
});
