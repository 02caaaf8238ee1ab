/**
 * Golden files for IPVS mode: every case under golden/ (its input.yaml and flags.txt, plus
 * `--proxy-mode=ipvs`) through the pure pipeline to the text `kproxy dump --proxy-mode ipvs`
 * prints, compared with golden/<case>/expected.ipvs: the virtual servers as an `ipvsadm -R` batch,
 * kube-ipvs0's addresses, and the helper table `kproxy-ipvs` as an `nft -f` transaction. As the
 * dump does, the Node object's addresses stand for the node's local addresses.
 *
 * To regenerate after an intended change (never in CI), then review the diff like code:
 *
 *   UPDATE_GOLDEN=1 npx vitest run test/golden-ipvs.test.ts
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ipvsMode } from '../src/backends/ipvs/index.ts';
import { loadProxyConfig } from '../src/config/load.ts';
import { nodeStates } from '../src/proxy/desired.ts';
import { parseManifestText } from '../src/source/manifests.ts';
import { buildSnapshot } from '../src/source/normalize.ts';
import { formatProblem } from '../src/util/problems.ts';
import { caseNames, GOLDEN_DIR, readFlags } from './support/golden.ts';

const UPDATE = process.env['UPDATE_GOLDEN'] === '1';
if (UPDATE && process.env['CI'])
  throw new Error('UPDATE_GOLDEN must not be set in CI: golden files are regenerated locally and reviewed');

/** The dump, and its problems as expected-problems.txt would list them (inputs and rendering). */
function runIpvs(name: string): { text: string; problems: string[] } {
  const dir = join(GOLDEN_DIR, name);
  const flags = [...readFlags(readFileSync(join(dir, 'flags.txt'), 'utf8')), '--proxy-mode=ipvs'];
  const loaded = loadProxyConfig({
    argv: flags,
    hostname: 'unused',
    readFile: (p) => readFileSync(resolve(dir, p), 'utf8'),
  });
  const parsed = parseManifestText(readFileSync(join(dir, 'input.yaml'), 'utf8'), 'input.yaml');
  const { snapshot, problems } = buildSnapshot(parsed.objects, loaded.config.nodeName);
  const dump = ipvsMode.dump({ states: nodeStates(snapshot, loaded.config), config: loaded.config, format: 'ipvsadm' });
  return { text: dump.text, problems: [...parsed.problems, ...problems, ...dump.problems].map(formatProblem) };
}

describe('golden (IPVS mode)', () => {
  for (const name of caseNames()) {
    it(name, () => {
      const run = runIpvs(name);
      expect(runIpvs(name).text, 'pure: a second run gives the same text').toBe(run.text);
      // Every line is one command; nothing from the input spans lines or carries a shell character.
      for (const l of run.text.split('\n')) expect(l, l).not.toMatch(/[`$\\]/);
      const path = join(GOLDEN_DIR, name, 'expected.ipvs');
      if (UPDATE) writeFileSync(path, run.text);
      else {
        expect(existsSync(path), `${name}/expected.ipvs missing: run with UPDATE_GOLDEN=1 and review`).toBe(true);
        expect(run.text).toBe(readFileSync(path, 'utf8'));
      }
    });
  }
});
