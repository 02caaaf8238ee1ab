/**
 * `kproxy run --proxy-mode iptables` end to end: the daemon against the fake API server, the
 * kernel of a real node namespace, real TCP. The mode-independent behaviour (caches, health,
 * metrics, bad input) is covered by e2e.test.ts in nftables mode; this file proves what iptables
 * mode adds: partial restores that follow changes, the canary that sees a flush by someone else,
 * and a restart that adopts the rules without writing.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { ProbeSpec, Tally, Topology } from '../../src/sandbox/topology.ts';
import { formatTally } from '../../src/sandbox/topology.ts';
import { FakeApiServer } from '../support/fake-apiserver.ts';
import {
  clusterIP,
  endpointSlice,
  NS,
  nodeObject,
  service,
  serviceCIDRObject,
  showLog,
  startInProcess,
  syncLines,
  waitFor,
  type InProcessDaemon,
  flushIptables,
  daemonTopology,
} from '../support/daemon-harness.ts';

const FLAGS = ['--proxy-mode=iptables'];
const CONVERGE_MS = 4000;

let topo: Topology;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  topo = await daemonTopology(['a', 'b', 'c']);
}, 60_000);

afterAll(async () => {
  await topo?.destroy();
});

beforeEach(async () => {
  await flushIptables(topo);
  await topo.flushConntrack().catch(() => {});
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(): Promise<{ server: FakeApiServer; daemon: () => Promise<InProcessDaemon> }> {
  const server = await FakeApiServer.start();
  cleanups.push(() => server.close());
  server.create('Node', nodeObject(topo));
  server.create('ServiceCIDR', serviceCIDRObject());
  return {
    server,
    daemon: async () => {
      const d = await startInProcess({ server, topo, flags: FLAGS });
      cleanups.push(() => d.stop());
      return d;
    },
  };
}

const tcp = (host: string): ProbeSpec => ({ proto: 'tcp', host, port: 80 });

async function expectPods(ip: string, pods: readonly string[]): Promise<void> {
  let last: Tally | undefined;
  const want = [...pods].sort();
  await waitFor(
    `${ip} to be served by ${want.join(',')}`,
    async () => {
      last = await topo.probeMany(topo.pod('cli'), tcp(ip), 8 * want.length);
      return last.answered === last.total && JSON.stringify([...last.byPod.keys()].sort()) === JSON.stringify(want);
    },
    CONVERGE_MS,
    { intervalMs: 20, describe: () => (last ? formatTally(last) : 'no probe') },
  );
}

describe('kproxy run --proxy-mode iptables', () => {
  it('programs Services, follows EndpointSlice changes with partial restores, removes a deleted Service', async () => {
    const { server, daemon } = await setup();
    const d = await daemon();
    server.create('Service', service('web', 10));
    server.create('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['a', 'b']));
    await expectPods(clusterIP(10), ['a', 'b']);
    server.update('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['c']));
    await expectPods(clusterIP(10), ['c']);
    // The rules are in the kernel before the sync's log line (conntrack cleanup runs in between).
    await waitFor(
      'a partial sync that wrote the change',
      () => syncLines(d.lines).some((l) => l['kind'] === 'partial' && Number(l['commands']) > 0),
      CONVERGE_MS,
      { describe: () => showLog(d.lines) },
    );
    server.delete('Service', 'web', NS);
    server.delete('EndpointSlice', 'web-1', NS);
    await waitFor('the Service chains to go', async () => !(await saved()).includes('KUBE-SVC-'), CONVERGE_MS);
    expect(d.lines.filter((l) => l.level >= 50)).toEqual([]);
  });

  it('a flush by someone else (firewalld reload) is seen through the canary and repaired', async () => {
    const { server, daemon } = await setup();
    const d = await daemon();
    server.create('Service', service('web', 10));
    server.create('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['a']));
    await expectPods(clusterIP(10), ['a']);
    await flushIptables(topo);
    // The canary is polled every syncPeriod (2 s here), then a full sync restores everything.
    await expectPods(clusterIP(10), ['a']);
    expect(
      d.lines.some((l) => String(l.msg).includes('flushed by someone else')),
      showLog(d.lines),
    ).toBe(true);
  });

  it('a restarted daemon adopts the rules: its first (full) sync writes nothing', async () => {
    const { server, daemon } = await setup();
    server.create('Service', service('web', 10));
    server.create('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['a', 'b']));
    const first = await daemon();
    await expectPods(clusterIP(10), ['a', 'b']);
    await first.stop();
    const before = await saved();
    const second = await daemon();
    await waitFor('the first sync', () => syncLines(second.lines).length > 0, CONVERGE_MS);
    const sync = syncLines(second.lines)[0];
    expect(sync?.['kind']).toBe('full');
    expect(sync?.['commands'], showLog(second.lines)).toBe(0);
    expect(await saved()).toEqual(before);
  });
});

/** iptables-save of the node namespace without counters. */
async function saved(): Promise<string> {
  const r = await topo.execIn(topo.node, 'iptables-save', []);
  return r.stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/ \[\d+:\d+\]$/, ''))
    .join('\n');
}
