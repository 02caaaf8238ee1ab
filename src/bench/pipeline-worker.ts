/**
 * @module bench/pipeline-worker
 * Child process of the bench: one cold pipeline run in a fresh Node process (cold JIT, empty
 * heap, as when kproxy starts), so its timings and its peak RSS belong to that run alone.
 *
 *   node src/bench/pipeline-worker.ts --services N --endpoints E [--nodes 50] [--affinity-percent P] [--out FILE]
 *
 * Prints one JSON line (`WorkerReport`) on stdout; writes the nft transaction text to FILE.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CLUSTER_ARG_OPTIONS, clusterFromArgs, syntheticCluster, type ClusterStats } from './cluster-gen.ts';
import { benchConfig, runPipeline, type PipelineTimings, type RulesetCounts } from './pipeline.ts';

export interface WorkerReport {
  readonly cluster: ClusterStats;
  readonly generateMs: number;
  readonly timings: PipelineTimings;
  readonly counts: RulesetCounts;
  readonly commands: number;
  readonly txBytes: number;
  readonly problems: number;
  /** RSS once the raw objects exist (the input the API would have delivered), MiB. */
  readonly inputRssMiB: number;
  /** Peak RSS of the whole process (`process.resourceUsage().maxRSS`), MiB. */
  readonly peakRssMiB: number;
  readonly heapUsedMiB: number;
}

function main(): void {
  const { values } = parseArgs({
    options: { ...CLUSTER_ARG_OPTIONS, out: { type: 'string' } },
  });
  const { size, shape } = clusterFromArgs(values);

  const g0 = performance.now();
  const { objects, stats } = syntheticCluster(size, shape);
  const generateMs = performance.now() - g0;
  const inputRss = process.memoryUsage().rss;

  const config = benchConfig();
  const run = runPipeline(objects, config);
  const heapUsed = process.memoryUsage().heapUsed;
  const peakRssKiB = process.resourceUsage().maxRSS;
  if (values.out) writeFileSync(values.out, run.text);

  const report: WorkerReport = {
    cluster: stats,
    generateMs,
    timings: run.timings,
    counts: run.counts,
    commands: run.commands.length,
    txBytes: Buffer.byteLength(run.text),
    problems: run.problems,
    inputRssMiB: inputRss / 2 ** 20,
    peakRssMiB: peakRssKiB / 1024,
    heapUsedMiB: heapUsed / 2 ** 20,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

if (import.meta.main) main();
