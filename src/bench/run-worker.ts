/**
 * @module bench/run-worker
 * Child process of the bench's `run` scenario, started inside a fresh network namespace: it
 * serves the synthetic cluster from the fake API server (test/support/fake-apiserver.ts, the test
 * double `test/startup/measure.ts` uses) on 127.0.0.1 and starts `bin/kproxy run --kubeconfig …`
 * as a user would, then measures, watching the namespace's kernel from outside kproxy
 * (`kernel-probe.ts`):
 *  1. cold start from an empty kernel: exec → the first list request (as the server saw it);
 *     exec → the last local endpoint (one of the last Services) in the kernel, polled (kproxy
 *     commits a sync in one transaction, so then every Service is programmed);
 *  2. `--restarts` times: kill -9, one EndpointSlice changed while kproxy is down (its first
 *     endpoint replaced by a new pod on this node), start again: exec → that change in the
 *     kernel, polled;
 *  3. `--changes` EndpointSlice updates through the API, one at a time, each after the daemon's
 *     minSyncPeriod has passed: the update → the new endpoint in the kernel (nftables: the
 *     `nft monitor` line; iptables: polled);
 *  and the daemon's peak RSS (VmHWM of every kproxy process it started, and of its descendants:
 *  the spawner's child runs libnftables). Prints one JSON line
 *  (`RunReport`) on stdout; progress on stderr.
 *
 *   node src/bench/run-worker.ts --services N --endpoints E [--nodes 50] [--affinity-percent 0]
 *       [--mode nftables|iptables] [--iptables-flavor auto] [--restarts 3] [--changes 100]
 *       [--timeout-ms 600000]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FakeApiServer, kubeconfigYaml, type FakeKind } from '../../test/support/fake-apiserver.ts';
import {
  BENCH_NODE,
  CLUSTER_ARG_OPTIONS,
  clusterFromArgs,
  lastLocalEndpoint,
  serviceName,
  serviceNamespace,
  syntheticCluster,
} from './cluster-gen.ts';
import { localEndpointInKernel, NftMonitor } from './kernel-probe.ts';
import {
  descendants,
  firstListAt,
  now,
  peakRssKiB,
  sleep,
  startKproxyRun,
  syncLogged,
  whenTrue,
  type KproxyProcess,
} from './kproxy-run.ts';
import { BENCH_MODES, benchConfig, benchFlags, IPTABLES_FLAVORS } from './pipeline.ts';

export interface RunRestart {
  /** exec → the first list request, ms. */
  readonly listMs: number;
  /** exec → the change made while kproxy was down is in the kernel, ms. */
  readonly convergedMs: number;
  /** The first sync's own duration, as kproxy logged it. */
  readonly firstSyncMs: number;
}

export interface RunReport {
  /** Creating the objects in the fake API server, ms. */
  readonly loadMs: number;
  readonly cold: {
    readonly listMs: number;
    /** exec → every Service in the kernel; a lower bound when `timedOut`. */
    readonly programmedMs: number;
    readonly firstSyncMs: number;
    readonly timedOut: boolean;
  };
  readonly restarts: readonly RunRestart[];
  /** EndpointSlice update → the new endpoint in the kernel, ms, one per change. */
  readonly changeMs: readonly number[];
  /** How changes were seen: `nft monitor` or polling. */
  readonly observedBy: string;
  /** iptables mode: the flavor kproxy logged it chose. */
  readonly flavor?: string;
  /** Peak RSS (VmHWM) of each kproxy process, KiB, in start order. */
  readonly peakRssKiB: readonly number[];
  /** The largest peak RSS among each kproxy process's descendants (the spawner's child, where libnftables runs), KiB. */
  readonly toolPeakRssKiB: readonly number[];
}

const KINDS: Record<string, FakeKind> = {
  Service: 'Service',
  EndpointSlice: 'EndpointSlice',
  Node: 'Node',
  ServiceCIDR: 'ServiceCIDR',
};

type Obj = Record<string, unknown>;

/** 10.250.0.1, 10.250.0.2, …: endpoint addresses no synthetic Service uses. */
function freshIp(n: number): string {
  const v = 1 + n;
  return `10.250.${(v >> 8) & 255}.${v & 255}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      ...CLUSTER_ARG_OPTIONS,
      mode: { type: 'string', default: 'nftables' },
      'iptables-flavor': { type: 'string', default: 'auto' },
      restarts: { type: 'string', default: '3' },
      changes: { type: 'string', default: '100' },
      'timeout-ms': { type: 'string', default: '600000' },
    },
  });
  const mode = BENCH_MODES.find((m) => m === values.mode);
  if (!mode) throw new Error(`--mode must be one of ${BENCH_MODES.join(', ')}`);
  const flavor = IPTABLES_FLAVORS.find((f) => f === values['iptables-flavor']);
  if (!flavor) throw new Error(`--iptables-flavor must be one of ${IPTABLES_FLAVORS.join(', ')}`);
  const { size, shape } = clusterFromArgs(values);
  const { services, endpointsPerService: endpoints } = size;
  const timeoutMs = Number(values['timeout-ms']);
  const progress = (m: string) => process.stderr.write(`run-worker ${services}x${endpoints} ${mode}: ${m}\n`);
  // Polling costs CPU the daemon competes for: every 10 ms, or 4× the last check's time if longer (whenTrue).
  const pollMs = 10;

  // The cluster, in a real API server's place. A real server sends a watch bookmark about once a minute.
  const server = await FakeApiServer.start({ bookmarkIntervalMs: 60_000 });
  const t0 = now();
  const { objects } = syntheticCluster(size, shape);
  const firstSlices = new Map<number, Obj>();
  for (const o of objects as Obj[]) {
    const kind = KINDS[String(o['kind'])];
    if (!kind) throw new Error(`unexpected kind ${String(o['kind'])}`);
    server.create(kind, o);
    const name = String((o['metadata'] as Obj)['name']);
    const m = kind === 'EndpointSlice' ? /^svc-(\d+)-0$/.exec(name) : null;
    if (m) firstSlices.set(Number(m[1]), o);
  }
  objects.length = 0;
  const loadMs = now() - t0;
  progress(`${Math.round(loadMs)} ms to load the API server`);
  const dir = mkdtempSync(join(tmpdir(), 'kpbench-run-'));
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, kubeconfigYaml(server));
  const args = [
    '--kubeconfig',
    kubeconfig,
    ...benchFlags(mode, flavor),
    '--healthz-bind-address',
    '127.0.0.1:10256',
    '--metrics-bind-address',
    '127.0.0.1:10249',
  ];

  /** Service i's endpoint `ip` in the kernel. */
  const inKernel = (i: number, ip: string) => () =>
    localEndpointInKernel(mode, flavor, { namespace: serviceNamespace(i), service: serviceName(i), ip });
  /** The Service whose first endpoint the n-th change replaces (spread over the cluster). */
  const serviceOf = (n: number) => (n * 7919) % services;
  /**
   * Replaces the first endpoint of Service i with `ip`, a pod on this node (so that nft can see it
   * in kproxy's small hairpin set: `localEndpointInKernel`), through the API.
   */
  const changeEndpoint = (i: number, ip: string) => {
    const slice = structuredClone(firstSlices.get(i));
    const [first] = (slice?.['endpoints'] as Obj[] | undefined) ?? [];
    if (!slice || !first) throw new Error(`no EndpointSlice for Service ${i}`);
    first['addresses'] = [ip];
    first['nodeName'] = BENCH_NODE;
    firstSlices.set(i, slice);
    server.update('EndpointSlice', slice);
  };
  /** Settled: the first sync logged, the EndpointSlice watch open. */
  const settled = async (c: KproxyProcess) => {
    await whenTrue('the first sync logged', () => syncLogged(c) !== undefined, timeoutMs, 20);
    await whenTrue('the EndpointSlice watch', () => server.openWatches('EndpointSlice') > 0, timeoutMs, 20);
  };
  const rss: number[] = [];
  const toolRss: number[] = [];
  const stop = async (c: KproxyProcess, signal: NodeJS.Signals) => {
    const kib = peakRssKiB(c.pid);
    if (kib !== undefined) rss.push(kib);
    toolRss.push(Math.max(0, ...descendants(c.pid).map((pid) => peakRssKiB(pid) ?? 0)));
    c.kill(signal);
    const killer = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await c.exited;
    clearTimeout(killer);
  };
  const report = (r: Omit<RunReport, 'loadMs' | 'peakRssKiB' | 'toolPeakRssKiB'>) =>
    process.stdout.write(
      `${JSON.stringify({ loadMs, ...r, peakRssKiB: rss, toolPeakRssKiB: toolRss } satisfies RunReport)}\n`,
    );

  try {
    // 1. Cold start.
    let requestsBefore = server.requests.length;
    let child = startKproxyRun(args);
    // The last endpoint on this node: one of the last Services (nodes Services from the end at most).
    const lastEp = lastLocalEndpoint(size, shape);
    let programmedAt: number;
    try {
      programmedAt = await whenTrue(
        'every Service in the kernel',
        () => localEndpointInKernel(mode, flavor, lastEp),
        timeoutMs,
        pollMs,
      );
    } catch {
      const listAt = firstListAt(server.requests, requestsBefore);
      report({
        cold: {
          listMs: listAt === undefined ? NaN : listAt - child.spawnedAt,
          programmedMs: now() - child.spawnedAt,
          firstSyncMs: NaN,
          timedOut: true,
        },
        restarts: [],
        changeMs: [],
        observedBy: '',
      });
      await stop(child, 'SIGKILL');
      return;
    }
    await settled(child);
    const flavorLogged = child.lines.find((l) => typeof l.line['flavor'] === 'string')?.line['flavor'];
    const cold = {
      listMs: (firstListAt(server.requests, requestsBefore) ?? NaN) - child.spawnedAt,
      programmedMs: programmedAt - child.spawnedAt,
      firstSyncMs: Number(syncLogged(child)?.line['ms'] ?? NaN),
      timedOut: false,
    };
    progress(`cold start: every Service in the kernel after ${Math.round(cold.programmedMs)} ms`);

    // 2. kill -9, a change while down, restart.
    let n = 0;
    const restarts: RunRestart[] = [];
    for (let r = 0; r < Number(values.restarts); r++, n++) {
      await stop(child, 'SIGKILL');
      const i = serviceOf(n);
      const ip = freshIp(n);
      changeEndpoint(i, ip);
      requestsBefore = server.requests.length;
      child = startKproxyRun(args);
      const at = await whenTrue('the change made while down', inKernel(i, ip), timeoutMs, pollMs);
      await settled(child);
      restarts.push({
        listMs: (firstListAt(server.requests, requestsBefore) ?? NaN) - child.spawnedAt,
        convergedMs: at - child.spawnedAt,
        firstSyncMs: Number(syncLogged(child)?.line['ms'] ?? NaN),
      });
      progress(`restart ${r + 1}: the change in the kernel after ${Math.round(at - child.spawnedAt)} ms`);
    }

    // 3. EndpointSlice changes through the API, each alone (after the daemon's minSyncPeriod).
    const gapMs = benchConfig(mode, flavor).minSyncPeriodMs + 100;
    // nft monitor would see iptables-nft's rules too, but at 1000 × 10 (43k rules) it reported no
    // event within a minute: iptables mode polls.
    const monitor = mode === 'nftables' ? new NftMonitor() : undefined;
    const changeMs: number[] = [];
    try {
      const m0 = now();
      // Not kproxy's time: nft monitor reads the ruleset first (the whole table at 50k).
      await monitor?.ready(Math.max(timeoutMs, 300_000));
      if (monitor) progress(`nft monitor ready after ${Math.round(now() - m0)} ms`);
      await sleep(gapMs);
      for (let k = 0; k < Number(values.changes); k++, n++) {
        const i = serviceOf(n);
        const ip = freshIp(n);
        const seen = monitor?.seen(ip, 60_000);
        const at0 = now();
        changeEndpoint(i, ip);
        const at = seen ? await seen : await whenTrue('the endpoint change', inKernel(i, ip), 60_000, 2);
        changeMs.push(at - at0);
        await sleep(gapMs);
      }
    } finally {
      monitor?.stop();
    }
    progress(`${changeMs.length} endpoint changes measured`);
    await stop(child, 'SIGTERM');
    report({
      cold,
      restarts,
      changeMs,
      observedBy: monitor ? 'nft monitor' : 'polled: iptables -S of its KUBE-SEP chain',
      ...(typeof flavorLogged === 'string' ? { flavor: flavorLogged } : {}),
    });
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`run-worker: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
