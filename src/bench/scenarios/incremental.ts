/**
 * @module bench/scenarios/incremental
 * Incremental syncs through the running daemon (`daemon-worker.ts`: the real runner, proxier and
 * nft against a fresh network namespace) at each size: one endpoint changed, one Service added,
 * one deleted — event → kernel latency p50/p99 over `changes` of each — and the daemon's peak RSS.
 * The runner's minSyncPeriod is 0 here so that each change is measured alone (the daemon's
 * default of 1 s paces bursts, as upstream's does; that wait is policy, not cost).
 */
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { sizeLabel, type ClusterSize } from '../cluster-gen.ts';
import { fixed, ms, percentile } from '../format.ts';
import { killTracked, spawnTracked, withNetns } from '../netns.ts';
import type { BenchContext, Scenario, ScenarioResult } from '../scenario.ts';
import { KPROXY_NODE_FLAGS } from './cold-sync.ts';

const WORKER = fileURLToPath(new URL('../daemon-worker.ts', import.meta.url));
const KINDS = ['endpoint', 'add', 'delete'] as const;
type Kind = (typeof KINDS)[number];

export interface IncrementalRow {
  readonly size: ClusterSize;
  /** Latencies in ms, per kind of change. */
  readonly latencies: Record<Kind, number[]>;
  readonly peakRssMiB: number;
  readonly heapUsedMiB: number;
  readonly startS: number;
}

async function measure(ctx: BenchContext, size: ClusterSize, changes: number): Promise<IncrementalRow> {
  const label = sizeLabel(size);
  return withNetns(`i${label}`, async (ns) => {
    ctx.log(`incremental ${label}: starting the daemon`);
    const t0 = performance.now();
    const child = spawnTracked(
      process.execPath,
      [
        ...KPROXY_NODE_FLAGS,
        WORKER,
        '--netns',
        ns,
        '--services',
        String(size.services),
        '--endpoints',
        String(size.endpointsPerService),
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    try {
      if (!child.stdout || !child.stdin) throw new Error(`daemon worker for ${label}: no pipes`);
      const { stdin } = child;
      const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
      const next = async (): Promise<Record<string, number>> => {
        const r = await lines.next();
        if (r.done) throw new Error(`daemon worker for ${label} exited`);
        return JSON.parse(r.value) as Record<string, number>;
      };
      await next(); // ready: the first (full) sync is in the kernel
      const startS = (performance.now() - t0) / 1000;
      const send = (o: unknown) => stdin.write(`${JSON.stringify(o)}\n`);
      const latencies: Record<Kind, number[]> = { endpoint: [], add: [], delete: [] };
      for (const kind of KINDS) {
        for (let k = 0; k < changes; k++) {
          // Different Services each time, spread over the cluster.
          const i = (k * 7919) % size.services;
          send({ op: 'change', kind, i });
          latencies[kind].push((await next())['ms'] ?? NaN);
          // Let the sync's follow-up work (conntrack, health) finish, as between real events.
          await new Promise((r) => setTimeout(r, 20));
        }
        ctx.log(
          `incremental ${label}: ${kind} p50 ${ms(
            percentile(
              [...latencies[kind]].sort((a, b) => a - b),
              50,
            ),
          )} ms`,
        );
      }
      send({ op: 'stats' });
      const stats = await next();
      return {
        size,
        latencies,
        peakRssMiB: stats['peakRssMiB'] ?? NaN,
        heapUsedMiB: stats['heapUsedMiB'] ?? NaN,
        startS,
      };
    } finally {
      killTracked(child);
    }
  });
}

export const incremental: Scenario = {
  name: 'incremental',
  description: 'incremental syncs through the running daemon: event → kernel latency (p50/p99) and daemon peak RSS',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const changes = ctx.options.changes;
    const rows: IncrementalRow[] = [];
    for (const size of ctx.options.sizes) rows.push(await measure(ctx, size, changes));
    const p = (list: readonly number[], q: number) =>
      ms(
        percentile(
          [...list].sort((a, b) => a - b),
          q,
        ),
      );
    return {
      title: `incremental syncs through the daemon (${changes} changes of each kind, minSyncPeriod 0)`,
      tables: [
        {
          columns: [
            'size',
            'start s',
            'endpoint p50 ms',
            'endpoint p99 ms',
            'add p50 ms',
            'add p99 ms',
            'delete p50 ms',
            'delete p99 ms',
            'daemon peak RSS MiB',
          ],
          rows: rows.map((r) => [
            sizeLabel(r.size),
            fixed(r.startS, 2),
            p(r.latencies.endpoint, 50),
            p(r.latencies.endpoint, 99),
            p(r.latencies.add, 50),
            p(r.latencies.add, 99),
            p(r.latencies.delete, 50),
            p(r.latencies.delete, 99),
            fixed(r.peakRssMiB, 0),
          ]),
        },
      ],
      notes: [
        "Latency: from the change entering the daemon's source to the end of the `nft -f` that carried it (runner, proxier, transaction, nft process, kernel commit).",
        'Peak RSS: the whole daemon process after the initial full sync and all changes.',
      ],
      data: { changes, rows },
    };
  },
};
