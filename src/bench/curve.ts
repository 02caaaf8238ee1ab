/**
 * @module bench/curve
 * What `--plot` draws (issue 9: the curve, published): two panels against the number of
 * Services, both logarithmic — the cold sync (the whole `kproxy sync --manifests` process from
 * the `modes` scenario, else the pipeline + `nft -f` of `cold-sync`; upstream's classic layout
 * loaded by `nft -f` when the `upstream` scenario ran) and the sync latency of one endpoint change
 * (p50 and p99 through the daemon, `incremental`, else `kproxy run`'s from the `run` scenario) —
 * beside upstream kube-proxy's published figures as labelled reference points: other machines,
 * other sizes, other kube-proxy versions, so only an order of magnitude to compare with.
 */
import { percentile } from './format.ts';
import type { PlotPanel, PlotSeries, PlotSpec } from './plot.ts';
import type { BenchMode } from './pipeline.ts';
import type { ScenarioResult } from './scenario.ts';
import type { ColdSyncData } from './scenarios/cold-sync.ts';
import type { IncrementalRow } from './scenarios/incremental.ts';
import type { ModesData } from './scenarios/modes.ts';
import { changePercentiles, type RunData } from './scenarios/run.ts';
import type { UpstreamData } from './scenarios/upstream-cold-sync.ts';

/** One measured figure at a size. */
interface Measured {
  readonly mode: BenchMode;
  readonly services: number;
  readonly endpointsPerService: number;
  readonly seconds: number;
  readonly atLeast?: boolean;
}

const MARKERS = ['circle', 'square', 'triangle', 'diamond'] as const;
const COLORS: Record<BenchMode, readonly string[]> = {
  nftables: ['#1565c0', '#6a1b9a'],
  iptables: ['#2e7d32', '#00838f'],
};
/** Upstream's layout is an nftables one: its shades under that key. */
const UPSTREAM_MEASURED: Record<BenchMode, readonly string[]> = { nftables: ['#ef6c00', '#8d6e63'], iptables: [] };
const PUBLISHED = '#c62828';

/** Upstream kube-proxy's published figures (issue 9), at the x position they correspond to. */
const PUBLISHED_COLD: readonly { services: number; seconds: number; label: string }[] = [
  { services: 10_000, seconds: 9 * 60, label: 'upstream: 9 min to create 10k × 2' },
];
const PUBLISHED_SYNC: readonly { services: number; seconds: number; label: string }[] = [
  { services: 25_000, seconds: 13 * 60, label: 'upstream: 13 min per sync, 250k endpoints' },
  { services: 44_000, seconds: 1.33, label: 'upstream: 1.33 s incremental, 44k Services' },
];

/** One series per mode and endpoints-per-Service count (lines of the same mode share a colour family). */
function seriesOf(
  figures: readonly Measured[],
  label: (mode: BenchMode, e: number) => string,
  dashed = false,
  colors: Record<BenchMode, readonly string[]> = COLORS,
): PlotSeries[] {
  const keys = [...new Set(figures.map((f) => `${f.mode}/${f.endpointsPerService}`))].sort();
  const epsOf = (mode: BenchMode) =>
    [...new Set(figures.filter((f) => f.mode === mode).map((f) => f.endpointsPerService))].sort((a, b) => a - b);
  return keys.map((key) => {
    const [mode, e] = key.split('/') as [BenchMode, string];
    const i = epsOf(mode).indexOf(Number(e));
    return {
      label: label(mode, Number(e)),
      color: colors[mode][i % 2] ?? '#000',
      marker: MARKERS[i % MARKERS.length] ?? 'circle',
      dashed,
      points: figures
        .filter((f) => f.mode === mode && f.endpointsPerService === Number(e))
        .map((f) => ({ services: f.services, seconds: f.seconds, ...(f.atLeast ? { atLeast: true } : {}) })),
    };
  });
}

function published(points: typeof PUBLISHED_COLD, what: string): PlotSeries {
  return {
    label: `upstream kube-proxy, ${what} (published; other machines)`,
    color: PUBLISHED,
    marker: 'diamond',
    lines: false,
    points: points.map((p) => ({ services: p.services, seconds: p.seconds, label: p.label })),
  };
}

interface Panel {
  readonly panel: PlotPanel;
  /** What the kproxy figures are, for the caption. */
  readonly caption: string;
}

function coldPanel(results: ReadonlyMap<string, ScenarioResult>): Panel | undefined {
  const modes = results.get('modes')?.data as ModesData | undefined;
  const cold = results.get('cold-sync')?.data as ColdSyncData | undefined;
  const upstream = results.get('upstream')?.data as UpstreamData | undefined;
  const series: PlotSeries[] = [];
  let caption = '';
  if (modes && modes.rows.length > 0) {
    caption =
      'kproxy cold = the whole `kproxy sync --manifests` process (Node start, reading the manifests, model, render, nft and netlink writes, read-back) into an empty network namespace (modes scenario).';
    const figures = modes.rows.flatMap((r) =>
      r.cold
        ? [
            {
              mode: r.mode,
              services: r.size.services,
              endpointsPerService: r.size.endpointsPerService,
              seconds: r.cold.process.wallS,
              atLeast: r.cold.timedOut,
            },
          ]
        : [],
    );
    series.push(...seriesOf(figures, (m, e) => `kproxy sync --manifests, ${m} (${e} endpoints/Service)`));
  } else if (cold && cold.rows.length > 0) {
    caption =
      "kproxy cold = the pipeline (normalize, model, render, transaction) + nft -f into an empty namespace (cold-sync scenario; no Node start, no manifests' parsing).";
    const figures = cold.rows.map((r) => ({
      mode: 'nftables' as const,
      services: r.size.services,
      endpointsPerService: r.size.endpointsPerService,
      seconds: r.totalS,
    }));
    series.push(...seriesOf(figures, (_m, e) => `kproxy pipeline + nft -f (${e} endpoints/Service)`));
  }
  if (series.length === 0) return undefined;
  const loaded = (upstream?.rows ?? []).filter((r) => (r.status === 'ok' || r.status === 'timeout') && r.nft);
  const upstreamFigures = loaded.map((r) => ({
    mode: 'nftables' as const,
    services: r.size.services,
    endpointsPerService: r.size.endpointsPerService,
    seconds: r.nft?.wallS ?? Number.NaN,
    atLeast: r.status === 'timeout',
  }));
  series.push(
    ...seriesOf(
      upstreamFigures,
      (_m, e) => `upstream's classic nftables layout, nft -f, measured here (${e} endpoints/Service)`,
      true,
      UPSTREAM_MEASURED,
    ),
  );
  series.push(published(PUBLISHED_COLD, 'programming a cluster'));
  return {
    panel: { title: 'Cold sync: an empty kernel to every Service programmed', yLabel: 'seconds (log scale)', series },
    caption,
  };
}

function syncPanel(results: ReadonlyMap<string, ScenarioResult>): Panel | undefined {
  const incremental = results.get('incremental')?.data as { rows: readonly IncrementalRow[] } | undefined;
  const run = results.get('run')?.data as RunData | undefined;
  const sorted = (xs: readonly number[]) => [...xs].sort((a, b) => a - b);
  let figures: { p50: Measured[]; p99: Measured[] } | undefined;
  let source = '';
  const incRows = (incremental?.rows ?? []).filter((r) => !r.skipped && r.latencies.endpoint.length > 0);
  const runRows = (run?.rows ?? []).filter((r) => (r.report?.changeMs.length ?? 0) > 0);
  const at = (r: { mode: BenchMode; size: { services: number; endpointsPerService: number } }, ms: number) => ({
    // Results saved before the bench knew modes have none: nftables.
    mode: r.mode ?? 'nftables',
    services: r.size.services,
    endpointsPerService: r.size.endpointsPerService,
    seconds: ms / 1000,
  });
  let caption = '';
  if (incRows.length > 0) {
    source = 'kproxy daemon';
    caption =
      'kproxy latency = one endpoint moved, the change entering the real daemon (minSyncPeriod 0) → the end of the kernel write of its sync (incremental scenario).';
    figures = {
      p50: incRows.map((r) => at(r, percentile(sorted(r.latencies.endpoint), 50))),
      p99: incRows.map((r) => at(r, percentile(sorted(r.latencies.endpoint), 99))),
    };
  } else if (runRows.length > 0) {
    source = 'kproxy run';
    caption =
      'kproxy latency = one EndpointSlice updated through the (fake) API server → the new endpoint seen in the kernel, `kproxy run` as users run it (run scenario).';
    figures = {
      p50: runRows.map((r) => at(r, changePercentiles(r).p50)),
      p99: runRows.map((r) => at(r, changePercentiles(r).p99)),
    };
  }
  if (!figures) return undefined;
  return {
    panel: {
      title: 'Sync latency: one endpoint changed → in the kernel',
      yLabel: 'seconds (log scale)',
      series: [
        ...seriesOf(figures.p50, (m, e) => `${source}, ${m}, p50 (${e} endpoints/Service)`),
        ...seriesOf(figures.p99, (m, e) => `${source}, ${m}, p99 (${e} endpoints/Service)`, true),
        published(PUBLISHED_SYNC, 'a sync'),
      ],
    },
    caption,
  };
}

/** The chart of a run's results, or undefined when it measured nothing the chart shows. */
export function curveSpec(
  results: ReadonlyMap<string, ScenarioResult>,
  host: Record<string, unknown>,
): PlotSpec | undefined {
  const panels = [coldPanel(results), syncPanel(results)].filter((p): p is Panel => p !== undefined);
  if (panels.length === 0) return undefined;
  return {
    title: 'kproxy against the number of Services',
    subtitle: `measured here: Linux ${String(host['kernel'] ?? '?')}, ${String(host['nft'] ?? 'nft')}, ${String(host['cpus'])} CPUs, load average ${((host['loadAverageAtStart'] as number[] | undefined)?.[0] ?? Number.NaN).toFixed(1)} at the start`,
    panels: panels.map((p) => p.panel),
    caption: [
      "Red diamonds: upstream kube-proxy's published figures, measured on other machines with other kube-proxy versions (issue 9): an order of magnitude to compare with, not a",
      'like-for-like measurement. "13 min per sync at 250k endpoints" is placed at 25k Services (250k endpoints ≈ 25k Services × 10); "9 min to create 10k × 2" at 10k Services.',
      ...panels.map((p) => p.caption),
      'Hollow markers: timed out (a lower bound).',
    ],
  };
}
