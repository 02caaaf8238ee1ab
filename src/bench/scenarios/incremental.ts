/**
 * @module bench/scenarios/incremental
 * Incremental syncs through the running daemon (`daemon-worker.ts`: the real runner, proxier and
 * the mode's backend against a fresh network namespace) at each size and in each mode: one
 * endpoint changed, one Service added, one deleted — event → kernel latency p50/p99 over
 * `changes` of each — and the daemon's peak RSS. The runner's minSyncPeriod is 0 here so that
 * each change is measured alone (the daemon's default of 1 s paces bursts, as upstream's does;
 * that wait is policy, not cost).
 */
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { sizeLabel, type ClusterSize } from '../cluster-gen.ts';
import { fixed, ms, percentile, ratio } from '../format.ts';
import { killTracked, spawnTracked, withNetns } from '../netns.ts';
import type { BenchMode } from '../pipeline.ts';
import type { BenchContext, Scenario, ScenarioResult, Table } from '../scenario.ts';
import { KPROXY_DAEMON_NODE_FLAGS, KPROXY_ENV } from './cold-sync.ts';
import { knownTimeout } from './modes.ts';

const WORKER = fileURLToPath(new URL('../daemon-worker.ts', import.meta.url));
const KINDS = ['endpoint', 'add', 'delete'] as const;
type Kind = (typeof KINDS)[number];

export interface IncrementalRow {
  readonly size: ClusterSize;
  readonly mode: BenchMode;
  /** iptables mode: the flavor kproxy chose (from the restore program it ran). */
  readonly flavor?: string;
  /** Event → the end of the sync's last kernel write, ms, per kind of change. */
  readonly latencies: Record<Kind, number[]>;
  /** Event → the end of the sync's first kernel write (iptables: the IPv4 restore), ms. */
  readonly firstWrite: Record<Kind, number[]>;
  readonly peakRssMiB: number;
  /** The spawner's child (kernel tools, libnftables): a process of its own beside the daemon. */
  readonly childPeakRssMiB: number;
  readonly heapUsedMiB: number;
  /** Worker start → the first full sync in the kernel. */
  readonly startS: number;
  /** Not measured: the first full sync did not finish within the time limit (then startS is a lower bound), or a
   * cold sync of this mode already did not at this size or a smaller one. */
  readonly skipped?: string;
}

const sorted = (list: readonly number[]) => [...list].sort((a, b) => a - b);
const p = (list: readonly number[], q: number) => percentile(sorted(list), q);

const NO_LATENCIES = (): Record<Kind, number[]> => ({ endpoint: [], add: [], delete: [] });

/** A row without measurements, saying why. */
function notMeasured(size: ClusterSize, mode: BenchMode, skipped: string, startS: number): IncrementalRow {
  const none = { latencies: NO_LATENCIES(), firstWrite: NO_LATENCIES() };
  return { size, mode, ...none, peakRssMiB: NaN, childPeakRssMiB: NaN, heapUsedMiB: NaN, startS, skipped };
}

async function measure(
  ctx: BenchContext,
  size: ClusterSize,
  mode: BenchMode,
  changes: number,
): Promise<IncrementalRow> {
  const label = `${sizeLabel(size)} ${mode}`;
  const skip = (skipped: string, startS: number): IncrementalRow => {
    ctx.log(`incremental ${label}: skipped: ${skipped}`);
    return notMeasured(size, mode, skipped, startS);
  };
  const known = knownTimeout(ctx, mode, size);
  if (known) return skip(known, NaN);
  return withNetns(`i${sizeLabel(size)}${mode.slice(0, 3)}`, async (ns) => {
    ctx.log(`incremental ${label}: starting the daemon`);
    const t0 = performance.now();
    const child = spawnTracked(
      process.execPath,
      [
        ...KPROXY_DAEMON_NODE_FLAGS,
        WORKER,
        '--netns',
        ns,
        '--mode',
        mode,
        '--iptables-flavor',
        ctx.options.iptablesFlavor,
        '--services',
        String(size.services),
        '--endpoints',
        String(size.endpointsPerService),
      ],
      { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...KPROXY_ENV } },
    );
    // The first full sync may be slow (iptables-nft at 10k): the same limit as a cold sync.
    let killed = false;
    const startLimit = setTimeout(() => {
      killed = true;
      killTracked(child);
    }, ctx.options.kproxyTimeoutMs);
    try {
      if (!child.stdout || !child.stdin) throw new Error(`daemon worker for ${label}: no pipes`);
      const { stdin } = child;
      const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
      const nextLine = async (): Promise<Record<string, unknown>> => {
        const r = await lines.next();
        if (r.done) throw new Error(`daemon worker for ${label} exited (or was killed after its time limit)`);
        return JSON.parse(r.value) as Record<string, unknown>;
      };
      const next = async (): Promise<Record<string, number>> => (await nextLine()) as Record<string, number>;
      try {
        await next(); // ready: the first (full) sync is in the kernel
      } catch (err) {
        if (!killed) throw err;
        const s = (performance.now() - t0) / 1000;
        return skip(`the daemon's first full sync did not finish within ${s.toFixed(0)} s`, s);
      }
      clearTimeout(startLimit);
      const startS = (performance.now() - t0) / 1000;
      ctx.log(`incremental ${label}: first full sync in ${startS.toFixed(2)} s`);
      const send = (o: unknown) => stdin.write(`${JSON.stringify(o)}\n`);
      const latencies: Record<Kind, number[]> = { endpoint: [], add: [], delete: [] };
      const firstWrite: Record<Kind, number[]> = { endpoint: [], add: [], delete: [] };
      for (const kind of KINDS) {
        for (let k = 0; k < changes; k++) {
          // Different Services each time, spread over the cluster.
          const i = (k * 7919) % size.services;
          send({ op: 'change', kind, i });
          const r = await next();
          latencies[kind].push(r['ms'] ?? NaN);
          firstWrite[kind].push(r['firstMs'] ?? NaN);
          // Let the sync's follow-up work (conntrack, health) finish, as between real events.
          await new Promise((res) => setTimeout(res, 20));
        }
        ctx.log(`incremental ${label}: ${kind} p50 ${ms(p(latencies[kind], 50))} ms`);
      }
      send({ op: 'stats' });
      const stats = await nextLine();
      const tool = typeof stats['tool'] === 'string' ? stats['tool'] : '';
      const flavor = /^ip6?tables-(\w+)-restore$/.exec(tool)?.[1];
      return {
        size,
        mode,
        ...(flavor ? { flavor } : {}),
        latencies,
        firstWrite,
        peakRssMiB: Number(stats['peakRssMiB'] ?? NaN),
        childPeakRssMiB: Number(stats['childPeakRssMiB'] ?? NaN),
        heapUsedMiB: Number(stats['heapUsedMiB'] ?? NaN),
        startS,
      };
    } finally {
      clearTimeout(startLimit);
      killTracked(child);
    }
  });
}

export const incremental: Scenario = {
  name: 'incremental',
  description:
    'incremental syncs through the running daemon, per mode: event → kernel latency (p50/p99) and daemon peak RSS',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const { changes, modes } = ctx.options;
    const rows: IncrementalRow[] = [];
    for (const size of ctx.options.sizes)
      for (const mode of modes) {
        try {
          rows.push(await measure(ctx, size, mode, changes));
        } catch (err) {
          // The daemon failed (say out of memory): the other sizes and modes still run.
          const failed = `failed: ${err instanceof Error ? err.message : String(err)}`;
          ctx.log(`incremental ${sizeLabel(size)} ${mode}: ${failed}`);
          rows.push(notMeasured(size, mode, failed, NaN));
        }
      }
    const tables: Table[] = [
      {
        columns: [
          'size',
          'mode',
          'start s',
          'endpoint p50 ms',
          'endpoint p99 ms',
          'add p50 ms',
          'add p99 ms',
          'delete p50 ms',
          'delete p99 ms',
          'daemon peak RSS MiB',
          'tool child peak RSS MiB',
        ],
        rows: rows.map((r) => [
          sizeLabel(r.size),
          r.flavor ? `${r.mode} (${r.flavor})` : r.mode,
          r.skipped && Number.isFinite(r.startS) ? `>${fixed(r.startS, 0)}` : fixed(r.startS, 2),
          ms(p(r.latencies.endpoint, 50)),
          ms(p(r.latencies.endpoint, 99)),
          ms(p(r.latencies.add, 50)),
          ms(p(r.latencies.add, 99)),
          ms(p(r.latencies.delete, 50)),
          ms(p(r.latencies.delete, 99)),
          fixed(r.peakRssMiB, 0),
          fixed(r.childPeakRssMiB, 0),
        ]),
      },
    ];
    const pairs = ctx.options.sizes.flatMap((size) => {
      const of = (m: BenchMode) => rows.find((r) => r.size === size && r.mode === m);
      const n = of('nftables');
      const i = of('iptables');
      return n && i && !n.skipped && !i.skipped ? [{ size, n, i }] : [];
    });
    if (pairs.length > 0) {
      const q = (a: readonly number[], b: readonly number[], pct: number) => ratio(p(a, pct) / p(b, pct));
      tables.push({
        columns: [
          'size',
          'iptables ÷ nftables: endpoint p50',
          'endpoint p99',
          'add p50',
          'add p99',
          'delete p50',
          'delete p99',
          'daemon peak RSS',
          'start',
        ],
        rows: pairs.map(({ size, n, i }) => [
          sizeLabel(size),
          q(i.latencies.endpoint, n.latencies.endpoint, 50),
          q(i.latencies.endpoint, n.latencies.endpoint, 99),
          q(i.latencies.add, n.latencies.add, 50),
          q(i.latencies.add, n.latencies.add, 99),
          q(i.latencies.delete, n.latencies.delete, 50),
          q(i.latencies.delete, n.latencies.delete, 99),
          ratio(i.peakRssMiB / n.peakRssMiB),
          ratio(i.startS / n.startS),
        ]),
      });
    }
    const notes = [
      "Latency: from the change entering the daemon's source to the end of the last kernel write of the sync that carried it (runner, proxier, render, the kernel tool, the kernel's commit): nftables mode one `nft -f` for both families (served by libnftables in the spawner's child), iptables mode one `iptables-restore --noflush` per family (IPv4, then IPv6).",
      'start = worker start to the first full sync in the kernel; peak RSS: the whole daemon process after the initial full sync and all changes; the tool child (the spawner, where libnftables runs) is a process of its own, its peak beside.',
    ];
    for (const r of rows.filter((x) => x.skipped)) notes.push(`${sizeLabel(r.size)} ${r.mode} skipped: ${r.skipped}.`);
    for (const r of rows.filter((x) => x.mode === 'iptables' && !x.skipped)) {
      notes.push(
        `iptables ${sizeLabel(r.size)}: the IPv4 restore (the family of every change here) ends at p50 ${KINDS.map(
          (k) => `${ms(p(r.firstWrite[k], 50))} (${k})`,
        ).join(', ')} ms; the IPv6 restore of the same sync (shared chains rewritten) makes up the rest.`,
      );
    }
    return {
      title: `incremental syncs through the daemon (${changes} changes of each kind, minSyncPeriod 0)`,
      tables,
      notes,
      data: { changes, rows },
    };
  },
};
