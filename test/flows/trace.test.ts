/**
 * `kproxy trace` (nftables mode) against live packets, and explain compared with it (issue 12:
 * "compare explain with a live nftrace"). In a sandbox topology programmed by `kproxy sync`, the
 * trace runs in the node's namespace (nftrace events are per namespace) while one connection is
 * made; the packet it prints must name the Service port, the frontend and the endpoint that
 * actually answered, and `kproxy explain` about the same packet must give the same verdict and
 * list that endpoint. Also: the trace tables go when the trace ends (count, SIGTERM, kill -9), a
 * sync while tracing neither sees nor touches them, one trace runs per namespace, and other modes
 * are refused.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agreesWith, type TracedPacket } from '../../src/backends/nftables/trace/describe.ts';
import type { Explanation } from '../../src/explain/explain.ts';
import { createTopology, type ProbeResult, type ProbeSpec, type Topology } from '../../src/sandbox/topology.ts';
import {
  CLUSTER_CIDR,
  clusterIP,
  endpoints,
  type Fam,
  FAMILIES,
  NODE,
  nodeObjects,
  type ServiceSpec,
  service,
} from './cluster.ts';

const KPROXY = fileURLToPath(new URL('../../bin/kproxy', import.meta.url));
const TCP = 8080;
const WEB: ServiceSpec = {
  name: 'web',
  index: 10,
  ports: [{ name: 'http', port: 80, targetPort: TCP, nodePort: 30010 }],
};
const EMPTY: ServiceSpec = { name: 'empty', index: 11, ports: [{ name: 'http', port: 80, targetPort: TCP }] };

let topo: Topology;
let dir: string;
const flags = () => ['--manifests', dir, `--hostname-override=${NODE}`, `--cluster-cidr=${CLUSTER_CIDR}`];
const inNode = (args: readonly string[]) =>
  execa('ip', ['netns', 'exec', topo.node.ns, KPROXY, ...args, ...flags()], { reject: false });
const traceTables = async () =>
  (await topo.nft(['list', 'tables'])).split('\n').filter((l) => l.includes('kproxy-trace'));

interface Tracing {
  readonly child: ChildProcess;
  /** Resolves once the trace says it is tracing (its tables are in, its monitor listens). */
  readonly ready: Promise<void>;
  readonly done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

function startTrace(args: readonly string[]): Tracing {
  const child = spawn('ip', ['netns', 'exec', topo.node.ns, KPROXY, 'trace', ...args, ...flags()]);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  const ready = new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes('kproxy trace: tracing')) resolve();
    });
    child.once('exit', () => reject(new Error(`kproxy trace ended before it traced: ${stderr}`)));
  });
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.once('exit', (code) => resolve({ code, stdout, stderr })),
  );
  return { child, ready, done };
}

/** Traces exactly one packet while `send` makes the connection; returns it and the probe's outcome. */
async function traceOne(svc: string, send: () => Promise<ProbeResult>): Promise<[TracedPacket, ProbeResult]> {
  const t = startTrace(['--service', svc, '--count', '1', '--timeout', '30s', '--output', 'json']);
  await t.ready;
  const outcome = await send();
  const { code, stdout, stderr } = await t.done;
  expect(code, stderr).toBe(0);
  const lines = stdout.trim().split('\n');
  expect(lines, stdout).toHaveLength(1);
  return [JSON.parse(lines[0] ?? '') as TracedPacket, outcome];
}

async function explain(src: string, spec: ProbeSpec): Promise<Explanation> {
  const dst = spec.host.includes(':') ? `[${spec.host}]:${spec.port}` : `${spec.host}:${spec.port}`;
  const r = await execa(KPROXY, [
    'explain',
    '--src',
    src,
    '--dst',
    dst,
    '--proto',
    spec.proto,
    '--output',
    'json',
    ...flags(),
  ]);
  return JSON.parse(r.stdout) as Explanation;
}

const endpointOf = (ip: string) => (ip.includes(':') ? `[${ip}]:${TCP}` : `${ip}:${TCP}`);

describe('kproxy trace (nftables mode) against live packets', () => {
  beforeAll(async () => {
    topo = await createTopology({
      namePrefix: 'k12',
      pods: [{ name: 'cli', tcpPorts: [] }, { name: 'a' }, { name: 'b' }],
      clients: [{ name: 'ext' }],
      tcpPorts: [TCP],
      udpPorts: [],
    });
    dir = mkdtempSync(join(tmpdir(), 'kproxy-k12-trace-'));
    const items = [
      ...nodeObjects(topo),
      ...service(WEB),
      ...endpoints(topo, WEB, [{ pod: 'a' }, { pod: 'b' }]),
      ...service(EMPTY),
      ...endpoints(topo, EMPTY, []),
    ];
    writeFileSync(join(dir, 'cluster.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
    const sync = await inNode(['sync']);
    expect(sync.exitCode, sync.stderr).toBe(0);
  }, 60_000);
  afterAll(async () => {
    await topo?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const fam of FAMILIES)
    it(`${fam}: a ClusterIP connection is traced to the Service port and the endpoint that answered; explain agrees`, async () => {
      const spec: ProbeSpec = { proto: 'tcp', host: clusterIP(WEB.index, fam), port: 80 };
      const [traced, r] = await traceOne('flows/web', () => topo.probe(topo.pod('cli'), spec));
      expect(r.kind).toBe('answered');
      if (r.kind !== 'answered') return;
      expect(traced.packet).toMatchObject({ src: topo.pod('cli')[fam], dst: spec.host, protocol: 'TCP', dstPort: 80 });
      expect(traced.service).toBe('flows/web:http');
      expect(traced.frontend).toEqual({ kind: 'ClusterIP', address: spec.host, port: 80, protocol: 'TCP' });
      expect(traced.verdict).toBe('dnat');
      expect(traced.endpoint).toBe(endpointOf(topo.pod(r.pod)[fam]));
      expect(traced.endpointSlice).toBe(`flows/web-${fam}`);
      expect(traced.endpointNode).toBe(NODE);
      expect(traced.masquerade).toBe(false);
      const e = await explain(topo.pod('cli')[fam], spec);
      expect(e.service).toBe(traced.service);
      expect(agreesWith(traced, e), JSON.stringify({ traced, e })).toBe(true);
      expect(await traceTables()).toEqual([]);
    });

  it('a NodePort from outside: the NodePort frontend, the endpoint and the masquerade; explain agrees', async () => {
    const fam: Fam = 'v4';
    const spec: ProbeSpec = { proto: 'tcp', host: topo.node[fam], port: 30010 };
    const [traced, r] = await traceOne('flows/web', () => topo.probe(topo.client('ext'), spec));
    expect(r.kind).toBe('answered');
    if (r.kind !== 'answered') return;
    expect(traced.frontend).toEqual({ kind: 'NodePort', address: spec.host, port: 30010, protocol: 'TCP' });
    expect(traced.endpoint).toBe(endpointOf(topo.pod(r.pod)[fam]));
    expect(traced.masquerade).toBe(true);
    const e = await explain(topo.client('ext')[fam], spec);
    expect(e.masquerade).toBe(true);
    expect(agreesWith(traced, e), JSON.stringify({ traced, e })).toBe(true);
  });

  it('a Service without endpoints: the trace shows the REJECT, as explain says', async () => {
    const spec: ProbeSpec = { proto: 'tcp', host: clusterIP(EMPTY.index, 'v4'), port: 80 };
    const [traced, r] = await traceOne('flows/empty', () => topo.probe(topo.pod('cli'), spec));
    expect(r.kind).toBe('rejected');
    expect(traced.verdict).toBe('reject');
    expect(traced.frontend?.kind).toBe('ClusterIP');
    const e = await explain(topo.pod('cli').v4, spec);
    expect(agreesWith(traced, e), JSON.stringify({ traced, e })).toBe(true);
  });

  it('a sync while tracing writes nothing and keeps the trace tables; SIGTERM ends the trace and removes them', async () => {
    const t = startTrace(['--service', 'flows/web']);
    try {
      await t.ready;
      expect(await traceTables()).toEqual(['table ip kproxy-trace', 'table ip6 kproxy-trace']);
      const sync = await inNode(['sync']);
      expect(sync.exitCode, sync.stderr).toBe(0);
      expect(sync.stderr).toContain('kernel already up to date');
      expect(await traceTables()).toHaveLength(2);
    } finally {
      t.child.kill('SIGTERM');
    }
    expect((await t.done).code).toBe(143);
    expect(await traceTables()).toEqual([]);
  });

  it('one trace per namespace; a trace killed with -9 leaves no table (the kernel drops what its session owned)', async () => {
    const t = startTrace(['--service', 'flows/web']);
    try {
      await t.ready;
      const second = await inNode(['trace', '--service', 'flows/empty', '--timeout', '5s']);
      expect(second.exitCode).toBe(1);
      expect(second.stderr).toContain('one trace per network namespace runs at a time');
      expect(await traceTables()).toHaveLength(2);
    } finally {
      t.child.kill('SIGKILL');
    }
    await t.done;
    await expect.poll(traceTables, { timeout: 5000 }).toEqual([]);
  });

  it('other modes are refused with a clear error; an unknown Service is an error', async () => {
    const r = await execa(KPROXY, ['trace', '--proxy-mode', 'iptables', '--service', 'flows/web', ...flags()], {
      reject: false,
    });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('kproxy trace: nftables mode only');
    const unknown = await inNode(['trace', '--service', 'flows/nope']);
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stderr).toContain('Service flows/nope has no port kproxy programs on this node');
    expect(await traceTables()).toEqual([]);
  });
});
