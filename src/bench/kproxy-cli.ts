/**
 * @module bench/kproxy-cli
 * The real `bin/kproxy sync` as users run it, inside a network namespace: the synthetic cluster
 * written as one `cluster.json` List (Services, EndpointSlices, this Node, the ServiceCIDR), then
 * `ip netns exec NS bin/kproxy sync --proxy-mode M --manifests DIR …`, timed as a whole process
 * (GNU time: wall, user and system CPU of kproxy and the tools it waited for). kproxy's own peak
 * RSS comes from `rss-probe.ts`, preloaded through NODE_OPTIONS; its closing log line tells what
 * the sync did ("rules applied" / "kernel already up to date") and how long the backend took.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { IptablesFlavor } from '../config/proxy-config.ts';
import { sizeLabel, syntheticCluster, type ClusterShape, type ClusterSize } from './cluster-gen.ts';
import { benchFlags, type SyncMode } from './pipeline.ts';
import { timedInNetns, type TimedResult } from './timed-exec.ts';

const HERE = fileURLToPath(new URL('.', import.meta.url));
export const KPROXY_BIN = resolve(HERE, '..', '..', 'bin', 'kproxy');
const RSS_PROBE = join(HERE, 'rss-probe.ts');

export interface Manifests {
  readonly dir: string;
  readonly bytes: number;
}

/** `DIR/cluster.json`: the synthetic cluster as one v1 List. Written once per size and run. */
export function writeManifests(workDir: string, size: ClusterSize, shape: ClusterShape): Manifests {
  const dir = join(workDir, `manifests-${sizeLabel(size)}`);
  const file = join(dir, 'cluster.json');
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true });
    const { objects } = syntheticCluster(size, shape);
    writeFileSync(file, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
  }
  return { dir, bytes: statSync(file).size };
}

/** kproxy's closing log line of a sync. */
export interface SyncLogLine {
  readonly msg: string;
  /** backend.sync + matches + conntrack clean-up, as kproxy logs it. */
  readonly ms: number;
  readonly changes: number;
  readonly flavor?: string;
}

export interface KproxySyncRun {
  readonly mode: SyncMode;
  readonly process: TimedResult;
  /** Peak RSS of kproxy's Node process alone, KiB (null: the probe wrote nothing). */
  readonly kproxyRssKiB: number | null;
  readonly log: SyncLogLine | undefined;
  /** The log line said the kernel already held the rules (nothing written). */
  readonly upToDate: boolean;
  /** Killed after `timeoutMs`: the wall time is a lower bound. */
  readonly timedOut: boolean;
}

function lastSyncLine(stderr: string): SyncLogLine | undefined {
  const lines = stderr.split('\n').reverse();
  for (const line of lines) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (o['msg'] === 'rules applied' || o['msg'] === 'kernel already up to date') {
        return {
          msg: String(o['msg']),
          ms: Number(o['ms']),
          changes: Number(o['changes']),
          ...(typeof o['flavor'] === 'string' ? { flavor: o['flavor'] } : {}),
        };
      }
    } catch {
      /* a cut line at the start of the tail */
    }
  }
  return undefined;
}

/**
 * Runs `bin/kproxy sync` in `ns`. A run killed after `timeoutMs` comes back with `timedOut`;
 * any other failure, or a run without the closing log line, throws.
 */
export async function kproxySync(
  ns: string,
  mode: SyncMode,
  manifests: Manifests,
  options: { workDir: string; timeoutMs: number; iptablesFlavor: IptablesFlavor },
): Promise<KproxySyncRun> {
  const rssFile = join(options.workDir, `rss-${ns}-${mode}-${Date.now()}`);
  const nodeOptions = [process.env['NODE_OPTIONS'], `--import="${RSS_PROBE}"`].filter(Boolean).join(' ');
  const timed = await timedInNetns(
    ns,
    [KPROXY_BIN, 'sync', ...benchFlags(mode, options.iptablesFlavor), '--manifests', manifests.dir],
    {
      timeoutMs: options.timeoutMs,
      env: { ...process.env, NODE_OPTIONS: nodeOptions, KPBENCH_RSS_FILE: rssFile },
    },
  );
  let kproxyRssKiB: number | null = null;
  try {
    const n = Number(readFileSync(rssFile, 'utf8').trim());
    if (Number.isFinite(n) && n > 0) kproxyRssKiB = n;
  } catch {
    /* killed: no figure */
  }
  rmSync(rssFile, { force: true });
  const log = lastSyncLine(timed.stderrTail);
  if (timed.timedOut) return { mode, process: timed, kproxyRssKiB, log, upToDate: false, timedOut: true };
  if (timed.exitCode !== 0 || !log) {
    const errors = timed.stderrTail
      .split('\n')
      .filter((l) => /"level":(50|60)/.test(l))
      .slice(-3)
      .join('\n');
    throw new Error(
      `kproxy sync --proxy-mode ${mode} in ${ns}: exit ${timed.exitCode}${log ? '' : ', no closing log line'}\n${
        errors || timed.stderrTail.slice(-2000)
      }`,
    );
  }
  return {
    mode,
    process: timed,
    kproxyRssKiB,
    log,
    upToDate: log.msg === 'kernel already up to date',
    timedOut: false,
  };
}
