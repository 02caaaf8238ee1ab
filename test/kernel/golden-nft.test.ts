/**
 * Every golden case's ruleset must load into a real kernel (a throw-away network namespace): the
 * golden text test (test/golden.test.ts) proves the text is what we reviewed, this proves nft and
 * the kernel accept it. Plus the overlapping-interval inputs that the kernel rejects today.
 *
 * Each loaded table is then read back both ways a sync reads it — `nft -j list table`, and the
 * netlink dump served by the spawner's child (kernel/netlink-dump.ts) — which must agree exactly,
 * and a plan against either must be empty: what kproxy wrote reads back as what it wants. The dump
 * reports the ruleset generation it saw, the kernel's current one.
 *
 * Each case is also created the way kproxy creates a table the kernel does not hold yet (the
 * staged create of kernel/apply.ts: the elements of most sets encoded and sent over netlink by
 * kernel/netlink-elements.ts) in a second namespace, and the two kernels must list the same tables.
 */
import { describe, expect, it } from 'vitest';
import { NftablesApplier } from '../../src/backends/nftables/kernel/apply.ts';
import { Nft } from '../../src/backends/nftables/kernel/nft.ts';
import { planTransaction } from '../../src/backends/nftables/render/diff.ts';
import { parseObservedTable } from '../../src/backends/nftables/render/observed.ts';
import { inNetns } from '../../src/kernel/exec.ts';
import { startSpawner } from '../../src/kernel/spawner.ts';
import { createCommands, isDynamic } from '../../src/backends/nftables/render/ruleset.ts';
import { loadableOverNetlink, type ElementLoad } from '../../src/backends/nftables/kernel/netlink-elements.ts';
import { withNetns } from '../support/netns.ts';
import { caseNames, runCase, runPipeline, type PipelineRun } from '../support/golden.ts';

/** `nft -j list table`, without handles, elements sorted: what two loads must agree on. */
function comparable(listing: unknown): string[] {
  const items = (listing as { nftables: Record<string, Record<string, unknown>>[] }).nftables;
  return items
    .filter((item) => !('metainfo' in item))
    .map((item) => {
      const [[kind, body]] = Object.entries(item) as [[string, Record<string, unknown>]];
      const { handle: _, ...rest } = body;
      if (Array.isArray(rest['elem'])) rest['elem'] = rest['elem'].map((e) => JSON.stringify(e)).sort();
      return `${kind} ${JSON.stringify(rest)}`;
    })
    .sort();
}

async function load(run: PipelineRun): Promise<void> {
  const tx = run.desired.families.flatMap((f) => createCommands(f.ruleset));
  const rulesets = run.desired.families.map((f) => f.ruleset);
  const staged = await withNetns(async (ns) => {
    const nft = new Nft(inNetns(ns));
    const spawner = startSpawner(['ip', 'netns', 'exec', ns]);
    try {
      const loaded: string[] = [];
      const call = async <T>(name: string, args: unknown): Promise<T> => {
        if (name === 'loadNftElements') loaded.push((args as ElementLoad).family);
        return spawner.call<T>(name, args);
      };
      await new NftablesApplier(nft, call).apply([], rulesets);
      // Over netlink indeed: every family with elements to load there.
      const withBulk = rulesets.filter((rs) =>
        rs.sets.some((s) => s.elements.length > 0 && !isDynamic(s.spec) && loadableOverNetlink(s.spec)),
      );
      expect(loaded).toEqual(withBulk.map((rs) => rs.family));
      return await Promise.all(rulesets.map(async (rs) => comparable(await nft.listTable(rs.family, rs.table))));
    } finally {
      spawner.stop();
    }
  });
  await withNetns(async (ns) => {
    const nft = new Nft(inNetns(ns));
    await nft.apply(tx);
    const spawner = startSpawner(['ip', 'netns', 'exec', ns]);
    try {
      const dumps: unknown[] = [];
      const byNetlink = new NftablesApplier(nft, async <T>(name: string, args: unknown) => {
        const r = await spawner.call<T>(name, args);
        if (name === 'readNftTable') dumps.push(r);
        return r;
      });
      for (const { ruleset } of run.desired.families) {
        const listed = parseObservedTable(await nft.listTable(ruleset.family, ruleset.table));
        // Every element decoded from netlink reads as nft lists it.
        expect(await byNetlink.observeListed(ruleset), ruleset.family).toEqual(listed);
        // As a sync reads: sets as digests, which match, so no element is listed.
        const digested = await byNetlink.observe(ruleset);
        const listedSets = [...(digested?.sets ?? [])].filter(([, set]) => 'elements' in set && set.elements.size > 0);
        expect(listedSets.map(([name]) => name)).toEqual([]);
        expect(planTransaction(ruleset, digested).commands, ruleset.family).toEqual([]);
      }
      const plain = await Promise.all(rulesets.map(async (rs) => comparable(await nft.listTable(rs.family, rs.table))));
      expect(staged).toEqual(plain);
      // Read by netlink indeed, not by the nft fallback, and consistent (one ruleset generation).
      expect(dumps).toHaveLength(2 * run.desired.families.length);
      for (const d of dumps) {
        expect(d).not.toHaveProperty('undecodable');
        expect(d).toHaveProperty('generation', await spawner.call('nftGeneration', null));
      }
    } finally {
      spawner.stop();
    }
  });
}

describe('golden cases load into the kernel', () => {
  for (const name of caseNames()) {
    it(name, async () => {
      await load(runCase(name));
    });
  }
});

const NODE = `
apiVersion: v1
kind: Node
metadata: { name: node-a }
status: { addresses: [{ type: InternalIP, address: 192.0.2.1 }] }
`;

function lb(ranges: string[], lbIp = '198.51.100.30'): string {
  return `${NODE}
---
apiVersion: v1
kind: Service
metadata: { name: lb, namespace: demo }
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.30
  ports: [{ name: https, port: 443, nodePort: 30443 }]
  loadBalancerSourceRanges: ${JSON.stringify(ranges)}
status:
  loadBalancer: { ingress: [{ ip: ${lbIp} }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: lb-1, namespace: demo, labels: { kubernetes.io/service-name: lb } }
addressType: IPv4
ports: [{ name: https, port: 8443 }]
endpoints: [{ addresses: [10.244.1.30] }]
`;
}

const FLAGS = ['--hostname-override=node-a'];

/*
 * Interval sets (flags interval) reject overlapping elements: nft 1.0.6 says "conflicting
 * intervals specified" or the kernel returns EEXIST, and the WHOLE transaction fails, so one such
 * Service (or flag) stops every sync. src/render/nftables/layout.ts writes CIDRs into
 * firewall-allow, nodeport-addresses and service-cidrs without removing covered ones.
 */
describe('overlapping intervals (suspected src bugs)', () => {
  it('sanity: disjoint source ranges load', async () => {
    await load(runPipeline(lb(['203.0.113.0/24', '192.0.2.0/24']), FLAGS));
  });

  // firewall-allow holds the ranges AND the LB IP itself: "0.0.0.0/0" (or any range holding the
  // LB IP) overlaps the LB IP element.
  it('loadBalancerSourceRanges 0.0.0.0/0 (contains the LB IP) loads', async () => {
    await load(runPipeline(lb(['0.0.0.0/0']), FLAGS));
  });

  it('nested loadBalancerSourceRanges load', async () => {
    await load(runPipeline(lb(['10.0.0.0/8', '10.1.0.0/16']), FLAGS));
  });

  // Overlapping ServiceCIDRs are normal while a cluster's service range is being widened.
  it('overlapping ServiceCIDR objects load', async () => {
    const yaml = `${NODE}
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: { name: kubernetes }
spec: { cidrs: ["10.96.0.0/16"] }
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: { name: wider }
spec: { cidrs: ["10.96.0.0/12"] }
`;
    const run = runPipeline(yaml, FLAGS);
    expect(run.problems).toEqual([]);
    await load(run);
  });

  it('overlapping --nodeport-addresses CIDRs load', async () => {
    await load(runPipeline(NODE, [...FLAGS, '--nodeport-addresses=192.0.2.0/24,192.0.2.0/25']));
  });
});
