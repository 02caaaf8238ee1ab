/**
 * bin/kproxy: the daemon (as src/cli/main.ts decides it) runs with small semi-spaces, every
 * one-shot command with large ones (docs/adr/0013).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUpstreamInvocation } from '../../src/cli/main.ts';

const BIN = fileURLToPath(new URL('../../bin/kproxy', import.meta.url));

/**
 * The --max-semi-space-size bin/kproxy passes to Node for these arguments: a copy of it runs
 * beside a stub `node_modules/node/bin/node` that prints its arguments (nothing else is run).
 */
function semiSpace(root: string, argv: string[]): number {
  const r = spawnSync(join(root, 'bin/kproxy'), argv, {
    encoding: 'utf8',
    env: { ...process.env, NODE_COMPILE_CACHE: '' },
  });
  const m = /--max-semi-space-size=(\d+)/.exec(r.stdout);
  if (!m) throw new Error(`no semi-space size in ${JSON.stringify(r.stdout + r.stderr)}`);
  return Number(m[1]);
}

describe('bin/kproxy', () => {
  let root = '';
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'kproxy-bin-'));
    mkdirSync(join(root, 'bin'));
    mkdirSync(join(root, 'node_modules/node/bin'), { recursive: true });
    copyFileSync(BIN, join(root, 'bin/kproxy'));
    writeFileSync(join(root, 'node_modules/node/bin/node'), '#!/bin/sh\nprintf "%s\\n" "$@"\n', { mode: 0o755 });
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it.each([
    [[]],
    [['run']],
    [['run', '--help']],
    [['--config', '/etc/kp.yaml']],
    [['--v=2', '--help']],
    [['--help']],
    [['-h']],
    [['--version']],
    [['sync', '--manifests', 'dir']],
    [['dump']],
    [['help']],
  ])('%j: the daemon gets 4 MiB semi-spaces, anything else 16', (argv) => {
    const daemon = isUpstreamInvocation(argv) || argv[0] === 'run';
    expect(semiSpace(root, argv)).toBe(daemon ? 4 : 16);
  });
});
