/**
 * @module bench/scenarios/upstream-cold-sync
 * The same cold load in upstream kube-proxy's classic nftables layout (`upstream-layout.ts`),
 * generated from the same NodeState kproxy renders, loaded with `nft -f` into a fresh namespace
 * and timed the same way. Sizes above `--upstream-max-services` are skipped; a load that runs past
 * `--upstream-timeout` is killed and reported as a timeout (a lower bound, not a figure).
 */
import { closeSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { sizeLabel, syntheticCluster, type ClusterSize } from '../cluster-gen.ts';
import { count, ratio, secs } from '../format.ts';
import { withNetns } from '../netns.ts';
import { benchConfig } from '../pipeline.ts';
import type { BenchContext, Scenario, ScenarioResult } from '../scenario.ts';
import { timedInNetns, type TimedResult } from '../timed-exec.ts';
import { writeUpstreamLayout, type UpstreamStats } from '../upstream-layout.ts';
import { buildSnapshot } from '../../source/normalize.ts';
import { nodeStates } from '../../proxy/desired.ts';
import { renderFamilies } from '../../backends/nftables/render/layout.ts';
import type { ColdSyncData } from './cold-sync.ts';

export type UpstreamStatus = 'ok' | 'timeout' | 'failed' | 'skipped';

export interface UpstreamRow {
  readonly size: ClusterSize;
  readonly status: UpstreamStatus;
  readonly reason?: string;
  readonly stats?: UpstreamStats;
  readonly txBytes?: number;
  readonly generateS?: number;
  readonly nft?: TimedResult;
  readonly teardownS?: number;
  /** Upstream nft wall / kproxy nft wall at the same size. */
  readonly vsKproxyNft?: number;
  /** Upstream nft wall / kproxy total cold sync (pipeline + nft) at the same size. */
  readonly vsKproxyTotal?: number;
}

export interface UpstreamData {
  readonly rows: readonly UpstreamRow[];
  readonly timeoutS: number;
}

/** Writes lines to a file through a 1 MiB buffer (the transaction can be hundreds of MiB). */
function lineWriter(path: string): { emit: (line: string) => void; close: () => number } {
  const fd = openSync(path, 'w');
  let chunks: string[] = [];
  let pending = 0;
  let bytes = 0;
  const flush = () => {
    if (chunks.length === 0) return;
    const buf = Buffer.from(chunks.join(''));
    writeSync(fd, buf);
    bytes += buf.length;
    chunks = [];
    pending = 0;
  };
  return {
    emit(line) {
      chunks.push(line, '\n');
      pending += line.length + 1;
      if (pending > 1 << 20) flush();
    },
    close() {
      flush();
      closeSync(fd);
      return bytes;
    },
  };
}

async function measure(ctx: BenchContext, size: ClusterSize, kproxy: ColdSyncData | undefined): Promise<UpstreamRow> {
  const label = sizeLabel(size);
  if (size.services > ctx.options.upstreamMaxServices) {
    return { size, status: 'skipped', reason: `more than --upstream-max-services ${ctx.options.upstreamMaxServices}` };
  }
  const file = join(ctx.workDir, `upstream-${label}.nft`);
  const g0 = performance.now();
  const config = benchConfig();
  const { snapshot } = buildSnapshot(syntheticCluster(size, ctx.options.shape).objects, config.nodeName);
  const states = renderFamilies(nodeStates(snapshot, config)).families.map((f) => f.state);
  const w = lineWriter(file);
  const stats = writeUpstreamLayout(states, w.emit);
  const txBytes = w.close();
  const generateS = (performance.now() - g0) / 1000;

  ctx.log(
    `upstream ${label}: nft -f (${(txBytes / 2 ** 20).toFixed(1)} MiB, ${count(stats.chains)} chains, ${count(stats.anonymousSets)} anonymous maps; timeout ${ctx.options.upstreamTimeoutMs / 1000} s)`,
  );
  const { nft, teardownS } = await withNetns(`u${label}`, async (ns) => {
    const nft = await timedInNetns(ns, ['nft', '-f', file], { timeoutMs: ctx.options.upstreamTimeoutMs });
    // Empty the namespace here, timed, so its destruction does not run on in the background
    // while the next measurement is taken.
    const teardown = await timedInNetns(ns, ['nft', 'flush', 'ruleset'], { timeoutMs: ctx.options.upstreamTimeoutMs });
    return { nft, teardownS: teardown.wallS };
  });
  if (!ctx.options.keepFiles) rmSync(file, { force: true });

  const status: UpstreamStatus = nft.timedOut ? 'timeout' : nft.exitCode === 0 ? 'ok' : 'failed';
  const k = kproxy?.rows.find(
    (r) => r.size.services === size.services && r.size.endpointsPerService === size.endpointsPerService,
  );
  const row: UpstreamRow = {
    size,
    status,
    ...(status === 'failed' ? { reason: nft.stderr } : {}),
    stats,
    txBytes,
    generateS,
    nft,
    teardownS,
    ...(k && status === 'ok' ? { vsKproxyNft: nft.wallS / k.nft.wallS, vsKproxyTotal: nft.wallS / k.totalS } : {}),
  };
  ctx.log(
    `upstream ${label}: ${status} after ${secs(nft.wallS)} s (user ${secs(nft.userS)}, sys ${secs(nft.sysS)})${row.vsKproxyNft ? `, ${ratio(row.vsKproxyNft)} kproxy's nft load` : ''}; teardown ${secs(teardownS)} s`,
  );
  return row;
}

export const upstreamColdSync: Scenario = {
  name: 'upstream',
  description:
    "the same cold load in upstream kube-proxy's classic nftables layout (per-endpoint chains, numgen vmaps)",
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const kproxy = ctx.results.get('cold-sync')?.data as ColdSyncData | undefined;
    const rows: UpstreamRow[] = [];
    for (const size of ctx.options.sizes) rows.push(await measure(ctx, size, kproxy));
    const data: UpstreamData = { rows, timeoutS: ctx.options.upstreamTimeoutMs / 1000 };
    const kproxyRow = (s: ClusterSize) =>
      kproxy?.rows.find((r) => r.size.services === s.services && r.size.endpointsPerService === s.endpointsPerService);
    return {
      title: "upstream kube-proxy's classic nftables layout, same state (fresh network namespace per size)",
      tables: [
        {
          columns: [
            'size',
            'chains',
            'rules',
            'anon maps',
            'tx MiB',
            'nft wall s',
            'nft user s',
            'nft sys s',
            'status',
            'kproxy nft s',
            'vs kproxy nft',
            'vs kproxy total',
          ],
          rows: rows.map((r) => {
            const k = kproxyRow(r.size);
            const wall = r.status === 'timeout' ? `>${secs(r.nft?.wallS)}` : secs(r.nft?.wallS);
            const lower =
              r.status === 'timeout' && r.nft && k ? `>${ratio(r.nft.wallS / k.nft.wallS)}` : ratio(r.vsKproxyNft);
            const lowerTotal =
              r.status === 'timeout' && r.nft && k ? `>${ratio(r.nft.wallS / k.totalS)}` : ratio(r.vsKproxyTotal);
            return [
              sizeLabel(r.size),
              r.stats ? count(r.stats.chains) : '-',
              r.stats ? count(r.stats.rules) : '-',
              r.stats ? count(r.stats.anonymousSets) : '-',
              r.txBytes !== undefined ? (r.txBytes / 2 ** 20).toFixed(1) : '-',
              r.status === 'skipped' ? '-' : wall,
              r.status === 'ok' ? secs(r.nft?.userS) : '-',
              r.status === 'ok' ? secs(r.nft?.sysS) : '-',
              r.status,
              k ? secs(k.nft.wallS) : '-',
              r.status === 'ok' || r.status === 'timeout' ? lower : '-',
              r.status === 'ok' || r.status === 'timeout' ? lowerTotal : '-',
            ];
          }),
        },
      ],
      notes: [
        "vs kproxy nft = upstream nft wall / kproxy nft wall; vs kproxy total = upstream nft wall / kproxy total cold sync (upstream's own Go-side time not included).",
        `a timeout (--upstream-timeout ${data.timeoutS} s) is a lower bound: the load was killed, not finished.`,
      ],
      data,
    };
  },
};
