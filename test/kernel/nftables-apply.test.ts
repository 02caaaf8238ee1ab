import { describe, expect, it } from 'vitest';
import { Nft } from '../../src/backends/nftables/kernel/nft.ts';
import { inNetns } from '../../src/kernel/exec.ts';
import { renderNftables } from '../../src/backends/nftables/render/layout.ts';
import { createCommands, transactionJson, transactionText } from '../../src/backends/nftables/render/ruleset.ts';
import { parseObservedTable } from '../../src/backends/nftables/render/observed.ts';
import { planTransaction } from '../../src/backends/nftables/render/diff.ts';
import { execa } from 'execa';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { withNetns } from '../support/netns.ts';
import { sampleStateV4, sampleStateV6 } from '../support/states.ts';

const listRuleset = async (ns: string) => (await execa('ip', ['netns', 'exec', ns, 'nft', 'list', 'ruleset'])).stdout;

describe('nftables rendering against the kernel', () => {
  for (const [label, state] of [
    ['IPv4', sampleStateV4()],
    ['IPv6', sampleStateV6()],
  ] as const) {
    // nft 1.0.6's JSON cannot express the endpoint maps: `dump --format json` prints the ladder
    // layout (ADR 0008), which must load the same in both notations.
    it(`${label}: text and JSON notations load the same ruleset (ladder layout)`, async () => {
      const { ruleset, problems } = renderNftables(state, 'ladders');
      expect(problems).toEqual([]);
      const tx = createCommands(ruleset);
      const fromText = await withNetns(async (ns) => {
        await new Nft(inNetns(ns)).apply(tx);
        return listRuleset(ns);
      });
      const fromJson = await withNetns(async (ns) => {
        // nft reads JSON from a file only (stdin is not accepted for -j here).
        const file = join(mkdtempSync(join(tmpdir(), 'kproxy-json-')), 'ruleset.json');
        writeFileSync(file, JSON.stringify(transactionJson(tx)));
        const r = await execa('ip', ['netns', 'exec', ns, 'nft', '-j', '-f', file], { reject: false });
        rmSync(dirname(file), { recursive: true });
        expect(r.stderr).toBe('');
        return listRuleset(ns);
      });
      expect(fromJson).toBe(fromText);
      expect(transactionText(tx)).toContain('add table');
    });

    it(`${label}: after applying, the kernel matches and the next plan is empty`, async () => {
      await withNetns(async (ns) => {
        const nft = new Nft(inNetns(ns));
        const { ruleset } = renderNftables(state);
        const first = planTransaction(ruleset, undefined);
        await nft.apply(first.commands);
        const observed = parseObservedTable(await nft.listTable(ruleset.family, ruleset.table));
        const second = planTransaction(ruleset, observed);
        expect(second.commands.map((c) => c.text)).toEqual([]);
      });
    });
  }
});
