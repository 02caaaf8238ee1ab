/**
 * @module bench/scenarios/first-packet
 * First-packet latency: TCP connect time from a pod through a ClusterIP, with few and with many
 * Services installed (kproxy's rules only). Tiny topology, built fresh for each Service count:
 *
 *   client ns (10.127.255.2) ──veth── node ns (kproxy's rules; 10.127.255.1 on both veths) ──veth── server ns
 *
 * The server namespace owns the endpoint IPs of the first and the last service port in the
 * ruleset's order (so the ladder may pick any of them) and accepts on the target port. The client
 * connects round-robin to the first Service, the last Service, and directly to one endpoint
 * (the same path without a Service) — each connect is a new flow, so its SYN goes through the
 * nat hooks, the dispatch map and the endpoint ladder.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { sizeLabel, syntheticCluster, SERVICE_PORT, TARGET_PORT } from '../cluster-gen.ts';
import { count, ms, percentile, ratio, secs } from '../format.ts';
import { createNetns, deleteNetns, ip, killTracked, runForJson, spawnTracked } from '../netns.ts';
import { benchConfig, runPipeline } from '../pipeline.ts';
import type { BenchContext, Scenario, ScenarioResult, Table } from '../scenario.ts';
import { timedInNetns } from '../timed-exec.ts';
import type { EndpointTarget, ServicePortState } from '../../model/node-state.ts';

const HELPER = fileURLToPath(new URL('../latency-helper.ts', import.meta.url));
const GATEWAY = '10.127.255.1';
const CLIENT_IP = '10.127.255.2';

export interface LatencyStats {
  readonly target: string;
  readonly kind: 'first-service' | 'last-service' | 'direct';
  readonly samples: number;
  readonly failures: number;
  readonly p50Us: number;
  readonly p90Us: number;
  readonly p99Us: number;
  readonly meanUs: number;
}

export interface LatencyRun {
  readonly services: number;
  readonly endpointsPerService: number;
  readonly loadS: number;
  readonly targets: readonly LatencyStats[];
}

export interface FirstPacketData {
  readonly runs: readonly LatencyRun[];
  readonly connects: number;
}

let topoSeq = 0;

function sh(ns: string, args: string[]): void {
  ip(['-n', ns, ...args]);
}

function endpointsOf(sp: ServicePortState): readonly EndpointTarget[] {
  const r = sp.internal;
  return r.kind === 'cluster' || r.kind === 'local' ? r.endpoints : [];
}

function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(
      () => reject(new Error(`no "${pattern.source}" from the helper within ${timeoutMs} ms`)),
      timeoutMs,
    );
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      if (pattern.test(buf)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`helper exited (${code}) before "${pattern.source}"`));
    });
  });
}

async function runClient(
  ns: string,
  targets: readonly string[],
  connects: number,
  warmup: number,
): Promise<{ target: string; samplesUs: number[]; failures: number }[]> {
  const args = [
    'netns',
    'exec',
    ns,
    process.execPath,
    HELPER,
    'connect',
    '--targets',
    targets.join(','),
    '--count',
    String(connects),
    '--warmup',
    String(warmup),
  ];
  const report = await runForJson<{ targets: { target: string; samplesUs: number[]; failures: number }[] }>(
    'latency client',
    'ip',
    args,
  );
  return report.targets;
}

/** One size's topology, ready to be measured. */
interface Topology {
  readonly services: number;
  readonly label: string;
  readonly namespaces: string[];
  readonly targets: string[];
  readonly kinds: readonly LatencyStats['kind'][];
  readonly samples: { samplesUs: number[]; failures: number }[];
  server?: ChildProcess;
  file?: string;
  loadS: number;
}

async function setUp(ctx: BenchContext, services: number): Promise<Topology> {
  const size = { services, endpointsPerService: ctx.options.latencyEndpoints };
  const label = sizeLabel(size);
  const run = runPipeline(syntheticCluster(size, ctx.options.shape).objects, benchConfig());
  const state = run.desired.families.find((f) => f.state.family === 'ipv4')?.state;
  const first = state?.servicePorts[0];
  const last = state?.servicePorts.at(-1);
  if (!first || !last) throw new Error(`no service ports at ${label}`);
  const serverIps = [...new Set([...endpointsOf(first), ...endpointsOf(last)].map((e) => e.ip))];
  const direct = endpointsOf(first)[0];
  if (!direct) throw new Error(`the first Service has no endpoints at ${label}`);
  const targets = [
    `${first.clusterIP}:${SERVICE_PORT}`,
    `${last.clusterIP}:${SERVICE_PORT}`,
    `${direct.ip}:${direct.port}`,
  ];
  const kinds = ['first-service', 'last-service', 'direct'] as const;
  const topo: Topology = {
    services,
    label,
    namespaces: [],
    targets,
    kinds,
    samples: targets.map(() => ({ samplesUs: [], failures: 0 })),
    loadS: NaN,
  };

  const id = `kpb${process.pid % 1000}${(topoSeq++).toString(36)}`;
  const node = createNetns(`n${label}`);
  topo.namespaces.push(node);
  const cli = createNetns(`c${label}`);
  topo.namespaces.push(cli);
  const srv = createNetns(`s${label}`);
  topo.namespaces.push(srv);
  // Node: router, same gateway address on both veths, host routes to the pods.
  ip([
    'netns',
    'exec',
    node,
    'sysctl',
    '-q',
    '-w',
    'net.ipv4.ip_forward=1',
    'net.ipv4.conf.all.rp_filter=0',
    'net.ipv4.conf.default.rp_filter=0',
  ]);
  for (const [suffix, peer] of [
    ['c', cli],
    ['s', srv],
  ] as const) {
    const dev = `${id}${suffix}`;
    sh(node, ['link', 'add', dev, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', peer]);
    sh(node, ['link', 'set', dev, 'up']);
    sh(node, ['addr', 'add', `${GATEWAY}/32`, 'dev', dev]);
    sh(peer, ['link', 'set', 'eth0', 'up']);
  }
  sh(node, ['route', 'add', `${CLIENT_IP}/32`, 'dev', `${id}c`]);
  for (const a of serverIps) sh(node, ['route', 'add', `${a}/32`, 'dev', `${id}s`]);
  sh(cli, ['addr', 'add', `${CLIENT_IP}/32`, 'dev', 'eth0']);
  for (const a of serverIps) sh(srv, ['addr', 'add', `${a}/32`, 'dev', 'eth0']);
  for (const pod of [cli, srv]) {
    sh(pod, ['route', 'add', GATEWAY, 'dev', 'eth0']);
    sh(pod, ['route', 'add', 'default', 'via', GATEWAY, 'dev', 'eth0']);
  }

  const file = join(ctx.workDir, `latency-${label}.nft`);
  topo.file = file;
  writeFileSync(file, run.text);
  ctx.log(`first-packet ${label}: loading ${count(run.counts.rules)} rules into the node namespace`);
  const load = await timedInNetns(node, ['nft', '-f', file], { timeoutMs: ctx.options.kproxyTimeoutMs });
  if (load.exitCode !== 0) throw new Error(`nft -f failed at ${label}: ${load.stderr}`);
  topo.loadS = load.wallS;

  topo.server = spawnTracked('ip', ['netns', 'exec', srv, process.execPath, HELPER, 'serve', String(TARGET_PORT)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await waitForLine(topo.server, /ready/, 10_000);
  return topo;
}

function tearDown(ctx: BenchContext, topo: Topology): void {
  if (topo.server) killTracked(topo.server);
  for (const ns of [...topo.namespaces].reverse()) deleteNetns(ns);
  if (topo.file && !ctx.options.keepFiles) rmSync(topo.file, { force: true });
}

function summarise(topo: Topology): LatencyRun {
  const targets = topo.samples.map((r, i): LatencyStats => {
    const s = [...r.samplesUs].sort((a, b) => a - b);
    return {
      target: topo.targets[i] ?? '',
      kind: topo.kinds[i] ?? 'direct',
      samples: s.length,
      failures: r.failures,
      p50Us: percentile(s, 50),
      p90Us: percentile(s, 90),
      p99Us: percentile(s, 99),
      meanUs: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length),
    };
  });
  return { services: topo.services, endpointsPerService: 0, loadS: topo.loadS, targets };
}

/**
 * All sizes' topologies exist side by side; the connects run in BLOCKS alternating between them
 * (ABBA…), so a drift of the machine over time does not pass for a difference between sizes.
 */
const BLOCKS = 8;

async function measureAll(ctx: BenchContext): Promise<LatencyRun[]> {
  const topos: Topology[] = [];
  try {
    for (const n of ctx.options.latencyServices) topos.push(await setUp(ctx, n));
    const per = Math.ceil(ctx.options.connects / BLOCKS);
    ctx.log(`first-packet: ${BLOCKS} alternating blocks of ${per} connects per target and size`);
    for (let b = 0; b < BLOCKS; b++) {
      const order = b % 2 === 0 ? topos : [...topos].reverse();
      for (const t of order) {
        const raw = await runClient(t.namespaces[1] ?? '', t.targets, per, b === 0 ? 50 : 10);
        raw.forEach((r, i) => {
          const acc = t.samples[i];
          if (!acc) return;
          acc.samplesUs.push(...r.samplesUs);
          acc.failures += r.failures;
        });
      }
    }
    return topos.map((t) => ({ ...summarise(t), endpointsPerService: ctx.options.latencyEndpoints }));
  } finally {
    for (const t of topos) tearDown(ctx, t);
  }
}

export const firstPacket: Scenario = {
  name: 'first-packet',
  description: 'TCP connect time through a ClusterIP (first and last Service) with few vs many Services installed',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const runs = await measureAll(ctx);
    const data: FirstPacketData = { runs, connects: ctx.options.connects };
    const directP50 = (r: LatencyRun) => r.targets.find((t) => t.kind === 'direct')?.p50Us ?? NaN;
    const tables: Table[] = [
      {
        columns: [
          'Services',
          'target',
          'p50 us',
          'p90 us',
          'p99 us',
          'mean us',
          'p50 - direct us',
          'samples',
          'failures',
        ],
        rows: runs.flatMap((r) =>
          r.targets.map((t) => [
            count(r.services),
            `${t.kind} (${t.target})`,
            ms(t.p50Us),
            ms(t.p90Us),
            ms(t.p99Us),
            ms(t.meanUs),
            t.kind === 'direct' ? '' : ms(t.p50Us - directP50(r)),
            String(t.samples),
            String(t.failures),
          ]),
        ),
      },
    ];
    const small = runs[0];
    const big = runs.at(-1);
    if (small && big && small !== big) {
      const vs = `${count(big.services)} vs ${count(small.services)}`;
      tables.push({
        columns: ['target', `p50 ${vs}`, `p90 ${vs}`, `p99 ${vs}`],
        rows: big.targets.map((t, i) => {
          const s = small.targets[i];
          return [
            t.kind,
            ratio(s ? t.p50Us / s.p50Us : NaN),
            ratio(s ? t.p90Us / s.p90Us : NaN),
            ratio(s ? t.p99Us / s.p99Us : NaN),
          ];
        }),
      });
    }
    return {
      title: 'first-packet latency (kproxy rules; TCP connect through a ClusterIP, fresh topology per size)',
      tables,
      notes: [
        `each connect is a new flow: ${ctx.options.connects} per target and size, in ${BLOCKS} blocks alternating between the sizes; times include the Node.js client's own overhead, the same for every target.`,
        '"direct" connects to an endpoint IP without a Service (same hooks, no DNAT): p50 - direct is what the Service path adds.',
        `rules loaded per size: ${runs.map((r) => `${count(r.services)} Services in ${secs(r.loadS)} s`).join(', ')}.`,
      ],
      data,
    };
  },
};
