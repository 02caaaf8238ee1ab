/**
 * @module bench/ipvs-guest
 * Runs inside the IPVS VM (scenario `ipvs`, through scripts/ipvs-vm/run.sh): the same
 * `kproxy sync --manifests` timing as scenario `modes`, for nftables and IPVS side by side in the
 * same (emulated) kernel, so their ratio means something where the absolute figures do not. Per
 * size and mode, in a fresh network namespace: a cold sync, then the same command again (a
 * restart: it must write nothing). One line per run on stdout: `IPVSBENCH {json}`.
 *
 *   node src/bench/ipvs-guest.ts --sizes 1000x10 [--timeout SECONDS]
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_SHAPE, parseSize, sizeLabel } from './cluster-gen.ts';
import { kproxySync, writeManifests } from './kproxy-cli.ts';
import { createNetns, deleteNetns } from './netns.ts';
import type { SyncMode } from './pipeline.ts';

const MODES: readonly SyncMode[] = ['nftables', 'ipvs'];

const { values } = parseArgs({ options: { sizes: { type: 'string' }, timeout: { type: 'string', default: '900' } } });
const workDir = mkdtempSync(join(tmpdir(), 'kproxy-ipvs-bench-'));
const timeoutMs = Number(values.timeout) * 1000;
for (const text of String(values.sizes ?? '1000x10').split(',')) {
  const size = parseSize(text);
  if (!size) throw new Error(`bad size ${text}`);
  const manifests = writeManifests(workDir, size, DEFAULT_SHAPE);
  for (const mode of MODES) {
    const ns = createNetns(`v${mode.slice(0, 3)}`);
    try {
      const options = { workDir, timeoutMs, iptablesFlavor: 'auto' as const };
      const cold = await kproxySync(ns, mode, manifests, options);
      const restart = await kproxySync(ns, mode, manifests, options);
      const figures = (r: typeof cold) => ({
        wallS: r.process.wallS,
        userS: r.process.userS,
        sysS: r.process.sysS,
        syncMs: r.log?.ms,
        changes: r.log?.changes,
        rssMiB: r.kproxyRssKiB === null ? null : r.kproxyRssKiB / 1024,
        timedOut: r.timedOut,
      });
      const line = {
        size: sizeLabel(size),
        mode,
        cold: figures(cold),
        restart: figures(restart),
        upToDate: restart.upToDate,
      };
      process.stdout.write(`IPVSBENCH ${JSON.stringify(line)}\n`);
    } finally {
      deleteNetns(ns);
    }
  }
}
