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
import { KPROXY_DAEMON_NODE_FLAGS, KPROXY_ENV, KPROXY_NODE_FLAGS } from '../../src/bench/scenarios/cold-sync.ts';
import { isUpstreamInvocation } from '../../src/cli/main.ts';

const BIN = fileURLToPath(new URL('../../bin/kproxy', import.meta.url));

/**
 * What bin/kproxy passes to Node for these arguments: a copy of it runs beside a stub
 * `node_modules/node/bin/node` that prints its arguments and MALLOC_ARENA_MAX (nothing else runs).
 */
function nodeArgs(root: string, argv: string[], env: Record<string, string | undefined> = process.env): string[] {
  const r = spawnSync(join(root, 'bin/kproxy'), argv, { encoding: 'utf8', env: { ...env, NODE_COMPILE_CACHE: '' } });
  return r.stdout.split('\n').filter(Boolean);
}

function semiSpace(root: string, argv: string[]): number {
  const m = /^--max-semi-space-size=(\d+)$/.exec(nodeArgs(root, argv)[0] ?? '');
  if (!m) throw new Error(`no semi-space size for ${JSON.stringify(argv)}`);
  return Number(m[1]);
}

describe('bin/kproxy', () => {
  let root = '';
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'kproxy-bin-'));
    mkdirSync(join(root, 'bin'));
    mkdirSync(join(root, 'node_modules/node/bin'), { recursive: true });
    copyFileSync(BIN, join(root, 'bin/kproxy'));
    // Prints its arguments, then the environment variable the daemon's settings include.
    writeFileSync(
      join(root, 'node_modules/node/bin/node'),
      '#!/bin/sh\nprintf "%s\\n" "$@"\nprintf "MALLOC_ARENA_MAX=%s\\n" "$MALLOC_ARENA_MAX"\n',
      { mode: 0o755 },
    );
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

  it('passes what the bench runs its workers with (one-shot and daemon), and keeps a MALLOC_ARENA_MAX already set', () => {
    const without = { ...process.env, MALLOC_ARENA_MAX: undefined };
    const flags = (argv: string[]) => nodeArgs(root, argv, without).filter((a) => a.startsWith('--max-'));
    expect(flags(['sync'])).toEqual(KPROXY_NODE_FLAGS);
    expect(flags(['run'])).toEqual(KPROXY_DAEMON_NODE_FLAGS);
    expect(nodeArgs(root, ['run'], without)).toContain(`MALLOC_ARENA_MAX=${KPROXY_ENV['MALLOC_ARENA_MAX']}`);
    expect(nodeArgs(root, ['run'], { ...process.env, MALLOC_ARENA_MAX: '8' })).toContain('MALLOC_ARENA_MAX=8');
  });
});
