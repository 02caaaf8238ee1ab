/**
 * @module bench/daemon-worker
 * Child process of the bench: the real daemon (runner, proxier, nft) on a synthetic cluster held
 * by a MemorySource, programming the kernel of network namespace NS. It reads commands on stdin,
 * one JSON line each, and answers on stdout:
 *   {"op":"change","kind":"endpoint"|"add"|"delete","i":N} → {"ms": event → kernel latency}
 *   {"op":"stats"} → {"peakRssMiB","rssMiB","heapUsedMiB"}
 * The latency runs from the change entering the source to the end of the `nft -f` that carried it.
 *
 *   node src/bench/daemon-worker.ts --netns NS --services N --endpoints E [--min-sync-ms 0]
 */
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { startDaemon } from '../daemon/daemon.ts';
import { logEventRecorder } from '../daemon/events.ts';
import { execProgram, inNetns, type Exec } from '../kernel/exec.ts';
import type { EndpointSlice, Service } from '../model/cluster.ts';
import { buildSnapshot } from '../source/normalize.ts';
import { BENCH_NODE, syntheticCluster } from './cluster-gen.ts';
import { MemorySource } from './memory-source.ts';
import { benchConfig } from './pipeline.ts';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      netns: { type: 'string' },
      services: { type: 'string' },
      endpoints: { type: 'string' },
      'min-sync-ms': { type: 'string', default: '0' },
    },
  });
  const services = Number(values.services);
  const endpointsPerService = Number(values.endpoints);
  const { objects } = syntheticCluster({ services, endpointsPerService });
  const { snapshot } = buildSnapshot(objects, BENCH_NODE);
  const source = new MemorySource(snapshot);
  const config = {
    ...benchConfig(),
    minSyncPeriodMs: Number(values['min-sync-ms']),
    syncPeriodMs: 3_600_000,
    healthzBindAddress: '',
    metricsBindAddress: '',
  };

  // A successful `nft -f` settles the changes the snapshot of its sync showed.
  const waiting: { generation: number; resolve: () => void }[] = [];
  const base = inNetns(String(values.netns), execProgram);
  const exec: Exec = async (file, args, stdin) => {
    const seen = source.readGeneration;
    const r = await base(file, args, stdin);
    if (file === 'nft' && args.includes('-f') && r.exitCode === 0) {
      for (const w of waiting.splice(0)) (w.generation <= seen ? w.resolve : () => waiting.push(w))();
    }
    return r;
  };
  const log = pino({ level: 'warn' }, pino.destination(2));
  const daemon = await startDaemon({ config, source, events: logEventRecorder(log), log, exec });
  await new Promise<void>((resolve) => waiting.push({ generation: 0, resolve }));

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
      });
      continue;
    }
    const i = Number(cmd.i);
    const t0 = performance.now();
    const done = new Promise<void>((resolve) => waiting.push({ generation: source.generation + 1, resolve }));
    applyChange(source, added, String(cmd.kind), i, services);
    await done;
    out({ ms: performance.now() - t0 });
  }
  await daemon.stop();
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
