/**
 * The golden cases under golden/ and the pure pipeline they run through, shared by
 * test/golden.test.ts (text comparison) and test/kernel/golden-nft.test.ts (the kernel loads them).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadProxyConfig } from '../../src/config/load.ts';
import { createCommands, transactionText } from '../../src/backends/nftables/render/ruleset.ts';
import { parseManifestText } from '../../src/source/manifests.ts';
import { buildSnapshot } from '../../src/source/normalize.ts';
import { nodeStates } from '../../src/proxy/desired.ts';
import { renderFamilies, type RenderedFamilies } from '../../src/backends/nftables/render/layout.ts';
import { formatProblem } from '../../src/util/problems.ts';

export const GOLDEN_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'golden');

export interface PipelineRun {
  readonly desired: RenderedFamilies;
  /** What `kproxy dump` prints. */
  readonly nft: string;
  /** formatProblem() of every problem: manifest parsing, normalisation, rendering. */
  readonly problems: string[];
}

/** flags.txt: one flag per line; blank lines and `#` comments are ignored. */
export function readFlags(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
}

/** The real pipeline, as `kproxy dump` runs it, on one manifest text. `--config` paths resolve against `baseDir`. */
export function runPipeline(yaml: string, flags: readonly string[], baseDir: string = GOLDEN_DIR): PipelineRun {
  const loaded = loadProxyConfig({
    argv: flags,
    hostname: 'unused',
    readFile: (p) => readFileSync(resolve(baseDir, p), 'utf8'),
  });
  const parsed = parseManifestText(yaml, 'input.yaml');
  const { snapshot, problems } = buildSnapshot(parsed.objects, loaded.config.nodeName);
  const desired = renderFamilies(nodeStates(snapshot, loaded.config));
  const nft = transactionText(desired.families.flatMap((f) => createCommands(f.ruleset)));
  const all = [...parsed.problems, ...problems, ...desired.problems].map(formatProblem);
  return { desired, nft, problems: all };
}

export function caseNames(): string[] {
  return readdirSync(GOLDEN_DIR)
    .filter((name) => statSync(join(GOLDEN_DIR, name)).isDirectory())
    .sort();
}

/** Runs one case's input.yaml with its flags.txt. */
export function runCase(name: string, file = 'input.yaml'): PipelineRun {
  const dir = join(GOLDEN_DIR, name);
  const flags = readFlags(readFileSync(join(dir, 'flags.txt'), 'utf8'));
  return runPipeline(readFileSync(join(dir, file), 'utf8'), flags, dir);
}
