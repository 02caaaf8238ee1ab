/**
 * The backends the packet-flow suite runs against. Each programs the node namespace of a topology
 * from a directory of manifests, the way a user would: through the real `kproxy` CLI.
 * iptables and IPVS join this list when they exist; the suite itself does not change.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import type { Topology } from '../../src/sandbox/topology.ts';

const KPROXY = fileURLToPath(new URL('../../bin/kproxy', import.meta.url));

export interface SyncOutcome {
  readonly exitCode: number;
  /** kproxy's JSON log lines. */
  readonly log: readonly Record<string, unknown>[];
}

export interface Backend {
  readonly name: string;
  /** Why the suite cannot run against it here; undefined: it runs. */
  readonly skip?: string;
  sync(topo: Topology, objects: readonly object[], flags: readonly string[]): Promise<SyncOutcome>;
  cleanup(topo: Topology): Promise<SyncOutcome>;
}

/** Runs `kproxy ARGS` in the topology's node namespace. */
async function kproxy(topo: Topology, args: readonly string[]): Promise<SyncOutcome> {
  const r = await execa('ip', ['netns', 'exec', topo.node.ns, KPROXY, ...args], { reject: false });
  const log = r.stderr
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return { msg: l };
      }
    });
  return { exitCode: r.exitCode ?? 1, log };
}

async function kproxySync(
  mode: string,
  topo: Topology,
  objects: readonly object[],
  flags: readonly string[],
): Promise<SyncOutcome> {
  const dir = mkdtempSync(join(tmpdir(), 'kproxy-flows-'));
  try {
    writeFileSync(join(dir, 'cluster.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
    return await kproxy(topo, ['sync', '--proxy-mode', mode, '--manifests', dir, ...flags]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function backend(mode: string, skip?: string): Backend {
  return {
    name: mode,
    ...(skip ? { skip } : {}),
    sync: (topo, objects, flags) => kproxySync(mode, topo, objects, flags),
    cleanup: (topo) => kproxy(topo, ['cleanup', '--proxy-mode', mode]),
  };
}

export const BACKENDS: readonly Backend[] = [
  backend('nftables'),
  backend('iptables', 'the iptables backend is not implemented yet'),
  backend('ipvs', 'the IPVS backend is not implemented yet, and this kernel has no IPVS'),
];
