/**
 * `kproxy run` end to end: the real daemon (api source with its reflectors,
 * proxier, runner, health, metrics, health-check NodePorts, events) against the fake API server,
 * programming the kernel of a topology's node namespace, judged by real packets.
 *
 * The fake API server listens on 127.0.0.1 in the root namespace, so the daemon runs there too
 * and reaches the node namespace's kernel through `exec: inNetns(node.ns)`. Health and metrics
 * bind to 127.0.0.1:0; health-check NodePorts to 127.0.0.1.
 *
 * Topology: pods cli (a client pod, no servers), a, b, c (serving TCP 8080); one outside client.
 * Services are IPv4 (10.96.0.i); the ServiceCIDR 10.96.0.0/16 exists, so a ClusterIP that is not
 * (or no longer) allocated is dropped, which a probe sees as a timeout.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Exec } from '../../src/kernel/exec.ts';
import {
  formatTally,
  type ProbeResult,
  type ProbeSpec,
  type Tally,
  type Topology,
} from '../../src/sandbox/topology.ts';
import { FakeApiServer } from '../support/fake-apiserver.ts';
import {
  DAEMON_FLAGS,
  NODE,
  NS,
  SYNC_PERIOD_MS,
  clusterIP,
  collectJsonLines,
  endpointSlice,
  freePort,
  httpGet,
  kproxyTable,
  kproxyTableHandle,
  kproxyTables,
  metricValue,
  nodeObject,
  resetNode,
  service,
  serviceCIDRObject,
  showLog,
  sleep,
  spawnChild,
  startInProcess,
  syncLines,
  waitFor,
  type InProcessDaemon,
  type LogLine,
  daemonTopology,
} from '../support/daemon-harness.ts';

const KPROXY = fileURLToPath(new URL('../../bin/kproxy', import.meta.url));
/** Bound for a change on the API server to show in packets. */
const CONVERGE_MS = 3000;

let topo: Topology;
const cleanups: (() => Promise<void>)[] = [];
const defer = (fn: () => Promise<void>): void => void cleanups.push(fn);
/** A daemon child that is killed (if still running) when the test ends, pass or fail. */
function ownedChild(server: FakeApiServer, topo: Topology): ReturnType<typeof spawnChild> {
  const child = spawnChild(server, topo);
  defer(async () => {
    if (child.proc.exitCode === null && child.proc.signalCode === null) process.kill(child.pid, 'SIGKILL');
    await child.exited;
  });
  return child;
}

beforeAll(async () => {
  topo = await daemonTopology(['a', 'b', 'c']);
}, 60_000);

afterAll(async () => {
  await topo?.destroy();
});

beforeEach(async () => {
  await resetNode(topo);
});

afterEach(async () => {
  // Daemons first, then the servers they talk to; every step runs even when one fails.
  const errors: unknown[] = [];
  for (const c of cleanups.splice(0).reverse()) {
    try {
      await c();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) throw errors[0];
});

// ---------------------------------------------------------------------------------------------
// Helpers

const tcp = (host: string, port = 80): ProbeSpec => ({ proto: 'tcp', host, port });
const cli = (): Topology['pods'][number] => topo.pod('cli');
const podsOf = (t: Tally): string[] => [...t.byPod.keys()].sort();

async function fakeServer(setup: (s: FakeApiServer) => void = () => {}): Promise<FakeApiServer> {
  const server = await FakeApiServer.start();
  defer(() => server.close());
  server.create('Node', nodeObject(topo));
  server.create('ServiceCIDR', serviceCIDRObject());
  setup(server);
  return server;
}

async function daemon(
  server: FakeApiServer,
  opts: { wrapExec?: (inner: Exec) => Exec } = {},
): Promise<InProcessDaemon> {
  const d = await startInProcess({ server, topo, ...opts });
  defer(() => d.stop());
  return d;
}

/** Waits until connections to `ip` from the cli pod are all answered, by exactly `pods`. */
async function expectPods(ip: string, pods: readonly string[], timeoutMs = CONVERGE_MS): Promise<number> {
  let last: Tally | undefined;
  const want = [...pods].sort();
  return waitFor(
    `${ip} to be served by ${want.join(',')}`,
    async () => {
      last = await topo.probeMany(cli(), tcp(ip), 8 * want.length);
      return last.answered === last.total && JSON.stringify(podsOf(last)) === JSON.stringify(want);
    },
    timeoutMs,
    { intervalMs: 20, describe: () => (last ? formatTally(last) : 'no probe') },
  );
}

/** Waits until a connection to `ip` ends as `kind` (e.g. 'timeout': dropped). */
async function expectOutcome(ip: string, kind: ProbeResult['kind'], timeoutMs = CONVERGE_MS): Promise<void> {
  let last: ProbeResult | undefined;
  await waitFor(
    `${ip} to end as ${kind}`,
    async () => {
      last = await topo.probe(cli(), tcp(ip));
      return last.kind === kind;
    },
    timeoutMs,
    { intervalMs: 20, describe: () => JSON.stringify(last) },
  );
}

/** Sequential connections with a pause between them, until stopped (and at least `min`). */
function keepConnecting(
  spec: ProbeSpec,
  opts: { gapMs: number; min?: number },
): { readonly results: ProbeResult[]; stop(): Promise<ProbeResult[]> } {
  const results: ProbeResult[] = [];
  let stopping = false;
  const done = (async () => {
    while (!stopping || results.length < (opts.min ?? 0)) {
      results.push(await topo.probe(cli(), spec));
      await sleep(opts.gapMs);
    }
  })();
  return {
    results,
    async stop() {
      stopping = true;
      await done;
      return results;
    },
  };
}

const failures = (results: readonly ProbeResult[]): ProbeResult[] => results.filter((r) => r.kind !== 'answered');

async function firstSync(lines: readonly LogLine[], timeoutMs = 15_000): Promise<LogLine> {
  await waitFor('the first sync', () => syncLines(lines).length > 0, timeoutMs, { describe: () => showLog(lines) });
  return syncLines(lines)[0] as LogLine;
}

// ---------------------------------------------------------------------------------------------

describe('kproxy run against an API server', () => {
  it('programs a Service from the API server, follows EndpointSlice changes with partial syncs, drops a deleted ClusterIP', async () => {
    const server = await fakeServer();
    const d = await daemon(server);
    const first = await firstSync(d.lines);
    expect(first['kind']).toBe('full');

    const ip = clusterIP(10);
    server.create('Service', service('web', 10));
    server.create('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['a', 'b']));
    await expectPods(ip, ['a', 'b']);

    server.update('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['c']));
    await expectPods(ip, ['c']);

    server.delete('Service', 'web', NS);
    await expectOutcome(ip, 'timeout');
    server.delete('EndpointSlice', 'web-1', NS);

    const metrics = await d.metrics();
    expect(
      metricValue(metrics, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_count', { ip_family: 'IPv4' }) ?? 0,
    ).toBeGreaterThan(0);
    expect(
      metricValue(metrics, 'kubeproxy_sync_full_proxy_rules_duration_seconds_count', { ip_family: 'IPv4' }) ?? 0,
    ).toBeGreaterThan(0);
    const partial = syncLines(d.lines).filter((l) => l['kind'] === 'partial');
    expect(partial.length, showLog(d.lines)).toBeGreaterThan(0);
    expect(partial.some((l) => Number(l['commands']) > 0)).toBe(true);
    expect(
      d.lines.filter((l) => l.level >= 50),
      'no errors logged',
    ).toEqual([]);
  });

  it('endpoints on different target ports (a named port resolved per pod) are each reached on their own port, before and after they agree', async () => {
    // The endpoint maps hold one target port per frontend, so such a service port keeps a ladder
    // (ADR 0008); b listens on 9090 only while its slice says so, so a wrong port goes unanswered.
    const b = topo.pod('b');
    await topo.unserve(b, { tcp: [8080] });
    await topo.serve(b, { tcp: [9090] });
    defer(async () => {
      await topo.unserve(b, { tcp: [9090] });
      await topo.serve(b, { tcp: [8080] });
    });
    const server = await fakeServer();
    await firstSync((await daemon(server)).lines);
    const ip = clusterIP(11);
    const onPort = (slice: Record<string, unknown>, port: number) => ({
      ...slice,
      ports: [{ name: 'http', protocol: 'TCP', port }],
    });
    server.create(
      'Service',
      service('mixed', 11, { spec: { ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 'http' }] } }),
    );
    server.create('EndpointSlice', endpointSlice(topo, 'mixed-a', 'mixed', ['a']));
    server.create('EndpointSlice', onPort(endpointSlice(topo, 'mixed-b', 'mixed', ['b']), 9090));
    await expectPods(ip, ['a', 'b']);
    expect(await kproxyTable(topo)).toMatch(/chain svc-[0-9a-f]+-e2e\/mixed\/tcp\/80/);

    await topo.serve(b, { tcp: [8080] });
    await topo.unserve(b, { tcp: [9090] });
    server.update('EndpointSlice', endpointSlice(topo, 'mixed-b', 'mixed', ['b']));
    await expectPods(ip, ['a', 'b']);
    expect(await kproxyTable(topo)).not.toMatch(/chain svc-[0-9a-f]+-e2e\/mixed/);
  });

  it('programs nothing before the caches sync; a dropped watch or a 410 never wipes rules and changes made meanwhile converge', async () => {
    const LIST_FAILURES = 8;
    const server = await fakeServer((s) => {
      s.create('Service', service('web', 10));
      s.create('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['a', 'b']));
      s.create('Service', service('api', 11));
      s.create('EndpointSlice', endpointSlice(topo, 'api-1', 'api', ['c']));
      s.failNext('/api/v1/services', 500, LIST_FAILURES, 'list');
    });
    const serviceLists = (): number => server.requests.filter((q) => q.path === '/api/v1/services' && !q.watch).length;
    const d = await daemon(server);

    // While every Services list fails: not synced, and no kproxy table at all.
    let checks = 0;
    while (serviceLists() < LIST_FAILURES) {
      expect(d.source.isSynced()).toBe(false);
      expect(await kproxyTables(topo)).toEqual([]);
      checks++;
      await sleep(100);
    }
    expect(checks).toBeGreaterThan(3);
    expect(d.lines.some((l) => l.msg.startsWith('list/watch failed') && l['cache'] === 'services')).toBe(true);
    expect(syncLines(d.lines)).toEqual([]);

    // Recovered: rules appear.
    await expectPods(clusterIP(10), ['a', 'b'], 5000);
    await expectPods(clusterIP(11), ['c']);

    const traffic = keepConnecting(tcp(clusterIP(10)), { gapMs: 15 });
    try {
      // A dropped watch: changes made before the client notices are picked up on resuming.
      await waitFor('watches open', () => server.openWatches() >= 4, 3000);
      expect(server.dropWatches()).toBeGreaterThanOrEqual(4);
      server.update('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['b', 'c']));
      server.create('Service', service('new', 12));
      server.create('EndpointSlice', endpointSlice(topo, 'new-1', 'new', ['a']));
      await expectPods(clusterIP(10), ['b', 'c']);
      await expectPods(clusterIP(12), ['a']);

      // History compacted, watches gone: resuming gets 410, a relist converges, deletions included.
      await waitFor('watches open again', () => server.openWatches() >= 4, 3000);
      server.compactHistory();
      server.dropWatches();
      server.delete('Service', 'api', NS);
      server.delete('EndpointSlice', 'api-1', NS);
      server.update('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['a']));
      await expectPods(clusterIP(10), ['a']);
      await expectOutcome(clusterIP(11), 'timeout');
      expect(
        d.lines.some((l) => l.msg === 'resource version expired; listing again'),
        showLog(d.lines),
      ).toBe(true);

      // The same through a clean end of the watches (the server's timeout) after a compaction.
      await waitFor('watches open again', () => server.openWatches() >= 4, 3000);
      server.compactHistory();
      server.endWatches();
      server.update('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['a', 'b', 'c']));
      await expectPods(clusterIP(10), ['a', 'b', 'c']);
    } finally {
      const results = await traffic.stop();
      expect(results.length).toBeGreaterThan(20);
      expect(failures(results), `of ${results.length} connections`).toEqual([]);
    }
  });

  it('restarts without disruption: kill -9, a new daemon, zero failed connections, the table untouched, a first sync that changes nothing', async () => {
    const server = await fakeServer((s) => {
      s.create('Service', service('web', 10));
      s.create('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['a', 'b']));
    });
    const one = ownedChild(server, topo);
    const oneFirst = await firstSync(one.lines);
    expect(oneFirst['commands'], 'the first daemon programmed the rules').toBeGreaterThan(0);
    await expectPods(clusterIP(10), ['a', 'b']);
    const handle = await kproxyTableHandle(topo);
    const table = await kproxyTable(topo);
    expect(handle).toBeDefined();

    // Watch the table's handle throughout: a flush or re-creation would change (or lose) it.
    const handles = new Set<number | undefined>();
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        handles.add(await kproxyTableHandle(topo));
        await sleep(25);
      }
    })();

    const traffic = keepConnecting(tcp(clusterIP(10)), { gapMs: 20, min: 150 });
    let two: ReturnType<typeof spawnChild> | undefined;
    try {
      await sleep(800);
      process.kill(one.pid, 'SIGKILL');
      expect((await one.exited).signal).toBe('SIGKILL');
      const killedAt = traffic.results.length;
      two = ownedChild(server, topo);
      const twoFirst = await firstSync(two.lines);
      // The new daemon's first (full) sync read the kernel and found nothing to do.
      expect(twoFirst['kind']).toBe('full');
      expect(twoFirst['commands'], JSON.stringify(twoFirst)).toBe(0);
      await sleep(500);
      const results = await traffic.stop();
      expect(killedAt, 'the kill happened mid-way').toBeGreaterThan(10);
      expect(results.length - killedAt, 'connections after the kill').toBeGreaterThan(50);
      expect(results.length).toBeGreaterThanOrEqual(150);
      expect(failures(results), `of ${results.length} connections`).toEqual([]);
    } finally {
      await traffic.stop();
      watching = false;
      await watcher;
    }
    expect([...handles]).toEqual([handle]);
    expect(await kproxyTable(topo)).toBe(table);
    expect(
      syncLines(two.lines).every((l) => l['commands'] === 0),
      showLog(syncLines(two.lines)),
    ).toBe(true);

    // And the new daemon is live: a change still goes through.
    server.update('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['c']));
    await expectPods(clusterIP(10), ['c']);

    // SIGTERM right behind a sync (likely while its conntrack cleanup runs): the sync finishes, exit 0.
    process.kill(two.pid, 'SIGTERM');
    const end = await two.exited;
    expect(end.exitCode, `${JSON.stringify(end)}\n${showLog(two.lines, 5)}`).toBe(0);
    expect(two.lines.some((l) => l.msg === 'kproxy stopped; rules left in place')).toBe(true);
  });

  it('restarts into a changed cluster: kill -9, the endpoints replaced while down; the new daemon reads the sets as digests, lists the ones that differ, and traffic goes to the new endpoint only', async () => {
    const server = await fakeServer((s) => {
      s.create('Service', service('web', 11));
      s.create('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['a', 'b']));
    });
    const one = ownedChild(server, topo);
    await firstSync(one.lines);
    await expectPods(clusterIP(11), ['a', 'b']);
    process.kill(one.pid, 'SIGKILL');
    await one.exited;
    server.update('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['c']));
    const two = ownedChild(server, topo);
    const twoFirst = await firstSync(two.lines);
    // A full sync that planned the difference against the kernel (the endpoint maps' elements).
    expect(twoFirst['kind']).toBe('full');
    expect(twoFirst['commands'], JSON.stringify(twoFirst)).toBeGreaterThan(0);
    await expectPods(clusterIP(11), ['c']);
    expect(two.lines.filter((l) => l.level >= 40).map((l) => l.msg)).toEqual([]);
    process.kill(two.pid, 'SIGTERM');
    expect((await two.exited).exitCode).toBe(0);
  });

  it('the real CLI (`kproxy run --manifests`) in the node namespace exits 0 on SIGTERM and leaves the rules', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kproxy-e2e-'));
    defer(async () => rmSync(dir, { recursive: true, force: true }));
    const kinded = (kind: string, apiVersion: string, o: Record<string, unknown>): Record<string, unknown> => ({
      apiVersion,
      kind,
      ...o,
    });
    const items = [
      kinded('Node', 'v1', nodeObject(topo)),
      kinded('ServiceCIDR', 'networking.k8s.io/v1', serviceCIDRObject()),
      kinded('Service', 'v1', service('web', 10)),
      kinded('EndpointSlice', 'discovery.k8s.io/v1', endpointSlice(topo, 'web-1', 'web', ['a', 'c'])),
    ];
    writeFileSync(join(dir, 'cluster.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));

    // Frequent full syncs, so a SIGTERM can be sent while nft or conntrack runs (the case that once
    // killed the daemon by the signal instead of letting it finish the sync and exit 0).
    const flags = [
      ...DAEMON_FLAGS,
      '--iptables-sync-period=100ms',
      '--iptables-min-sync-period=50ms',
      '--healthz-bind-address=127.0.0.1:10256',
      '--metrics-bind-address=127.0.0.1:10249',
    ];
    const proc = execa('ip', ['netns', 'exec', topo.node.ns, KPROXY, 'run', '--manifests', dir, ...flags], {
      reject: false,
      buffer: false,
      stdin: 'ignore',
      stdout: 'ignore',
      stderr: 'pipe',
    });
    defer(async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await proc;
    });
    const lines: LogLine[] = [];
    collectJsonLines(proc.stderr, lines);
    const first = await firstSync(lines);
    expect(first['commands']).toBeGreaterThan(0);
    await expectPods(clusterIP(10), ['a', 'c']);
    await waitFor('a few more syncs', () => syncLines(lines).length >= 3, 3000);
    // SIGTERM while kproxy runs a subprocess (nft or conntrack) of a sync.
    const pid = proc.pid ?? 0;
    const children = `/proc/${pid}/task/${pid}/children`;
    await waitFor('kproxy running nft or conntrack', () => readFileSync(children, 'utf8').trim() !== '', 3000, {
      intervalMs: 1,
    });
    proc.kill('SIGTERM');
    const r = await proc;
    expect(r.exitCode, showLog(lines)).toBe(0);
    expect(lines.some((l) => l.msg === 'stopping' && l['signal'] === 'SIGTERM')).toBe(true);
    expect(lines.some((l) => l.msg === 'kproxy stopped; rules left in place')).toBe(true);
    expect(await kproxyTable(topo)).toContain(clusterIP(10));
    await expectPods(clusterIP(10), ['a', 'c']);
  });

  it('repairs drift: a table deleted behind its back is restored by the next full sync', async () => {
    const server = await fakeServer((s) => {
      s.create('Service', service('web', 10));
      s.create('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['b']));
    });
    const d = await daemon(server);
    await firstSync(d.lines);
    await expectPods(clusterIP(10), ['b']);
    const handle = await kproxyTableHandle(topo);

    await topo.nft(['delete', 'table', 'ip', 'kproxy']);
    // Not intercepted any more: the upstream refuses what the node forwards.
    expect((await topo.probe(cli(), tcp(clusterIP(10)))).kind).toBe('error');

    const restoredIn = await waitFor(
      'the table to be restored',
      async () => (await kproxyTableHandle(topo)) !== undefined,
      SYNC_PERIOD_MS + 1500,
    );
    expect(await kproxyTableHandle(topo)).not.toBe(handle);
    expect(restoredIn).toBeLessThan(SYNC_PERIOD_MS + 1500);
    await expectPods(clusterIP(10), ['b'], 1000);
    const at = d.lines.findIndex((l) => l.msg.startsWith('drift:'));
    expect(at, showLog(d.lines)).toBeGreaterThanOrEqual(0);
    expect(d.lines[at]?.level).toBe(40);
    // The repair was the periodic full sync (nothing had changed, so no partial sync ran).
    const repair = syncLines(d.lines.slice(at))[0];
    expect(repair).toMatchObject({ kind: 'full' });
    expect(Number(repair?.['commands'])).toBeGreaterThan(0);
  });

  it('health: /healthz and /livez turn 503 after 2 × syncPeriod of failing syncs and recover by themselves; metrics, /proxyMode, the Starting event', async () => {
    let failing = false;
    const wrapExec =
      (inner: Exec): Exec =>
      async (file, args, stdin) => {
        if (failing && file === 'nft' && args.includes('-f'))
          return { exitCode: 1, stdout: '', stderr: 'Error: injected failure by the e2e test\n' };
        return inner(file, args, stdin);
      };
    const triggered = new Date(Date.now() - 1000).toISOString().replace(/\.\d+Z$/, 'Z');
    const annotations = { 'endpoints.kubernetes.io/last-change-trigger-time': triggered };
    const server = await fakeServer((s) => {
      s.create('Service', service('web', 10));
      s.create('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['a'], { annotations }));
    });
    const d = await daemon(server, { wrapExec });
    await firstSync(d.lines);
    await expectPods(clusterIP(10), ['a']);
    const healthz = async () => httpGet(`${d.healthzUrl}/healthz`);
    const livez = async () => httpGet(`${d.healthzUrl}/livez`);
    await waitFor('/healthz 200', async () => (await healthz()).status === 200, 3000);
    expect(JSON.parse((await healthz()).body)).toMatchObject({ nodeEligible: true, healthy: true });
    expect((await livez()).status).toBe(200);

    // Syncs fail from now on; changes keep coming.
    failing = true;
    const failedAt = Date.now();
    let n = 0;
    const changes = setInterval(() => {
      n++;
      server.update(
        'EndpointSlice',
        endpointSlice(topo, 'web-1', 'web', n % 2 === 1 ? ['b'] : ['a', 'b'], { annotations }),
      );
    }, 300);
    server.update('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['c'], { annotations }));
    try {
      const timeoutMs = 2 * SYNC_PERIOD_MS;
      await waitFor('/healthz 503', async () => (await healthz()).status === 503, timeoutMs + 2000, {
        intervalMs: 100,
      });
      const unhealthyAfter = Date.now() - failedAt;
      expect(unhealthyAfter).toBeGreaterThanOrEqual(timeoutMs - 100);
      const body = JSON.parse((await healthz()).body) as Record<string, unknown>;
      expect(body).toMatchObject({ healthy: false, nodeEligible: true, status: { IPv4: { healthy: false } } });
      expect((await livez()).status).toBe(503);
      // The kernel kept the last rules that applied: traffic still reaches pod a.
      const t = await topo.probeMany(cli(), tcp(clusterIP(10)), 8);
      expect(podsOf(t), formatTally(t)).toEqual(['a']);
      const m = await d.metrics();
      expect(
        metricValue(m, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total', { ip_family: 'IPv4' }) ?? 0,
      ).toBeGreaterThan(0);
    } finally {
      clearInterval(changes);
      failing = false;
    }
    // Failed syncs are retried from minSyncPeriod, doubling up to syncPeriod (no retry storm against a
    // broken kernel tool): the first retry after the fault goes away comes within one syncPeriod.
    const recoveryMs = SYNC_PERIOD_MS + 2000;
    const recoveredIn = await waitFor('/healthz 200 again', async () => (await healthz()).status === 200, recoveryMs, {
      intervalMs: 50,
    });
    expect(recoveredIn).toBeLessThan(recoveryMs);
    expect((await livez()).status).toBe(200);
    const last = n % 2 === 1 ? ['b'] : ['a', 'b'];
    await expectPods(clusterIP(10), last);

    const m = await d.metrics();
    expect(
      metricValue(m, 'kubeproxy_sync_proxy_rules_duration_seconds_count', { ip_family: 'IPv4' }) ?? 0,
    ).toBeGreaterThan(0);
    expect(
      metricValue(m, 'kubeproxy_network_programming_duration_seconds_count', { ip_family: 'IPv4' }) ?? 0,
    ).toBeGreaterThan(0);
    const lastSync = metricValue(m, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds', { ip_family: 'IPv4' }) ?? 0;
    expect(Math.abs(lastSync - Date.now() / 1000)).toBeLessThan(30);
    expect(metricValue(m, 'kubeproxy_proxy_healthz_total', { code: '503' }) ?? 0).toBeGreaterThan(0);
    expect(metricValue(m, 'kubeproxy_proxy_healthz_total', { code: '200' }) ?? 0).toBeGreaterThan(0);
    const proxyMode = await httpGet(`${d.metricsUrl}/proxyMode`);
    expect(proxyMode.status).toBe(200);
    expect(proxyMode.body).toBe('nftables');

    const starting = server.events.find((e) => e.object['reason'] === 'Starting');
    expect(starting, JSON.stringify(server.events)).toBeDefined();
    expect(starting?.object['involvedObject']).toMatchObject({ kind: 'Node', name: NODE });
    expect(starting?.object['type']).toBe('Normal');

    // Upstream: /healthz also requires this Node (not being deleted); /livez only the proxy's health.
    server.delete('Node', NODE);
    await waitFor('/healthz 503 without the Node', async () => (await healthz()).status === 503, 3000);
    expect(JSON.parse((await healthz()).body)).toMatchObject({ nodeEligible: false, healthy: true });
    expect((await livez()).status).toBe(200);
    // The daemon reads its Node again when the Node changes, not on every change: back it comes.
    server.create('Node', nodeObject(topo));
    await waitFor('/healthz 200 with the Node back', async () => (await healthz()).status === 200, 3000);
    expect(JSON.parse((await healthz()).body)).toMatchObject({ nodeEligible: true, healthy: true });
  });

  it('bad objects from the API are logged and skipped; the good Service keeps working', async () => {
    const server = await fakeServer((s) => {
      s.create('Service', service('good', 20));
      s.create('EndpointSlice', endpointSlice(topo, 'good-1', 'good', ['a', 'b']));
    });
    const d = await daemon(server);
    await firstSync(d.lines);
    await expectPods(clusterIP(20), ['a', 'b']);

    server.create(
      'Service',
      service('bad-ip', 21, { spec: { clusterIP: '10.96.0.300', clusterIPs: ['10.96.0.300'] } }),
    );
    server.create('EndpointSlice', endpointSlice(topo, 'bad-ip-1', 'bad-ip', ['c']));
    server.create('Service', service('bad-type', 22, { spec: { type: 'Bogus' } }));
    server.create('EndpointSlice', endpointSlice(topo, 'bad-type-1', 'bad-type', ['c']));
    server.create(
      'Service',
      service('huge', 23, {
        spec: { externalIPs: Array.from({ length: 10_000 }, (_, i) => `203.0.${i >> 8}.${i & 255}`) },
      }),
    );
    server.create('EndpointSlice', endpointSlice(topo, 'huge-1', 'huge', ['c']));
    // Unknown fields are what newer API servers send: ignored (as upstream's decoder does), not an error.
    server.create('Service', service('unknown-field', 24, { spec: { frobnicate: { level: 11 } } }));
    server.create('EndpointSlice', {
      ...endpointSlice(topo, 'unknown-field-1', 'unknown-field', ['c']),
      futureField: [1, 2, 3],
    });
    // Garbage addresses: each endpoint is dropped (with a problem), the rest of the Service stays.
    const garbage = endpointSlice(topo, 'good-garbage', 'good', []);
    garbage['endpoints'] = ['not-an-ip', '10.244.0.999', '127.0.0.1', 'fd00:244::5', '10.244.0.4; flush ruleset'].map(
      (a) => ({ addresses: [a], conditions: { ready: true } }),
    );
    server.create('EndpointSlice', garbage);
    server.create('EndpointSlice', { ...endpointSlice(topo, 'good-weird-type', 'good', ['c']), addressType: 'IPv5' });

    await expectPods(clusterIP(24), ['c']);
    const warned = (object: string): boolean =>
      d.lines.some((l) => l.level === 40 && l.msg.startsWith('invalid input:') && String(l['object']).includes(object));
    await waitFor(
      'every bad object reported',
      () => ['bad-ip', 'bad-type', 'huge', 'good-garbage', 'good-weird-type'].every(warned),
      3000,
      {
        describe: () => showLog(d.lines.filter((l) => l.level >= 40)),
      },
    );
    expect(warned('unknown-field')).toBe(false);
    // Bad Services got no rules (their ClusterIPs are unallocated addresses: dropped) ...
    for (const i of [22, 23]) expect((await topo.probe(cli(), tcp(clusterIP(i)))).kind, clusterIP(i)).toBe('timeout');
    // ... and the good one still reaches exactly its good endpoints.
    await expectPods(clusterIP(20), ['a', 'b'], 1000);
    expect(
      d.lines.filter((l) => l.level >= 50),
      'no errors',
    ).toEqual([]);

    // The daemon keeps working after all that.
    server.update('EndpointSlice', endpointSlice(topo, 'good-1', 'good', ['b']));
    await expectPods(clusterIP(20), ['b']);
  });

  it('health-check NodePort: 200 with weight 1 while an endpoint is local, 503 once none is', async () => {
    const port = await freePort();
    const lbSpec = {
      type: 'LoadBalancer',
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: port,
      ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30040 }],
    };
    const server = await fakeServer((s) => {
      s.create(
        'Service',
        service('lb', 40, { spec: lbSpec, status: { loadBalancer: { ingress: [{ ip: '198.51.100.40' }] } } }),
      );
      s.create('EndpointSlice', endpointSlice(topo, 'lb-1', 'lb', ['a', { pod: 'c', node: 'node-b' }]));
    });
    const d = await daemon(server);
    await firstSync(d.lines);
    const url = `http://127.0.0.1:${port}/`;
    let answer = await waitFor(
      'the health-check port to answer',
      async () => (await httpGet(url).catch(() => undefined))?.status === 200,
      3000,
    ).then(() => httpGet(url));
    expect(answer.status).toBe(200);
    expect(answer.headers.get('x-load-balancing-endpoint-weight')).toBe('1');
    expect(JSON.parse(answer.body)).toMatchObject({
      service: { namespace: NS, name: 'lb' },
      localEndpoints: 1,
      serviceProxyHealthy: true,
    });
    // External traffic to the LB IP goes to the local endpoint only.
    const ext = await topo.probeMany(topo.client('ext'), tcp('198.51.100.40'), 8);
    expect(podsOf(ext), formatTally(ext)).toEqual(['a']);

    server.update(
      'EndpointSlice',
      endpointSlice(topo, 'lb-1', 'lb', [
        { pod: 'a', node: 'node-b' },
        { pod: 'c', node: 'node-b' },
      ]),
    );
    await waitFor('503', async () => (await httpGet(url)).status === 503, CONVERGE_MS);
    answer = await httpGet(url);
    expect(answer.headers.get('x-load-balancing-endpoint-weight')).toBe('0');
    expect(JSON.parse(answer.body)).toMatchObject({ localEndpoints: 0 });

    server.delete('Service', 'lb', NS);
    await waitFor(
      'the health-check port to close',
      async () => (await httpGet(url).catch(() => undefined)) === undefined,
      CONVERGE_MS,
    );
  });
});
