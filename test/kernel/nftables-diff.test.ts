import { describe, expect, it } from 'vitest';
import { Nft, inNetns } from '../../src/kernel/nft.ts';
import { NftablesBackend } from '../../src/kernel/nftables-backend.ts';
import { renderNftables } from '../../src/render/nftables/layout.ts';
import { parseObservedTable } from '../../src/render/nftables/observed.ts';
import type { NodeState } from '../../src/model/node-state.ts';
import { withNetns } from '../support/netns.ts';
import { sampleStateV4, servicePort } from '../support/states.ts';

/** What a sync compares, as plain data: chains with fingerprints and counts, sets with elements. */
async function kernelView(nft: Nft) {
  const t = parseObservedTable(await nft.listTable('ip', 'kproxy'));
  return {
    chains: Object.fromEntries([...t.chains].sort(([a], [b]) => a.localeCompare(b))),
    sets: Object.fromEntries([...t.sets].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, [...v.elements].sort()])),
  };
}

const base = sampleStateV4();
const changes: Record<string, (s: NodeState) => NodeState> = {
  'a Service added': (s) => ({
    ...s,
    servicePorts: [...s.servicePorts, servicePort({ clusterIP: '10.96.0.99', internal: { kind: 'cluster', endpoints: [{ ip: '10.244.0.9', port: 80, isLocal: true }] } })],
  }),
  'a Service removed': (s) => ({ ...s, servicePorts: s.servicePorts.slice(1) }),
  'endpoints changed': (s) => ({
    ...s,
    servicePorts: s.servicePorts.map((sp, i) => (i === 0 ? { ...sp, internal: { kind: 'cluster', endpoints: [{ ip: '10.244.0.3', port: 8080, isLocal: true }] } } : sp)),
  }),
  'affinity timeout changed': (s) => ({ ...s, servicePorts: s.servicePorts.map((sp) => (sp.affinityTimeoutSeconds ? { ...sp, affinityTimeoutSeconds: 30 } : sp)) }),
  'everything scaled to zero': (s) => ({ ...s, servicePorts: s.servicePorts.map((sp) => ({ ...sp, internal: { kind: 'reject' }, ...(sp.external ? { external: { kind: 'reject' } } : {}) })) }),
  'detector and masqueradeAll changed': (s) => ({ ...s, masqueradeAll: true, localDetector: { kind: 'none' } }),
  'masquerade bit changed': (s) => ({ ...s, masqueradeMark: 0x8000 }),
  'all Services deleted': (s) => ({ ...s, servicePorts: [] }),
};

describe('incremental nftables sync', () => {
  for (const [label, change] of Object.entries(changes)) {
    it(`${label}: the updated kernel equals a fresh load of the new state`, async () => {
      const next = change(base);
      const fresh = await withNetns(async (ns) => {
        const nft = new Nft(inNetns(ns));
        await new NftablesBackend(nft).sync([renderNftables(next).ruleset]);
        return kernelView(nft);
      });
      await withNetns(async (ns) => {
        const nft = new Nft(inNetns(ns));
        const backend = new NftablesBackend(nft);
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
      const backend = new NftablesBackend(nft);
      await backend.sync([renderNftables(base).ruleset]);
      const before = await kernelView(nft);
      // A jump to a chain that does not exist: nft accepts the syntax, the kernel refuses the commit.
      const broken = renderNftables(base).ruleset;
      const sabotaged = { ...broken, chains: broken.chains.map((c) => (c.name === 'services' ? { ...c, rules: [...c.rules, { statements: [{ text: 'jump no-such-chain', json: { jump: { target: 'no-such-chain' } } }] }] } : c)) };
      await expect(backend.sync([sabotaged])).rejects.toThrow(/nft rejected the transaction/);
      expect(await kernelView(nft)).toEqual(before);
    });
  });

  it('repairs drift: a deleted table or an edited chain is restored by the next sync', async () => {
    await withNetns(async (ns) => {
      const nft = new Nft(inNetns(ns));
      const backend = new NftablesBackend(nft);
      const rs = renderNftables(base).ruleset;
      await backend.sync([rs]);
      const want = await kernelView(nft);
      await nft.apply([{ text: 'flush chain ip kproxy services', json: null }, { text: 'delete element ip kproxy service-ips { 10.96.0.5 . tcp . 80 }', json: null }]);
      expect(await backend.matches([rs])).toBe(false);
      await backend.sync([rs]);
      expect(await kernelView(nft)).toEqual(want);
      await nft.deleteTable('ip', 'kproxy');
      await backend.sync([rs]);
      expect(await kernelView(nft)).toEqual(want);
    });
  });
});
