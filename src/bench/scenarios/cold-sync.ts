/**
 * @module bench/scenarios/cold-sync
 * kproxy's cold sync at each size, into a fresh network namespace:
 *  (a) normalize + model + render and (b) transaction build, timed in a fresh Node process
 *      (`pipeline-worker.ts`) whose peak RSS is the cold sync's memory cost;
 *  (c) `nft -f FILE` of that transaction: wall, nft's user CPU, system CPU (the kernel's commit);
 *  then `NftablesApplier.matches` checks the kernel holds exactly the desired rulesets.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Nft } from '../../backends/nftables/kernel/nft.ts';
import { inNetns } from '../../kernel/exec.ts';
import { NftablesApplier } from '../../backends/nftables/kernel/apply.ts';
import { TABLE } from '../../backends/nftables/render/layout.ts';
import { clusterArgs, sizeLabel, syntheticCluster, type ClusterShape, type ClusterSize } from '../cluster-gen.ts';
import { count, ms, secs } from '../format.ts';
import { runForJson, withNetns } from '../netns.ts';
import type { WorkerReport } from '../pipeline-worker.ts';
import { benchConfig, runPipeline } from '../pipeline.ts';
import type { BenchContext, Scenario, ScenarioResult } from '../scenario.ts';
import { timedInNetns, type TimedResult } from '../timed-exec.ts';

export interface ColdSyncRow {
  readonly size: ClusterSize;
  readonly worker: WorkerReport;
  readonly nft: TimedResult;
  /** Pipeline (a + b) plus the nft wall time: what a cold `kproxy sync` spends, in seconds. */
  readonly totalS: number;
  /** `nft -j list table ip kproxy` right after the load: what every later sync reads back first. */
  readonly list: TimedResult;
  readonly verified: boolean;
  /** `NftablesApplier.matches` (list + parse + plan) in this process. */
  readonly verifyS: number;
  /** `nft flush ruleset` afterwards (not part of the sync). */
  readonly teardownS: number;
}

export interface ColdSyncData {
  readonly rows: readonly ColdSyncRow[];
}

function pipelineS(r: ColdSyncRow): number {
  const t = r.worker.timings;
  return (t.normalizeMs + t.modelRenderMs + t.txBuildMs) / 1000;
}

/** The V8 flags bin/kproxy runs a one-shot command with, so the pipeline is timed as kproxy runs it (test/unit/bin.test.ts). */
export const KPROXY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=16'];
/** The V8 flags and environment bin/kproxy runs the daemon with (docs/adr/0013; test/unit/bin.test.ts). */
export const KPROXY_DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];
export const KPROXY_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

const WORKER = fileURLToPath(new URL('../pipeline-worker.ts', import.meta.url));

/** Runs the pure pipeline in a child Node process; its transaction text goes to `out`. */
export async function runWorker(size: ClusterSize, shape: ClusterShape, out: string): Promise<WorkerReport> {
  const args = [...KPROXY_NODE_FLAGS, WORKER, ...clusterArgs(size, shape), '--out', out];
  return runForJson<WorkerReport>(`pipeline worker for ${sizeLabel(size)}`, process.execPath, args);
}

async function measure(ctx: BenchContext, size: ClusterSize): Promise<ColdSyncRow> {
  const label = sizeLabel(size);
  const file = join(ctx.workDir, `kproxy-${label}.nft`);
  ctx.log(`cold-sync ${label}: pipeline in a fresh node process`);
  const worker = await runWorker(size, ctx.options.shape, file);

  // The same (deterministic) pipeline in-process, for the rulesets `matches` compares against.
  const { objects } = syntheticCluster(size, ctx.options.shape);
  const rulesets = runPipeline(objects, benchConfig()).rulesets;

  const row = await withNetns(`k${label}`, async (ns) => {
    ctx.log(
      `cold-sync ${label}: nft -f (${(worker.txBytes / 2 ** 20).toFixed(1)} MiB, ${count(worker.commands)} commands)`,
    );
    const nft = await timedInNetns(ns, ['nft', '-f', file], { timeoutMs: ctx.options.kproxyTimeoutMs });
    if (nft.exitCode !== 0 || nft.timedOut) {
      throw new Error(
        `kproxy's transaction failed to load at ${label}: ${nft.timedOut ? 'timeout' : `exit ${nft.exitCode}`} ${nft.stderr}`,
      );
    }
    const list = await timedInNetns(ns, ['nft', '-j', 'list', 'table', 'ip', TABLE], {
      timeoutMs: ctx.options.kproxyTimeoutMs,
    });
    const v0 = performance.now();
    const verified = await new NftablesApplier(new Nft(inNetns(ns))).matches(rulesets);
    const verifyS = (performance.now() - v0) / 1000;
    const teardown = await timedInNetns(ns, ['nft', 'flush', 'ruleset'], { timeoutMs: ctx.options.kproxyTimeoutMs });
    const t = worker.timings;
    const totalS = (t.normalizeMs + t.modelRenderMs + t.txBuildMs) / 1000 + nft.wallS; // = pipelineS + nft wall
    return { size, worker, nft, totalS, list, verified, verifyS, teardownS: teardown.wallS };
  });
  if (!ctx.options.keepFiles) rmSync(file, { force: true });
  ctx.log(
    `cold-sync ${label}: total ${secs(row.totalS)} s (nft ${secs(row.nft.wallS)} s: user ${secs(row.nft.userS)}, sys ${secs(row.nft.sysS)}); read back: nft -j list ${secs(row.list.wallS)} s, matches ${secs(row.verifyS)} s, verified=${row.verified}`,
  );
  if (!row.verified) throw new Error(`the kernel does not hold the desired rulesets after the cold sync at ${label}`);
  return row;
}

export const coldSync: Scenario = {
  name: 'cold-sync',
  description: 'kproxy cold sync: pipeline (fresh process, peak RSS) + nft -f into a fresh netns, verified',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const rows: ColdSyncRow[] = [];
    for (const size of ctx.options.sizes) rows.push(await measure(ctx, size));
    const data: ColdSyncData = { rows };
    return {
      title: 'kproxy cold sync (fresh network namespace per size)',
      tables: [
        {
          columns: [
            'size',
            'svc ports',
            'chains',
            'rules',
            'elements',
            'tx MiB',
            'normalize ms',
            'model+render ms',
            'tx build ms',
            'pipeline s',
            'peak RSS MiB',
          ],
          rows: rows.map((r) => [
            sizeLabel(r.size),
            count(r.worker.counts.servicePorts),
            count(r.worker.counts.chains),
            count(r.worker.counts.rules),
            count(r.worker.counts.elements),
            (r.worker.txBytes / 2 ** 20).toFixed(1),
            ms(r.worker.timings.normalizeMs),
            ms(r.worker.timings.modelRenderMs),
            ms(r.worker.timings.txBuildMs),
            secs(pipelineS(r)),
            r.worker.peakRssMiB.toFixed(0),
          ]),
        },
        {
          columns: [
            'size',
            'nft wall s',
            'nft user s',
            'nft sys s',
            'nft RSS MiB',
            'total s',
            'pipeline %',
            'nft user %',
            'nft sys %',
            'list s',
            'list user s',
            'list sys s',
            'matches s',
            'verified',
          ],
          rows: rows.map((r) => {
            const pct = (v: number | null) => (v === null ? '-' : `${Math.round((100 * v) / r.totalS)}`);
            return [
              sizeLabel(r.size),
              secs(r.nft.wallS),
              secs(r.nft.userS),
              secs(r.nft.sysS),
              r.nft.maxRssKiB !== null ? (r.nft.maxRssKiB / 1024).toFixed(0) : '-',
              secs(r.totalS),
              pct(pipelineS(r)),
              pct(r.nft.userS),
              pct(r.nft.sysS),
              secs(r.list.wallS),
              secs(r.list.userS),
              secs(r.list.sysS),
              secs(r.verifyS),
              r.verified ? 'yes' : 'NO',
            ];
          }),
        },
      ],
      notes: [
        'size = Services x endpoints per Service; normalize = buildSnapshot, model+render = desiredState, tx build = planTransaction (create) + transactionText, all in a fresh Node process.',
        "nft user = nft's own parsing/evaluation, nft sys = system time of nft's process (the kernel committing the batch); total = normalize + model+render + tx build + nft wall.",
        'peak RSS = maxRSS of the pipeline process, which also holds the synthetic API objects (input RSS in the JSON); nft RSS = maxRSS of nft -f.',
        "list = `nft -j list table ip kproxy` after the load (a complete read: what `kproxy sync` and the daemon's start-up and every 10th consistency sync do; the other syncs read chains, sets and maps only); matches = NftablesApplier.matches (list + parse + plan), the check that the kernel holds the desired rulesets.",
      ],
      data,
    };
  },
};
