import { describe, expect, it } from 'vitest';
import { Nft } from '../../src/backends/nftables/kernel/nft.ts';
import { inNetns } from '../../src/kernel/exec.ts';
import { NftablesApplier } from '../../src/backends/nftables/kernel/apply.ts';
import { fragmentContext, renderNftables } from '../../src/backends/nftables/render/layout.ts';
import { renderServicePort } from '../../src/backends/nftables/render/service-port.ts';
import { TableState } from '../../src/backends/nftables/render/table-state.ts';
import { ENDPOINT_MAP, PORTS_PER_SHARD } from '../../src/backends/nftables/render/names.ts';
import { planTransaction } from '../../src/backends/nftables/render/diff.ts';
import { parseObservedTable } from '../../src/backends/nftables/render/observed.ts';
import type { NodeState, ServicePortState } from '../../src/model/node-state.ts';
import { withNetns } from '../support/netns.ts';
import { numberedServicePorts, sampleStateV4, servicePort, STATE_CHANGES } from '../support/states.ts';

/** What a sync compares, as plain data: chains with fingerprints and counts, sets with elements. */
async function kernelView(nft: Nft) {
  const t = parseObservedTable(await nft.listTable('ip', 'kproxy'));
  return {
    chains: Object.fromEntries([...t.chains].sort(([a], [b]) => a.localeCompare(b))),
    sets: Object.fromEntries(
      [...t.sets].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, [...v.elements].sort()]),
    ),
  };
}

/** The kernel view after loading `state` into an empty namespace. */
function freshView(state: NodeState) {
  return withNetns(async (ns) => {
    const nft = new Nft(inNetns(ns));
    await new NftablesApplier(nft).sync([renderNftables(state).ruleset]);
    return kernelView(nft);
  });
}

const base = sampleStateV4();
const changes = STATE_CHANGES;

describe('incremental nftables sync', () => {
  for (const [label, change] of Object.entries(changes)) {
    it(`${label}: the updated kernel equals a fresh load of the new state`, async () => {
      const next = change(base);
      const fresh = await freshView(next);
      await withNetns(async (ns) => {
        const nft = new Nft(inNetns(ns));
        const backend = new NftablesApplier(nft);
        await backend.sync([renderNftables(base).ruleset]);
        const report = await backend.sync([renderNftables(next).ruleset]);
        expect(report.families[0]?.summary.kind).toBe('update');
        expect(await kernelView(nft)).toEqual(fresh);
        expect(await backend.matches([renderNftables(next).ruleset])).toBe(true);
      });
    });
  }

  it('a failed transaction leaves the previous rules in place', async () => {
    await withNetns(async (ns) => {
      const nft = new Nft(inNetns(ns));
      const backend = new NftablesApplier(nft);
      await backend.sync([renderNftables(base).ruleset]);
      const before = await kernelView(nft);
      // A jump to a chain that does not exist: nft accepts the syntax, the kernel refuses the commit.
      const broken = renderNftables(base).ruleset;
      const sabotaged = {
        ...broken,
        chains: broken.chains.map((c) =>
          c.name === 'services'
            ? {
                ...c,
                rules: [
                  ...c.rules,
                  { statements: [{ text: 'jump no-such-chain', json: { jump: { target: 'no-such-chain' } } }] },
                ],
              }
            : c,
        ),
      };
      await expect(backend.sync([sabotaged])).rejects.toThrow(/nft rejected the transaction/);
      expect(await kernelView(nft)).toEqual(before);
    });
  });

  it('repairs drift: a deleted table or an edited chain is restored by the next sync', async () => {
    await withNetns(async (ns) => {
      const nft = new Nft(inNetns(ns));
      const backend = new NftablesApplier(nft);
      const rs = renderNftables(base).ruleset;
      await backend.sync([rs]);
      const want = await kernelView(nft);
      await nft.apply([
        { text: 'flush chain ip kproxy services', json: null },
        { text: 'delete element ip kproxy service-ips { 10.96.0.5 . tcp . 80 }', json: null },
      ]);
      expect(await backend.matches([rs])).toBe(false);
      await backend.sync([rs]);
      expect(await kernelView(nft)).toEqual(want);
      await nft.deleteTable('ip', 'kproxy');
      await backend.sync([rs]);
      expect(await kernelView(nft)).toEqual(want);
    });
  });
});

describe('TableState.update: the commands of a partial sync', () => {
  const fragmentsOf = (s: NodeState) =>
    s.servicePorts.map((sp) => renderServicePort(sp, fragmentContext(s, s.servicePorts.length)));
  // Changes of service ports only; a context change makes the daemon re-render everything.
  const portChanges = [
    'a Service added',
    'a Service removed',
    'endpoints changed',
    'affinity timeout changed',
    'everything scaled to zero',
    'all Services deleted',
  ];
  for (const label of portChanges) {
    it(`${label}: swapping the changed fragments leaves the kernel equal to a fresh load`, async () => {
      const next = changes[label]!(base);
      const fresh = await freshView(next);
      await withNetns(async (ns) => {
        const nft = new Nft(inNetns(ns));
        const table = new TableState(base, fragmentsOf(base));
        await new NftablesApplier(nft).sync([table.ruleset()]);
        const before = new Map(base.servicePorts.map((sp) => [sp.key, sp]));
        const after = new Map(next.servicePorts.map((sp) => [sp.key, sp]));
        const removed = [...before.keys()].filter((k) => before.get(k) !== after.get(k));
        const added = fragmentsOf(next).filter((f) => before.get(f.sp.key) !== f.sp);
        await nft.apply(table.update(removed, added));
        expect(await kernelView(nft)).toEqual(fresh);
        expect(await new NftablesApplier(nft).matches([table.ruleset()])).toBe(true);
      });
    });
  }

  it('a conflict resolved by a removal hands the frontend to the next claimant', async () => {
    const owner = servicePort({
      ref: { namespace: 'default', name: 'a-owner', portName: 'p', protocol: 'TCP' },
      key: 'default/a-owner:p',
      clusterIP: '10.96.1.1',
      externalIPs: ['192.0.2.77'],
      internal: { kind: 'cluster', endpoints: [{ ip: '10.244.0.5', port: 80, isLocal: true }] },
      external: { kind: 'cluster', endpoints: [{ ip: '10.244.0.5', port: 80, isLocal: true }] },
    });
    const thief = servicePort({
      ref: { namespace: 'default', name: 'z-thief', portName: 'p', protocol: 'TCP' },
      key: 'default/z-thief:p',
      clusterIP: '10.96.1.2',
      externalIPs: ['192.0.2.77'],
      internal: { kind: 'reject' },
      external: { kind: 'reject' },
    });
    const both = { ...base, servicePorts: [owner, thief] };
    const table = new TableState(both, fragmentsOf(both));
    expect(table.problems().map((p) => p.object)).toEqual(['default/z-thief']);
    await withNetns(async (ns) => {
      const nft = new Nft(inNetns(ns));
      await new NftablesApplier(nft).sync([table.ruleset()]);
      await nft.apply(table.update([owner.key], []));
      const onlyThief = { ...base, servicePorts: [thief] };
      expect(await new NftablesApplier(nft).matches([renderNftables(onlyThief).ruleset])).toBe(true);
      expect(table.problems()).toEqual([]);
    });
  });
});

describe('light observation (periodic consistency checks)', () => {
  it('sees a missing table, chain or element without reading the rules back', async () => {
    await withNetns(async (ns) => {
      const nft = new Nft(inNetns(ns));
      const backend = new NftablesApplier(nft);
      const rs = renderNftables(base).ruleset;
      await backend.sync([rs]);
      expect(await backend.matches([rs], { light: true })).toBe(true);
      await nft.apply([{ text: 'delete element ip kproxy service-ips { 10.96.0.5 . tcp . 80 }', json: null }]);
      expect(await backend.matches([rs], { light: true })).toBe(false);
      const plan = planTransaction(rs, await backend.observeLight(rs, rs));
      await nft.apply(plan.commands);
      expect(await backend.matches([rs])).toBe(true);
      await nft.apply([{ text: 'flush chain ip kproxy services', json: null }]);
      // An edit inside a chain is found only by a complete read (what every 10th full sync does).
      expect(await backend.matches([rs], { light: true })).toBe(true);
      expect(await backend.matches([rs])).toBe(false);
      await nft.deleteTable('ip', 'kproxy');
      expect(await backend.observeLight(rs, rs)).toBeUndefined();
    });
  });
});

describe('endpoint maps crossing the shard threshold (PORTS_PER_SHARD)', () => {
  const withPorts = (n: number): NodeState => ({ ...base, servicePorts: numberedServicePorts(n) });

  it('a partial sync in a sharded table (an endpoint changed, a Service added, one removed) equals a fresh load', async () => {
    const ports = numberedServicePorts(PORTS_PER_SHARD + 50);
    const sharded: NodeState = { ...base, servicePorts: ports };
    const moved = { ip: '10.250.0.3', port: 8080, isLocal: false };
    const [added] = numberedServicePorts(PORTS_PER_SHARD + 51).slice(-1);
    const nextPorts = ports
      .filter((sp) => sp.key !== 'default/svc-7:p')
      .map(
        (sp): ServicePortState =>
          sp.key === 'default/svc-3:p'
            ? { ...sp, internal: { kind: 'cluster', endpoints: [moved] }, servingEndpoints: [moved] }
            : sp,
      )
      .concat(added ? [added] : []);
    const next: NodeState = { ...base, servicePorts: nextPorts };
    const fresh = await freshView(next);
    await withNetns(async (ns) => {
      const nft = new Nft(inNetns(ns));
      const ctx = fragmentContext(sharded, ports.length);
      expect(ctx.endpointShards).toBe(2);
      const table = new TableState(
        sharded,
        ports.map((sp) => renderServicePort(sp, ctx)),
        ctx,
      );
      await new NftablesApplier(nft).sync([table.ruleset()]);
      const changed = nextPorts.filter((sp) => !ports.includes(sp));
      await nft.apply(
        table.update(
          ['default/svc-3:p', 'default/svc-7:p'],
          changed.map((sp) => renderServicePort(sp, ctx)),
        ),
      );
      expect(await kernelView(nft)).toEqual(fresh);
    });
  });

  it('moves every endpoint between one map and two in one update, both ways', async () => {
    const one = withPorts(PORTS_PER_SHARD);
    const two = withPorts(PORTS_PER_SHARD + 1);
    const freshTwo = await freshView(two);
    const freshOne = await freshView(one);
    expect(Object.keys(freshTwo.sets)).toContain(`${ENDPOINT_MAP.addresses}-1`);
    await withNetns(async (ns) => {
      const nft = new Nft(inNetns(ns));
      const backend = new NftablesApplier(nft);
      await backend.sync([renderNftables(one).ruleset]);
      const up = await backend.sync([renderNftables(two).ruleset]);
      expect(up.families[0]?.summary.kind).toBe('update');
      expect(await kernelView(nft)).toEqual(freshTwo);
      const down = await backend.sync([renderNftables(one).ruleset]);
      expect(down.families[0]?.summary.kind).toBe('update');
      expect(await kernelView(nft)).toEqual(freshOne);
    });
  });
});
