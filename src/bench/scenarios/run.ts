/**
 * @module bench/scenarios/run
 * `kproxy run` as a user runs it, whole process, per size and mode: the synthetic cluster served
 * by the fake API server, `bin/kproxy run --kubeconfig …` in a fresh network namespace
 * (`run-worker.ts` does the measuring inside it): exec → first list request, cold start → every
 * Service in the kernel, kill -9 + a change while down + restart → that change in the kernel,
 * one EndpointSlice change through the API → in the kernel (p50/p99 over `--changes`), and the
 * daemon's peak RSS.
 */
import { fileURLToPath } from 'node:url';
import { clusterArgs, sizeLabel, type ClusterSize } from '../cluster-gen.ts';
import { fixed, ms, percentile, secs } from '../format.ts';
import { runForJson, withNetns } from '../netns.ts';
import type { BenchMode } from '../pipeline.ts';
import type { RunReport } from '../run-worker.ts';
import type { BenchContext, Scenario, ScenarioResult } from '../scenario.ts';
import { knownTimeout } from './modes.ts';

const WORKER = fileURLToPath(new URL('../run-worker.ts', import.meta.url));

export interface RunRow {
  readonly size: ClusterSize;
  readonly mode: BenchMode;
  readonly report?: RunReport;
  /** Not measured (a cold sync of this mode already timed out at this size or a smaller one). */
  readonly skipped?: string;
  /** The worker failed (its error): the other sizes and modes are still measured. */
  readonly failed?: string;
}

export interface RunData {
  readonly changes: number;
  readonly restarts: number;
  readonly rows: readonly RunRow[];
}

const sorted = (list: readonly number[]) => [...list].sort((a, b) => a - b);

/** p50 / p99 of a run's endpoint changes, ms (NaN without a measurement). */
export function changePercentiles(r: RunRow): { p50: number; p99: number } {
  const s = sorted(r.report?.changeMs ?? []);
  return { p50: percentile(s, 50), p99: percentile(s, 99) };
}

async function measure(ctx: BenchContext, size: ClusterSize, mode: BenchMode): Promise<RunRow> {
  const label = `${sizeLabel(size)} ${mode}`;
  const known = knownTimeout(ctx, mode, size);
  if (known) {
    ctx.log(`run ${label}: skipped: ${known}`);
    return { size, mode, skipped: known };
  }
  const { options } = ctx;
  return withNetns(`r${sizeLabel(size)}${mode.slice(0, 3)}`, async (ns) => {
    ctx.log(`run ${label}: kproxy run against the fake API server`);
    let report: RunReport;
    try {
      report = await runForJson<RunReport>(`run-worker ${label}`, 'ip', [
        'netns',
        'exec',
        ns,
        process.execPath,
        WORKER,
        ...clusterArgs(size, options.shape),
        '--mode',
        mode,
        '--iptables-flavor',
        options.iptablesFlavor,
        '--restarts',
        String(options.restarts),
        '--changes',
        String(options.changes),
        '--timeout-ms',
        String(options.kproxyTimeoutMs),
      ]);
    } catch (err) {
      const failed = err instanceof Error ? err.message : String(err);
      ctx.log(`run ${label}: failed: ${failed}`);
      return { size, mode, failed };
    }
    const { p50, p99 } = changePercentiles({ size, mode, report });
    ctx.log(
      `run ${label}: ${report.cold.timedOut ? 'cold start timed out after ' : 'programmed after '}${secs(report.cold.programmedMs / 1000)} s; endpoint change p50 ${ms(p50)} / p99 ${ms(p99)} ms`,
    );
    return { size, mode, report };
  });
}

export const run: Scenario = {
  name: 'run',
  description:
    '`kproxy run` against the fake API server, whole process: first list, start → programmed, kill -9 + restart → change, endpoint change → kernel, peak RSS',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const rows: RunRow[] = [];
    for (const size of ctx.options.sizes)
      for (const mode of ctx.options.modes) rows.push(await measure(ctx, size, mode));
    const median = (xs: readonly number[]) => percentile(sorted(xs), 50);
    const table = {
      columns: [
        'size',
        'mode',
        'exec → list ms',
        'start → programmed s',
        'first sync s',
        'restart → change s',
        'restart → list ms',
        'endpoint p50 ms',
        'endpoint p99 ms',
        'peak RSS MiB',
        'tool child peak RSS MiB',
      ],
      rows: rows.map((r) => {
        const rep = r.report;
        const { p50, p99 } = changePercentiles(r);
        const restarts = rep?.restarts ?? [];
        return [
          sizeLabel(r.size),
          rep?.flavor ? `${r.mode} (${rep.flavor})` : r.mode,
          ms(rep?.cold.listMs),
          r.failed ? 'failed' : `${rep?.cold.timedOut ? '>' : ''}${secs((rep?.cold.programmedMs ?? NaN) / 1000)}`,
          secs((rep?.cold.firstSyncMs ?? NaN) / 1000),
          secs(median(restarts.map((x) => x.convergedMs)) / 1000),
          ms(median(restarts.map((x) => x.listMs))),
          ms(p50),
          ms(p99),
          fixed(Math.max(...(rep?.peakRssKiB ?? [])) / 1024, 0),
          fixed(Math.max(...(rep?.toolPeakRssKiB ?? [])) / 1024, 0),
        ];
      }),
    };
    const observed = [...new Set(rows.map((r) => r.report?.observedBy).filter(Boolean))].join(', ');
    const notes = [
      '`bin/kproxy run --kubeconfig` (default flags but --hostname-override, --cluster-cidr, --proxy-mode) in a fresh namespace, against the fake API server (test/support/fake-apiserver.ts) serving the synthetic cluster from the same namespace (its CPU is on this machine too: a real API server is elsewhere).',
      "exec → list = to the first list request the server saw; start → programmed = exec to the last endpoint on this node (one of the last Services) seen in the kernel: nftables mode lists kproxy's hairpin set alone (`nft list set ip kproxy hairpin`: local endpoints only, ~2% here, so cheap at any size), iptables mode lists the endpoint's own KUBE-SEP chain (`iptables -t nat -S CHAIN`, named as kproxy names it: 0.00 s where iptables-save takes 2.3 s at 30k rules); polled every 10 ms, or 4× the last look's time if longer (at most a fifth of a core). A sync is one transaction, so every Service is then in. first sync = the first sync's own duration as kproxy logs it.",
      `restart → change: kill -9, one EndpointSlice changed while kproxy is down (its first endpoint replaced by a new pod on this node), exec again → that change in the kernel (polled as above); median of ${ctx.options.restarts}.`,
      `endpoint p50/p99: one EndpointSlice update through the API (the same kind of change) → the new endpoint in the kernel (${observed || 'nft monitor / polling'}), over ${ctx.options.changes} changes spaced by the daemon's minSyncPeriod (default 1 s) + 0.1 s so that each is measured alone.`,
      "peak RSS: the largest VmHWM of the kproxy processes (the cold one, each restarted one; the last after all changes); tool child: the largest VmHWM among their descendants (the spawner's child, where libnftables commits and the netlink reads run), read before each stop.",
    ];
    for (const r of rows.filter((x) => x.skipped)) notes.push(`${sizeLabel(r.size)} ${r.mode} skipped: ${r.skipped}.`);
    for (const r of rows.filter((x) => x.failed))
      notes.push(`${sizeLabel(r.size)} ${r.mode} failed: ${r.failed?.split('\n').slice(0, 6).join(' / ')}`);
    return {
      title: `kproxy run against the fake API server (whole process; ${ctx.options.restarts} restarts, ${ctx.options.changes} endpoint changes)`,
      tables: [table],
      notes,
      data: { changes: ctx.options.changes, restarts: ctx.options.restarts, rows } satisfies RunData,
    };
  },
};
