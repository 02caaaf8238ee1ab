/**
 * @module bench/scenarios/first-packet
 * First-packet latency: TCP connect time from a pod through a ClusterIP, with few and with many
 * Services installed, per proxy mode. Tiny topology, built fresh for each mode and Service count:
 *
 *   client ns (10.127.255.2) ──veth── node ns (kproxy's rules; 10.127.255.1 on both veths) ──veth── server ns
 *
 * The rules: nftables mode, kproxy's transaction from the pipeline through `nft -f`; iptables
 * mode, the real `kproxy sync --proxy-mode iptables --manifests DIR` in the node namespace. The
 * targets are the first and the last Service in the rules' order — for iptables the order of the
 * ClusterIP rules in nat KUBE-SERVICES as the kernel holds them (`iptables-save`), a list every
 * new flow walks until it matches; for nftables the service port order (dispatch is a map
 * lookup, order does not matter) — and one endpoint directly (no Service). The server namespace
 * owns the endpoint IPs of both Services (so the endpoint pick may land on any of them) and
 * accepts on the target port. Each connect is a new flow, so its SYN goes through the nat hooks.
 */
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import {
  sizeLabel,
  syntheticCluster,
  BENCH_NODE,
  type ClusterSize,
  SERVICE_PORT,
  TARGET_PORT,
} from '../cluster-gen.ts';
import { count, ms, percentile, ratio, secs } from '../format.ts';
import { kproxySync, writeManifests } from '../kproxy-cli.ts';
import { createNetns, deleteNetns, ip, ipBatch, killTracked, runForJson, spawnTracked } from '../netns.ts';
import { benchConfig, runPipeline, type BenchMode } from '../pipeline.ts';
import type { BenchContext, Scenario, ScenarioResult, Table } from '../scenario.ts';
import { timedInNetns } from '../timed-exec.ts';
import { knownTimeout } from './modes.ts';
import type { EndpointTarget, NodeState, ServicePortState } from '../../model/node-state.ts';
import { nodeStates } from '../../proxy/desired.ts';
import { buildSnapshot } from '../../source/normalize.ts';

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

/** Where the two Services' ClusterIP rules sit in nat KUBE-SERVICES (iptables mode), 1-based. */
export interface ChainPositions {
  readonly first: number;
  readonly last: number;
  /** Rules in nat KUBE-SERVICES (ClusterIP, external and LB rules, the final NodePort jump). */
  readonly rules: number;
}

export interface LatencyRun {
  readonly mode: BenchMode;
  /** iptables mode: the flavor kproxy chose. */
  readonly flavor?: string;
  readonly services: number;
  readonly endpointsPerService: number;
  /** Loading the rules: `nft -f` (nftables) or the whole `kproxy sync` process (iptables). */
  readonly loadS: number;
  readonly positions?: ChainPositions;
  readonly targets: readonly LatencyStats[];
}

export interface FirstPacketData {
  readonly runs: readonly LatencyRun[];
  readonly connects: number;
  /** Topologies not measured (their rules did not load within the time limit). */
  readonly skipped?: readonly string[];
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

/** One mode's and size's topology, ready to be measured. */
interface Topology {
  readonly mode: BenchMode;
  readonly services: number;
  readonly endpointsPerService: number;
  readonly label: string;
  readonly namespaces: string[];
  readonly targets: string[];
  readonly kinds: readonly LatencyStats['kind'][];
  readonly samples: { samplesUs: number[]; failures: number }[];
  server?: ChildProcess;
  file?: string;
  flavor?: string;
  positions?: ChainPositions;
  loadS: number;
}

function ipv4State(states: readonly NodeState[], label: string): NodeState {
  const state = states.find((f) => f.family === 'ipv4');
  if (!state) throw new Error(`no IPv4 state at ${label}`);
  return state;
}

/** nat KUBE-SERVICES as the kernel holds it: every rule, and the ClusterIPs of its Service rules, in order. */
function kubeServices(ns: string, flavor: string): { rules: string[]; clusterIPs: string[] } {
  const text = execFileSync('ip', ['netns', 'exec', ns, `iptables-${flavor}-save`, '-t', 'nat'], {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const rules = text.split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES '));
  const clusterIPs = rules.flatMap((l) => {
    const m = /^-A KUBE-SERVICES -d (\S+)\/32 .*-j KUBE-SVC-/.exec(l);
    return m?.[1] ? [m[1]] : [];
  });
  return { rules, clusterIPs };
}

/** A topology whose rules could not be loaded within the time limit: skipped, with the reason. */
class Skip extends Error {}

async function setUp(ctx: BenchContext, mode: BenchMode, size: ClusterSize): Promise<Topology> {
  const label = `${sizeLabel(size)} ${mode}`;
  const { objects } = syntheticCluster(size, ctx.options.shape);
  const topo: Topology = {
    mode,
    services: size.services,
    endpointsPerService: size.endpointsPerService,
    label,
    namespaces: [],
    targets: [],
    kinds: ['first-service', 'last-service', 'direct'],
    samples: [0, 1, 2].map(() => ({ samplesUs: [], failures: 0 })),
    loadS: NaN,
  };

  try {
    await build(ctx, topo, mode, size, objects);
  } catch (err) {
    tearDown(ctx, topo);
    throw err;
  }
  return topo;
}

async function build(
  ctx: BenchContext,
  topo: Topology,
  mode: BenchMode,
  size: ClusterSize,
  objects: unknown[],
): Promise<void> {
  const { label } = topo;
  const id = `kpb${process.pid % 1000}${(topoSeq++).toString(36)}`;
  const short = `${sizeLabel(size)}${mode.slice(0, 3)}`;
  const node = createNetns(`n${short}`);
  topo.namespaces.push(node);
  const cli = createNetns(`c${short}`);
  topo.namespaces.push(cli);
  const srv = createNetns(`s${short}`);
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

  // The rules, and the first and last Service in their order.
  let state: NodeState;
  let first: ServicePortState | undefined;
  let last: ServicePortState | undefined;
  if (mode === 'nftables') {
    const run = runPipeline(objects, benchConfig('nftables'));
    state = ipv4State(
      run.desired.families.map((f) => f.state),
      label,
    );
    const file = join(ctx.workDir, `latency-${sizeLabel(size)}.nft`);
    topo.file = file;
    writeFileSync(file, run.text);
    ctx.log(`first-packet ${label}: loading ${count(run.counts.rules)} rules into the node namespace (nft -f)`);
    const load = await timedInNetns(node, ['nft', '-f', file], { timeoutMs: ctx.options.kproxyTimeoutMs });
    if (load.exitCode !== 0) throw new Error(`nft -f failed at ${label}: ${load.stderr}`);
    topo.loadS = load.wallS;
    first = state.servicePorts[0];
    last = state.servicePorts.at(-1);
  } else {
    state = ipv4State(nodeStates(buildSnapshot(objects, BENCH_NODE).snapshot, benchConfig('iptables')), label);
    const manifests = writeManifests(ctx.workDir, size, ctx.options.shape);
    ctx.log(`first-packet ${label}: kproxy sync --proxy-mode iptables in the node namespace`);
    const load = await kproxySync(node, 'iptables', manifests, {
      workDir: ctx.workDir,
      timeoutMs: ctx.options.kproxyTimeoutMs,
      iptablesFlavor: ctx.options.iptablesFlavor,
    });
    if (load.timedOut) {
      throw new Skip(`${label}: kproxy sync --proxy-mode iptables did not finish within ${secs(load.process.wallS)} s`);
    }
    topo.loadS = load.process.wallS;
    topo.flavor = load.log?.flavor ?? 'nft';
    const chain = kubeServices(node, topo.flavor);
    const byIp = new Map(state.servicePorts.map((sp) => [sp.clusterIP, sp]));
    const firstIp = chain.clusterIPs[0];
    const lastIp = chain.clusterIPs.at(-1);
    first = firstIp !== undefined ? byIp.get(firstIp) : undefined;
    last = lastIp !== undefined ? byIp.get(lastIp) : undefined;
    const position = (ip: string | undefined) =>
      chain.rules.findIndex((r) => r.startsWith(`-A KUBE-SERVICES -d ${ip}/32 `)) + 1;
    topo.positions = { first: position(firstIp), last: position(lastIp), rules: chain.rules.length };
    ctx.log(
      `first-packet ${label}: KUBE-SERVICES holds ${count(chain.rules.length)} rules; first Service at ${topo.positions.first}, last at ${count(topo.positions.last)}`,
    );
  }
  if (!first || !last) throw new Error(`no first/last service port at ${label}`);
  const direct = endpointsOf(first)[0];
  if (!direct) throw new Error(`the first Service has no endpoints at ${label}`);
  topo.targets.push(
    `${first.clusterIP}:${SERVICE_PORT}`,
    `${last.clusterIP}:${SERVICE_PORT}`,
    `${direct.ip}:${direct.port}`,
  );

  const serverIps = [...new Set([...endpointsOf(first), ...endpointsOf(last)].map((e) => e.ip))];
  sh(node, ['route', 'add', `${CLIENT_IP}/32`, 'dev', `${id}c`]);
  ipBatch(
    serverIps.map((a) => `route add ${a}/32 dev ${id}s`),
    node,
  );
  sh(cli, ['addr', 'add', `${CLIENT_IP}/32`, 'dev', 'eth0']);
  ipBatch(
    serverIps.map((a) => `addr add ${a}/32 dev eth0`),
    srv,
  );
  // Static neighbours: with many endpoints, ARP for each one's first connect (and the neighbour
  // table's default limit of 1,024) would be measured instead of the rules.
  const serverMac = (JSON.parse(ip(['-n', srv, '-j', 'link', 'show', 'eth0'])) as { address: string }[])[0]?.address;
  ipBatch(
    serverIps.map((a) => `neigh replace ${a} lladdr ${serverMac} dev ${id}s nud permanent`),
    node,
  );
  for (const pod of [cli, srv]) {
    sh(pod, ['route', 'add', GATEWAY, 'dev', 'eth0']);
    sh(pod, ['route', 'add', 'default', 'via', GATEWAY, 'dev', 'eth0']);
  }

  topo.server = spawnTracked('ip', ['netns', 'exec', srv, process.execPath, HELPER, 'serve', String(TARGET_PORT)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await waitForLine(topo.server, /ready/, 10_000);
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
  return {
    mode: topo.mode,
    ...(topo.flavor ? { flavor: topo.flavor } : {}),
    services: topo.services,
    endpointsPerService: topo.endpointsPerService,
    loadS: topo.loadS,
    ...(topo.positions ? { positions: topo.positions } : {}),
    targets,
  };
}

/**
 * All modes' and sizes' topologies exist side by side; the connects run in BLOCKS alternating
 * between them (ABCD DCBA …), so a drift of the machine over time does not pass for a difference
 * between sizes or modes.
 */
const BLOCKS = 8;

/** Every Service count with the first endpoint count, and the other endpoint counts at the fewest Services. */
function latencySizes(ctx: BenchContext): ClusterSize[] {
  const [base = 10, ...more] = ctx.options.latencyEndpoints;
  const fewest = Math.min(...ctx.options.latencyServices);
  return [
    ...ctx.options.latencyServices.map((services) => ({ services, endpointsPerService: base })),
    ...more.map((endpointsPerService) => ({ services: fewest, endpointsPerService })),
  ];
}

async function measureAll(ctx: BenchContext, skipped: string[]): Promise<LatencyRun[]> {
  const topos: Topology[] = [];
  try {
    for (const mode of ctx.options.modes) {
      for (const size of latencySizes(ctx)) {
        const known = knownTimeout(ctx, mode, size);
        if (known) {
          skipped.push(`${mode} ${sizeLabel(size)}: ${known}`);
          ctx.log(`first-packet: skipping ${mode} at ${sizeLabel(size)}: ${known}`);
          continue;
        }
        try {
          topos.push(await setUp(ctx, mode, size));
        } catch (err) {
          if (!(err instanceof Skip)) throw err;
          skipped.push(err.message);
          ctx.log(`first-packet: skipping ${err.message}`);
        }
      }
    }
    const per = Math.ceil(ctx.options.connects / BLOCKS);
    ctx.log(`first-packet: ${BLOCKS} alternating blocks of ${per} connects per target, mode and size`);
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
    return topos.map(summarise);
  } finally {
    for (const t of topos) tearDown(ctx, t);
  }
}

export const firstPacket: Scenario = {
  name: 'first-packet',
  description:
    'TCP connect time through a ClusterIP (first and last Service) with few vs many Services installed, per mode',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const skipped: string[] = [];
    const runs = await measureAll(ctx, skipped);
    const data: FirstPacketData = { runs, connects: ctx.options.connects };
    const stat = (r: LatencyRun | undefined, kind: LatencyStats['kind']) => r?.targets.find((t) => t.kind === kind);
    const modeLabel = (r: LatencyRun) => (r.flavor ? `${r.mode} (${r.flavor})` : r.mode);
    const at = (r: LatencyRun, kind: LatencyStats['kind']) =>
      r.positions && kind !== 'direct'
        ? ` #${count(kind === 'first-service' ? r.positions.first : r.positions.last)}/${count(r.positions.rules)}`
        : '';
    const tables: Table[] = [
      {
        columns: [
          'mode',
          'Services x endpoints',
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
            modeLabel(r),
            `${count(r.services)} x ${count(r.endpointsPerService)}`,
            `${t.kind} (${t.target})${at(r, t.kind)}`,
            ms(t.p50Us),
            ms(t.p90Us),
            ms(t.p99Us),
            ms(t.meanUs),
            t.kind === 'direct' ? '' : ms(t.p50Us - (stat(r, 'direct')?.p50Us ?? NaN)),
            String(t.samples),
            String(t.failures),
          ]),
        ),
      },
    ];
    const counts = ctx.options.latencyServices;
    const small = Math.min(...counts);
    const big = Math.max(...counts);
    const modesRun = [...new Set(runs.map((r) => r.mode))];
    const base = ctx.options.latencyEndpoints[0];
    const find = (mode: BenchMode, services: number, endpoints = base) =>
      runs.find((r) => r.mode === mode && r.services === services && r.endpointsPerService === endpoints);
    /** Per mode and target, a bigger topology's percentiles ÷ a smaller one's. */
    const growth = (vs: string, pair: (mode: BenchMode) => [LatencyRun?, LatencyRun?], kinds: LatencyStats['kind'][]) =>
      tables.push({
        columns: ['mode', 'target', `p50 ${vs}`, `p90 ${vs}`, `p99 ${vs}`],
        rows: modesRun.flatMap((mode) => {
          const [s, b] = pair(mode);
          if (!s || !b) return [];
          return b.targets
            .filter((t) => kinds.includes(t.kind))
            .map((t) => {
              const o = stat(s, t.kind);
              return [
                modeLabel(b),
                t.kind,
                ratio(o ? t.p50Us / o.p50Us : NaN),
                ratio(o ? t.p90Us / o.p90Us : NaN),
                ratio(o ? t.p99Us / o.p99Us : NaN),
              ];
            });
        }),
      });
    // The same few Services with many endpoints each: a pick that walks a ladder grows with them.
    for (const e of ctx.options.latencyEndpoints.slice(1)) {
      growth(`${count(e)} ÷ ${count(base ?? 0)} endpoints`, (m) => [find(m, small), find(m, small, e)], [
        'first-service',
        'last-service',
      ]);
    }
    if (small !== big) {
      growth(`${count(big)} ÷ ${count(small)}`, (m) => [find(m, small), find(m, big)], [
        'first-service',
        'last-service',
        'direct',
      ]);
    }
    if (modesRun.includes('nftables') && modesRun.includes('iptables')) {
      tables.push({
        columns: ['Services', 'target', 'nftables p50 us', 'iptables p50 us', 'iptables ÷ nftables p50', 'p90', 'p99'],
        rows: counts.flatMap((n) => {
          const nf = find('nftables', n);
          const it = find('iptables', n);
          if (!nf || !it) return [];
          return it.targets.map((t) => {
            const o = stat(nf, t.kind);
            return [
              count(n),
              t.kind,
              ms(o?.p50Us),
              ms(t.p50Us),
              ratio(o ? t.p50Us / o.p50Us : NaN),
              ratio(o ? t.p90Us / o.p90Us : NaN),
              ratio(o ? t.p99Us / o.p99Us : NaN),
            ];
          });
        }),
      });
    }
    tables.push({
      columns: ['mode', 'Services x endpoints', 'first p50 us', 'last p50 us', 'last - first us', 'last ÷ first'],
      rows: runs.map((r) => {
        const f = stat(r, 'first-service')?.p50Us ?? NaN;
        const l = stat(r, 'last-service')?.p50Us ?? NaN;
        return [
          modeLabel(r),
          `${count(r.services)} x ${count(r.endpointsPerService)}`,
          ms(f),
          ms(l),
          ms(l - f),
          ratio(l / f),
        ];
      }),
    });
    return {
      title:
        'first-packet latency per mode (TCP connect through a ClusterIP, first vs last Service; fresh topology per mode and size)',
      tables,
      notes: [
        `each connect is a new flow: ${ctx.options.connects} per target, mode and size, in ${BLOCKS} blocks alternating between all topologies; times include the Node.js client's own overhead, the same for every target.`,
        '"direct" connects to an endpoint IP without a Service: in nftables mode that path skips the Service dispatch (one set lookup), so p50 - direct is what the Service path adds; in iptables mode a flow to no Service still walks every rule of nat KUBE-SERVICES before falling through, so direct grows with the Services too.',
        "iptables targets carry their ClusterIP rule's position in nat KUBE-SERVICES (#position/rules, as iptables-save lists it): every new flow walks that list until it matches.",
        `rules loaded: ${runs
          .map(
            (r) =>
              `${modeLabel(r)} ${count(r.services)} x ${count(r.endpointsPerService)} in ${secs(r.loadS)} s (${r.mode === 'nftables' ? 'nft -f' : 'kproxy sync'})`,
          )
          .join(', ')}.`,
        ...skipped.map((s) => `skipped: ${s}.`),
      ],
      data: { ...data, skipped },
    };
  },
};
