/**
 * Golden files for iptables mode: every case under golden/ (input.yaml + flags.txt, see
 * golden/README.md) through the pure pipeline into iptables mode's dump, compared with
 * golden/<case>/expected.iptables: per family a header line, then the iptables-restore input for
 * an empty kernel (`dumpText`). The config is built from the case's flags as given (the cases
 * are written for nftables mode, so NodePorts follow its `primary` default unless a case sets
 * nodePortAddresses); localhostNodePorts comes from the config, INVALID packets are dropped.
 *
 * To regenerate after an intended change, run
 *
 *   UPDATE_GOLDEN=1 npx vitest run test/golden-iptables.test.ts
 *
 * and review the diff like code. CI never sets UPDATE_GOLDEN: there a mismatch fails.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadProxyConfig } from '../src/config/load.ts';
import { parseManifestText } from '../src/source/manifests.ts';
import { buildSnapshot } from '../src/source/normalize.ts';
import { nodeStates } from '../src/proxy/desired.ts';
import { planSync } from '../src/backends/iptables/render/plan.ts';
import { dumpText } from '../src/backends/iptables/render/restore.ts';
import { contextOf, renderIptables } from '../src/backends/iptables/render/ruleset.ts';
import { parseIptablesSave } from '../src/backends/iptables/render/saved.ts';
import { skeleton } from '../src/backends/iptables/render/skeleton.ts';
import type { IptRuleset } from '../src/backends/iptables/render/types.ts';
import type { NodeState } from '../src/model/node-state.ts';
import { caseNames, GOLDEN_DIR, readFlags } from './support/golden.ts';

const UPDATE = process.env['UPDATE_GOLDEN'] === '1';
if (UPDATE && process.env['CI'])
  throw new Error('UPDATE_GOLDEN must not be set in CI: golden files are regenerated locally and reviewed');

interface IptablesRun {
  readonly states: readonly NodeState[];
  readonly rulesets: readonly IptRuleset[];
  readonly options: { readonly localhostNodePorts: boolean; readonly dropInvalid: boolean };
  readonly text: string;
}

function runIptablesCase(name: string): IptablesRun {
  const dir = join(GOLDEN_DIR, name);
  const flags = readFlags(readFileSync(join(dir, 'flags.txt'), 'utf8'));
  const { config } = loadProxyConfig({
    argv: flags,
    hostname: 'unused',
    readFile: (p) => readFileSync(resolve(dir, p), 'utf8'),
  });
  const parsed = parseManifestText(readFileSync(join(dir, 'input.yaml'), 'utf8'), 'input.yaml');
  const { snapshot } = buildSnapshot(parsed.objects, config.nodeName);
  const states = nodeStates(snapshot, config);
  const options = { localhostNodePorts: config.iptables.localhostNodePorts, dropInvalid: true };
  const rulesets = states.map((s) => renderIptables(s, options).ruleset);
  return { states, rulesets, options, text: dumpText(rulesets) };
}

/** The dump's section for one family. */
function section(text: string, family: 'ipv4' | 'ipv6'): string {
  const v6 = text.indexOf('# IPv6 (ip6tables-restore)\n');
  return family === 'ipv4' ? text.slice(0, v6) : text.slice(v6);
}

describe('golden: iptables mode', () => {
  const cases = caseNames();

  it('has cases', () => {
    expect(cases.length).toBeGreaterThan(0);
  });

  for (const name of cases) {
    it(name, () => {
      const run = runIptablesCase(name);
      // Pure: a second run gives the same text.
      expect(runIptablesCase(name).text).toBe(run.text);

      const path = join(GOLDEN_DIR, name, 'expected.iptables');
      if (UPDATE) writeFileSync(path, run.text);
      else {
        expect(existsSync(path), `${name}/expected.iptables missing: run with UPDATE_GOLDEN=1 and review`).toBe(true);
        expect(run.text).toBe(readFileSync(path, 'utf8'));
      }

      run.states.forEach((state, i) => {
        const text = section(run.text, state.family);
        // The template's fixed part is all there: its chains declared, its jump rules in place.
        const fixed = skeleton(contextOf(state, run.options));
        for (const c of fixed.chains) {
          const tableText = text.slice(text.indexOf(`*${c.table}\n`));
          expect(tableText, `${state.family} ${c.table} ${c.name}`).toContain(`:${c.name} - [0:0]\n`);
          for (const r of [...c.head, ...c.tail]) expect(tableText).toContain(`-A ${c.name} ${r}\n`);
        }
        for (const j of fixed.jumps) expect(text).toContain(`-A ${j.chain} ${j.rule}\n`);
        // And the dump is exactly the ruleset: read back like iptables-save output, nothing differs.
        const ruleset = run.rulesets[i] as IptRuleset;
        expect(planSync(ruleset, parseIptablesSave(text), 'all-differing').changes).toBe(0);
      });
    });
  }
});
