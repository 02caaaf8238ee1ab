/**
 * @module bench/daemon-worker
 * Child process of the bench: the real daemon (runner, proxier, the mode's backend and kernel
 * tools) on a synthetic cluster held by a MemorySource, programming the kernel of network
 * namespace NS in proxy mode MODE. It reads commands on stdin, one JSON line each, and answers on
 * stdout:
 *   {"op":"change","kind":"endpoint"|"add"|"delete","i":N} → {"ms","firstMs"}
 *   {"op":"stats"} → {"peakRssMiB","rssMiB","heapUsedMiB","childPeakRssMiB","tool"} (tool: the last
 *   commit's program; child: the spawner's child, where nft runs through libnftables)
 * A change counts as committed when the sync that carried it has written the kernel: in nftables
 * mode a successful `nft -f`, in iptables mode a successful `iptables-*-restore` /
 * `ip6tables-*-restore` (one per family and sync). `ms` runs from the change entering the source
 * to the end of the sync's last such write; `firstMs` to the end of its first (iptables mode: the
 * IPv4 restore, the family every synthetic change belongs to; nftables mode: the same nft -f).
 *
 *   node src/bench/daemon-worker.ts --netns NS --services N --endpoints E [--mode nftables|iptables]
 *       [--iptables-flavor auto|nft|legacy] [--min-sync-ms 0]
 */
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { startDaemon } from '../daemon/daemon.ts';
import { logEventRecorder } from '../daemon/events.ts';
import type { Exec } from '../kernel/exec.ts';
import type { KernelCall } from '../kernel/kernel-calls.ts';
import { startSpawner } from '../kernel/spawner.ts';
import type { EndpointSlice, Service } from '../model/cluster.ts';
import { buildSnapshot } from '../source/normalize.ts';
import { BENCH_NODE, syntheticCluster } from './cluster-gen.ts';
import { peakRssKiB } from './kproxy-run.ts';
import { MemorySource } from './memory-source.ts';
import { BENCH_MODES, benchConfig, IPTABLES_FLAVORS, type BenchMode } from './pipeline.ts';

/** The kernel write that commits a sync, per mode (never a `--test` dry run). */
function isCommit(mode: BenchMode, file: string, args: readonly string[]): boolean {
  if (mode === 'nftables') return file === 'nft' && args.includes('-f');
  return /^ip6?tables-(nft|legacy)-restore$/.test(file) && !args.includes('--test');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      netns: { type: 'string' },
      services: { type: 'string' },
      endpoints: { type: 'string' },
      mode: { type: 'string', default: 'nftables' },
      'iptables-flavor': { type: 'string', default: 'auto' },
      'min-sync-ms': { type: 'string', default: '0' },
    },
  });
  const mode = BENCH_MODES.find((m) => m === values.mode);
  if (!mode) throw new Error(`--mode must be one of ${BENCH_MODES.join(', ')}`);
  const flavor = IPTABLES_FLAVORS.find((f) => f === values['iptables-flavor']);
  if (!flavor) throw new Error(`--iptables-flavor must be one of ${IPTABLES_FLAVORS.join(', ')}`);
  const services = Number(values.services);
  const endpointsPerService = Number(values.endpoints);
  const source = syntheticSource(services, endpointsPerService);
  const config = {
    ...benchConfig(mode, flavor),
    minSyncPeriodMs: Number(values['min-sync-ms']),
    syncPeriodMs: 3_600_000,
    healthzBindAddress: '',
    metricsBindAddress: '',
  };

  // A change is settled by the first sync whose snapshot showed it, once that sync's writes are
  // all done: a commit write followed by no other (the next family's restore starts within the
  // same turn of the event loop, so a check one macrotask later sees it in flight).
  interface Waiter {
    readonly generation: number;
    firstAt?: number;
    resolve(at: { firstAt: number; lastAt: number }): void;
  }
  const waiting: Waiter[] = [];
  let inFlight = 0;
  /** The tool of the last commit (iptables mode: which flavor kproxy chose). */
  let commitTool = '';
  // As `kproxy run` runs tools: through the spawner (here inside the namespace).
  const spawner = startSpawner(['ip', 'netns', 'exec', String(values.netns)]);
  const base = spawner.exec;
  /** Runs one kernel write, counted in flight; a change is settled after a write that succeeded. */
  const write = async <T>(run: () => Promise<T>, succeeded: (r: T) => boolean): Promise<T> => {
    const seen = source.readGeneration;
    inFlight++;
    let r: T;
    try {
      r = await run();
    } finally {
      inFlight--;
    }
    if (succeeded(r)) {
      const at = performance.now();
      for (const w of waiting) if (w.generation <= seen) w.firstAt ??= at;
      setImmediate(() => {
        if (inFlight > 0) return;
        for (const w of waiting.splice(0)) {
          if (w.generation <= seen) w.resolve({ firstAt: w.firstAt ?? at, lastAt: at });
          else waiting.push(w);
        }
      });
    }
    return r;
  };
  const exec: Exec = async (file, args, stdin) => {
    if (!isCommit(mode, file, args)) return base(file, args, stdin);
    return write(
      () => base(file, args, stdin),
      (r) => {
        if (r.exitCode === 0) commitTool = file;
        return r.exitCode === 0;
      },
    );
  };
  // A new nftables table's elements go over netlink between its two nft commits (ADR 0012).
  const kernelCall: KernelCall = (name, args) =>
    name === 'loadNftElements'
      ? write(
          () => spawner.call(name, args),
          () => true,
        )
      : spawner.call(name, args);
  const log = pino({ level: 'warn' }, pino.destination(2));
  const daemon = await startDaemon({
    config,
    source,
    events: logEventRecorder(log),
    log,
    exec,
    kernelCall,
  });
  await new Promise((resolve) => waiting.push({ generation: 0, resolve }));

  const added = new Map<number, { service: Service; slices: EndpointSlice[] }>();
  const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
  out({ ready: true });
  for await (const line of createInterface({ input: process.stdin })) {
    const cmd = JSON.parse(line) as { op: string; kind?: string; i?: number };
    if (cmd.op === 'stats') {
      const m = process.memoryUsage();
      out({
        peakRssMiB: process.resourceUsage().maxRSS / 1024,
        rssMiB: m.rss / 2 ** 20,
        heapUsedMiB: m.heapUsed / 2 ** 20,
        childPeakRssMiB: peakRssOf(spawner.pid()),
        tool: commitTool,
      });
      continue;
    }
    const i = Number(cmd.i);
    const t0 = performance.now();
    const done = new Promise<{ firstAt: number; lastAt: number }>((resolve) =>
      waiting.push({ generation: source.generation + 1, resolve }),
    );
    applyChange(source, added, String(cmd.kind), i, services);
    const { firstAt, lastAt } = await done;
    out({ ms: lastAt - t0, firstMs: firstAt - t0 });
  }
  await daemon.stop();
}

/**
 * The synthetic cluster, normalized, in a MemorySource. A function of its own so that the raw
 * objects die here: held in an async function's frame they stay alive as long as it runs (~40 MiB
 * at 10k × 10 that a daemon fed by an API server does not hold).
 */
function syntheticSource(services: number, endpointsPerService: number): MemorySource {
  const { objects } = syntheticCluster({ services, endpointsPerService });
  return new MemorySource(buildSnapshot(objects, BENCH_NODE).snapshot);
}

/** A process's peak RSS (VmHWM), MiB; NaN when it cannot be read. */
function peakRssOf(pid: number | undefined): number {
  return pid === undefined ? Number.NaN : (peakRssKiB(pid) ?? Number.NaN) / 1024;
}

/** endpoint: one endpoint of Service i moves; add: a new Service (a copy of i); delete: that copy goes. */
function applyChange(
  source: MemorySource,
  added: Map<number, { service: Service; slices: EndpointSlice[] }>,
  kind: string,
  i: number,
  n: number,
): void {
  const key = (k: number) => `ns-${k % 100}/svc-${k}`;
  if (kind === 'endpoint') {
    const cur = source.service(key(i));
    if (!cur) throw new Error(`no Service ${key(i)}`);
    const [first, ...rest] = cur.slices;
    if (!first) throw new Error('no slice');
    const [ep, ...eps] = first.endpoints;
    if (!ep) throw new Error('no endpoint');
    const octets = ep.address.text.split('.').map(Number);
    const moved = {
      ...ep,
      address: { family: ep.address.family, text: `10.127.${(octets[2] ?? 0) ^ 1}.${octets[3] ?? 0}` },
    };
    source.put(key(i), cur.service, [{ ...first, endpoints: [moved, ...eps] }, ...rest]);
  } else if (kind === 'add') {
    const template = source.service(key(i));
    if (!template) throw new Error(`no Service ${key(i)}`);
    const k = n + 1000 + i;
    const name = `svc-${k}`;
    const namespace = `ns-${k % 100}`;
    const ip = `10.111.${(k >> 8) & 255}.${k & 255}`;
    // A plain ClusterIP copy: the template's NodePort and LB IP belong to the template.
    const { healthCheckNodePort: _hc, ...plain } = template.service;
    const service: Service = {
      ...plain,
      type: 'ClusterIP',
      name,
      namespace,
      clusterIPs: [{ family: 'ipv4', text: ip }],
      ports: plain.ports.map(({ nodePort: _np, ...p }) => p),
      externalIPs: [],
      loadBalancerIPs: [],
      loadBalancerSourceRanges: [],
    };
    const slices = template.slices.map((s) => ({ ...s, name: `${name}-${s.name}`, namespace, serviceName: name }));
    added.set(i, { service, slices });
    source.put(`${namespace}/${name}`, service, slices);
  } else if (kind === 'delete') {
    const a = added.get(i);
    if (!a) throw new Error(`nothing added for ${i}`);
    source.put(`${a.service.namespace}/${a.service.name}`, undefined, []);
  } else {
    throw new Error(`unknown change ${kind}`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`daemon-worker: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
