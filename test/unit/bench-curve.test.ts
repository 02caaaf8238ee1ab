/**
 * The bench's pure pieces behind the run scenario and the curve: the synthetic cluster's last
 * local endpoint, matching an address in tool output, and what `--plot` draws from results.
 */
import { describe, expect, it } from 'vitest';
import { BENCH_NODE, lastLocalEndpoint, syntheticCluster } from '../../src/bench/cluster-gen.ts';
import { curveSpec } from '../../src/bench/curve.ts';
import { mentions } from '../../src/bench/kernel-probe.ts';
import { plotSvg } from '../../src/bench/plot.ts';
import type { ScenarioResult } from '../../src/bench/scenario.ts';

type Obj = Record<string, unknown>;

describe('lastLocalEndpoint', () => {
  it('is the last endpoint the generator puts on the bench node, in its Service', () => {
    for (const [services, e, nodes] of [
      [30, 10, 50],
      [7, 3, 4],
      [120, 100, 50],
    ] as const) {
      const size = { services, endpointsPerService: e };
      const shape = { nodes, affinityPercent: 0 };
      const slices = (syntheticCluster(size, shape).objects as Obj[]).filter((o) => o['kind'] === 'EndpointSlice');
      const local = slices.flatMap((s) =>
        (s['endpoints'] as Obj[])
          .filter((ep) => ep['nodeName'] === BENCH_NODE)
          .map((ep) => ({
            service: ((s['metadata'] as Obj)['labels'] as Obj)['kubernetes.io/service-name'],
            namespace: (s['metadata'] as Obj)['namespace'],
            ip: (ep['addresses'] as string[])[0],
          })),
      );
      expect(lastLocalEndpoint(size, shape)).toEqual(local.at(-1));
    }
  });
});

describe('mentions', () => {
  it('matches whole addresses only', () => {
    expect(mentions('add element ip kproxy hairpin { 10.250.0.5 . 10.250.0.5 }', '10.250.0.5')).toBe(true);
    expect(mentions('10.96.0.10 . tcp . 80 . 0 : 10.250.0.50,', '10.250.0.5')).toBe(false);
    expect(mentions('110.250.0.5', '10.250.0.5')).toBe(false);
    expect(mentions('--to-destination 10.250.0.5:8080', '10.250.0.5')).toBe(true);
  });
});

describe('curveSpec', () => {
  /** A scenario's result with one row per size (1k, 10k Services × 10), nftables mode. */
  const result = (row: (services: number) => Obj): ScenarioResult => ({
    title: '',
    tables: [],
    notes: [],
    data: {
      rows: [1000, 10000].map((n) => ({ size: { services: n, endpointsPerService: 10 }, mode: 'nftables', ...row(n) })),
    },
  });
  const results = new Map<string, ScenarioResult>([
    ['modes', result((n) => ({ cold: { process: { wallS: n / 1000 }, timedOut: false } }))],
    ['incremental', result(() => ({ latencies: { endpoint: [20, 30, 40], add: [], delete: [] } }))],
  ]);

  it('draws cold sync and endpoint-change latency beside upstream published figures', () => {
    const spec = curveSpec(results, { kernel: 'k', nft: 'nft', cpus: 2, loadAverageAtStart: [0.5] });
    expect(spec?.panels.map((p) => p.series.map((s) => s.label))).toEqual([
      [
        'kproxy sync --manifests, nftables (10 endpoints/Service)',
        'upstream kube-proxy, programming a cluster (published; other machines)',
      ],
      [
        'kproxy daemon, nftables, p50 (10 endpoints/Service)',
        'kproxy daemon, nftables, p99 (10 endpoints/Service)',
        'upstream kube-proxy, a sync (published; other machines)',
      ],
    ]);
    const sync = spec?.panels[1]?.series;
    expect(sync?.[0]?.points.map((p) => p.seconds)).toEqual([0.03, 0.03]);
    expect(sync?.[1]?.points.map((p) => p.seconds)).toEqual([0.04, 0.04]);
    expect(sync?.[2]?.points.map((p) => p.services)).toEqual([25000, 44000]);
    const svg = plotSvg(spec as NonNullable<typeof spec>);
    expect(svg).toContain('13 min per sync, 250k endpoints');
    expect(svg).toContain('other machines');
  });

  it('has nothing to draw without cold sync or latency results', () => {
    expect(curveSpec(new Map(), {})).toBeUndefined();
  });
});
