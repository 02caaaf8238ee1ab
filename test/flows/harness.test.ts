// Self-test of the flow-test harness: real namespaces, a hand-written nftables ruleset in the node
// namespace, real TCP/UDP traffic classified as answered / rejected / timeout / error.
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  formatTally,
  harnessNamespaces,
  run,
  sweepLeftovers,
  type ProbeResult,
  type Topology,
} from '../../src/sandbox/topology.ts';
import { useTopology } from '../support/topology-vitest.ts';

const SVC = { v4: '10.96.0.10', v6: 'fd00:96::10' }; // DNAT, no masquerade
const SVC_MASQ = { v4: '10.96.0.11', v6: 'fd00:96::11' }; // DNAT + masquerade (mark)
const UNASSIGNED = { v4: '10.96.0.99', v6: 'fd00:96::99' };

function ruleset(t: Topology): string {
  const [a, b, c] = t.pods;
  if (!a || !b || !c) throw new Error('need 3 pods');
  const map4 = `{ 0 : ${a.v4}, 1 : ${b.v4}, 2 : ${c.v4} }`;
  const map6 = `{ 0 : ${a.v6}, 1 : ${b.v6}, 2 : ${c.v6} }`;
  return `
table inet kptest {
  chain services {
    ip daddr ${SVC.v4} tcp dport 80 dnat ip to numgen inc mod 3 map ${map4}
    ip daddr ${SVC.v4} udp dport 53 dnat ip to numgen inc mod 3 map ${map4}
    ip6 daddr ${SVC.v6} tcp dport 80 dnat ip6 to numgen inc mod 3 map ${map6}
    ip6 daddr ${SVC.v6} udp dport 53 dnat ip6 to numgen inc mod 3 map ${map6}
    ip daddr ${SVC_MASQ.v4} tcp dport 80 meta mark set 0x4000 dnat ip to numgen inc mod 3 map ${map4}
    ip6 daddr ${SVC_MASQ.v6} tcp dport 80 meta mark set 0x4000 dnat ip6 to numgen inc mod 3 map ${map6}
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }
  chain output {
    type nat hook output priority -100; policy accept;
    jump services
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    meta mark 0x4000 masquerade
  }
  chain filter {
    ip daddr ${SVC.v4} th dport 81 reject
    ip6 daddr ${SVC.v6} th dport 81 reject
    ip daddr ${SVC.v4} th dport 82 drop
    ip6 daddr ${SVC.v6} th dport 82 drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    jump filter
  }
  chain filter-output {
    type filter hook output priority filter; policy accept;
    jump filter
  }
}
`;
}

function expectAnswered(r: ProbeResult): asserts r is Extract<ProbeResult, { kind: 'answered' }> {
  expect(r.kind, JSON.stringify(r)).toBe('answered');
}

describe('flow-test harness', () => {
  const topo = useTopology({ pods: 3, clients: 1 });
  beforeAll(async () => {
    await topo().loadRuleset(ruleset(topo()));
  });

  it('builds fast, dual stack, with pods reachable directly', async () => {
    const t = topo();
    expect(t.pods.map((p) => p.name)).toEqual(['pod0', 'pod1', 'pod2']);
    expect(t.pods.map((p) => p.v4)).toEqual(['10.244.0.2', '10.244.0.3', '10.244.0.4']);
    expect(await t.liveAddresses(t.client())).toEqual(expect.arrayContaining([t.client().v4, t.client().v6]));
    for (const p of t.pods) {
      for (const host of [p.v4, p.v6]) {
        const r = await t.probe(t.client(), { proto: 'tcp', host, port: 80 });
        expectAnswered(r);
        expect(r.pod).toBe(p.name);
        expect(r.peer).toBe(host === p.v4 ? t.client().v4 : t.client().v6);
        expect(t.wasMasqueraded(r, t.client())).toBe(false);
      }
    }
  });

  for (const fam of ['v4', 'v6'] as const) {
    for (const proto of ['tcp', 'udp'] as const) {
      it(`load-balances ${proto} over ${fam} to all three pods (client, node, pod as clients)`, async () => {
        const t = topo();
        const port = proto === 'tcp' ? 80 : 53;
        for (const from of [t.client(), t.node]) {
          const tally = await t.probeMany(from, { proto, host: SVC[fam], port }, 30);
          expect(tally.answered, formatTally(tally)).toBe(30);
          expect([...tally.byPod.keys()].sort(), formatTally(tally)).toEqual(['pod0', 'pod1', 'pod2']);
          // No masquerade: the pods see the client's own address (the node's for node-local traffic).
          const expectedPeer = from === t.node ? t.node[fam] : t.client()[fam];
          expect([...tally.byPeer.keys()], formatTally(tally)).toEqual([expectedPeer]);
        }
      });
    }

    it(`classifies reject and drop over ${fam} (tcp and udp)`, async () => {
      const t = topo();
      for (const proto of ['tcp', 'udp'] as const) {
        const rej = await t.probeMany(t.client(), { proto, host: SVC[fam], port: 81 }, 10);
        expect(rej.rejected, `${proto} reject: ${formatTally(rej)}`).toBe(10);
        const drop = await t.probeMany(t.client(), { proto, host: SVC[fam], port: 82, timeoutMs: 300 }, 4);
        expect(drop.timeout, `${proto} drop: ${formatTally(drop)}`).toBe(4);
      }
      // Node-local traffic hits the same filter via the output hook.
      expect((await t.probe(t.node, { proto: 'tcp', host: SVC[fam], port: 81 })).kind).toBe('rejected');
      // Not DNATed at all: routed to the upstream, which answers with ICMP admin-prohibited.
      const un = await t.probe(t.client(), { proto: 'tcp', host: UNASSIGNED[fam], port: 80 });
      expect(un.kind, JSON.stringify(un)).toBe('error');
    });

    it(`detects masquerade over ${fam}, including pod hairpin`, async () => {
      const t = topo();
      const tally = await t.probeMany(t.client(), { proto: 'tcp', host: SVC_MASQ[fam], port: 80 }, 6);
      expect(tally.answered, formatTally(tally)).toBe(6);
      expect([...tally.byPeer.keys()]).toEqual([t.node.podGateway[fam]]);
      const first = tally.results[0];
      if (first === undefined) throw new Error('no result');
      expect(t.wasMasqueraded(first, t.client())).toBe(true);
      expect(t.peerIsNode(first)).toBe(true);

      // A pod reaching the service lands on itself once in three: works only because of masquerade.
      const pod0 = t.pod('pod0');
      const hair = await t.probeMany(pod0, { proto: 'tcp', host: SVC_MASQ[fam], port: 80 }, 6);
      expect(hair.answered, formatTally(hair)).toBe(6);
      expect(hair.byPod.get('pod0'), formatTally(hair)).toBeGreaterThan(0);
      // Without masquerade the hairpin leg fails (IPv4: martian source dropped by the pod), while
      // the two probes that land on the other pods are answered (inc mod 3: one each).
      const plain = await t.probeMany(pod0, { proto: 'tcp', host: SVC[fam], port: 80 }, 3, { concurrency: 1 });
      expect(plain.answered, formatTally(plain)).toBe(2);
      expect(plain.byPod.has('pod0'), formatTally(plain)).toBe(false);
    });
  }

  it('keeps source ports when asked and serves from the node too', async () => {
    const t = topo();
    const r = await t.probe(t.client(), { proto: 'udp', host: t.pods[1]!.v4, port: 53, sourcePort: 40123 });
    expectAnswered(r);
    expect(r.peerPort).toBe(40123);
    await t.serve(t.node, { tcp: [9000] });
    const n = await t.probe(t.client(), { proto: 'tcp', host: t.node.v6, port: 9000 });
    expectAnswered(n);
    expect(n.pod).toBe('node');
    await t.unserve(t.pods[2]!, { tcp: [8080] });
    expect((await t.probe(t.client(), { proto: 'tcp', host: t.pods[2]!.v4, port: 8080 })).kind).toBe('rejected');
  });
});

describe('flow-test harness lifecycle', () => {
  it('destroy() removes every namespace and agent, and is idempotent', async () => {
    const { createTopology } = await import('../../src/sandbox/topology.ts');
    const t = await createTopology({ pods: 1 });
    const pids = [t.agent(t.pods[0]!).pid, t.agent(t.client()).pid];
    expect((await harnessNamespaces()).filter((n) => n.startsWith(`${t.prefix}-`)).length).toBe(4);
    await Promise.all([t.destroy(), t.destroy()]);
    await t.destroy();
    expect((await harnessNamespaces()).filter((n) => n.startsWith(`${t.prefix}-`))).toEqual([]);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });

  it('sweeps namespaces left behind by dead processes', async () => {
    const child = execa('true');
    const pid = child.pid;
    await child;
    if (pid === undefined) throw new Error('no pid');
    const leftover = `kpt${pid}s0zz-node`;
    await run('ip', ['netns', 'add', leftover]);
    try {
      expect(await sweepLeftovers()).toContain(leftover);
      expect(await harnessNamespaces()).not.toContain(leftover);
    } finally {
      await run('ip', ['netns', 'del', leftover], { allowFailure: true });
    }
  });
});
