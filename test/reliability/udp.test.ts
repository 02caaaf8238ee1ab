/**
 * Issue 10, item 6 — UDP that never black-holes (nftables and iptables modes). A client in a pod
 * sends a datagram every 50 ms from one socket (one source port: one conntrack entry, as a resolver
 * keeps) to a ClusterIP's UDP port; each pod's server answers with its name and the datagram's
 * sequence number. Three changes, each with the old pod really gone (its server stopped):
 * the endpoint replaced (a → b); the Service scaled to zero and back; and a kproxy restart (the
 * daemon stopped, the endpoint replaced while none runs, a new daemon started). For each, the
 * moment the new rules are in the kernel is observed by polling the kernel; every datagram sent
 * from then on must be answered (target: 0 lost). Losses before it (the pod is gone and the rules
 * do not know yet, or there is no endpoint) are reported, not judged. The daemon deletes stale
 * conntrack entries through its persistent helpers, as `kproxy run` does.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProxyMode } from '../../src/config/proxy-config.ts';
import type { Topology } from '../../src/sandbox/topology.ts';
import { FakeApiServer } from '../support/fake-apiserver.ts';
import {
  nodeObject,
  resetNode,
  service,
  serviceCIDRObject,
  showLog,
  sleep,
  startInProcess,
  syncLines,
  waitFor,
  type InProcessDaemon,
  flushIptables,
  daemonTopology,
} from '../support/daemon-harness.ts';
import { sliceOf } from './support/cluster.ts';
import { MODES, report } from './support/env.ts';
import { kernelView, plainView } from './support/kernel-view.ts';
import { echoServer, startLoad, type LoadProcess, type UdpRecord } from './support/load.ts';

const CIP = '10.96.0.53';
const PORT = 53;
const POD_PORT = 5353;
const FRONTEND = `${CIP}:${PORT}/udp`;

let topo: Topology;

beforeAll(async () => {
  topo = await daemonTopology(['a', 'b']);
}, 60_000);

afterAll(async () => {
  await topo?.destroy();
});

describe.each(MODES)('UDP across changes (%s mode)', (mode: ProxyMode) => {
  it('endpoint replaced, scaled to zero and back, a kproxy restart: 0 datagrams lost once the new rules are in the kernel', async () => {
    await resetNode(topo);
    await flushIptables(topo);
    const server = await FakeApiServer.start();
    const slice = (pods: readonly string[]) =>
      sliceOf(
        'dns',
        pods.map((p) => [topo.pod(p).v4, 'ready'] as const),
        { protocol: 'UDP', port: POD_PORT, portName: 'dns' },
      );
    server.create('Node', nodeObject(topo));
    server.create('ServiceCIDR', serviceCIDRObject());
    server.create(
      'Service',
      service('dns', 53, { spec: { ports: [{ name: 'dns', protocol: 'UDP', port: PORT, targetPort: POD_PORT }] } }),
    );
    server.create('EndpointSlice', slice(['a']));
    const servers = new Map<string, LoadProcess<unknown>>();
    const serve = async (pod: string): Promise<void> => {
      servers.set(pod, await echoServer(topo.pod(pod).ns, pod, POD_PORT));
    };
    const stopServing = async (pod: string): Promise<void> => {
      await servers.get(pod)?.stop();
      servers.delete(pod);
    };
    const daemon = () =>
      startInProcess({ server, topo, logLevel: 'info', conntrackHelpers: true, flags: [`--proxy-mode=${mode}`] });
    let d: InProcessDaemon = await daemon();
    let client: LoadProcess<UdpRecord> | undefined;
    const rulesFor = async (pods: readonly string[], from: number): Promise<number> => {
      const want = JSON.stringify(pods.length === 0 ? null : pods.map((p) => `${topo.pod(p).v4}:${POD_PORT}`).sort());
      await waitFor(
        `${FRONTEND} → ${pods.join(',') || 'nothing'}`,
        async () => JSON.stringify(plainView(await kernelView(topo, mode))[FRONTEND] ?? null) === want,
        10_000,
        { intervalMs: 5 },
      );
      return Date.now() - from;
    };
    const rows: Record<string, unknown>[] = [];
    const judge = (name: string, from: number, rulesAt: number, until: number, recs: readonly UdpRecord[]) => {
      const window = recs.filter((r) => r.t >= from && r.t < until);
      const before = window.filter((r) => r.t < rulesAt && r.pod === null).length;
      const after = window.filter((r) => r.t >= rulesAt && r.pod === null);
      rows.push({
        change: name,
        sent: window.length,
        lostBeforeRules: before,
        lostAfterRules: after.length,
        rulesInKernelMs: rulesAt - from,
        lost: after.slice(0, 5).map((r) => `#${r.seq} sent ${r.t - rulesAt} ms after the rules were seen`),
      });
    };
    try {
      await waitFor('the first sync', () => syncLines(d.lines).length > 0, 15_000, {
        describe: () => showLog(d.lines),
      });
      await serve('a');
      await serve('b');
      await rulesFor(['a'], Date.now());
      client = startLoad<UdpRecord>(topo.pod('cli').ns, 'udp', {
        host: CIP,
        port: PORT,
        intervalMs: 50,
        timeoutMs: 45,
      });
      await sleep(1000);

      // 1. The endpoint replaced: a's pod goes away, b takes over.
      let from = Date.now();
      await stopServing('a');
      server.update('EndpointSlice', slice(['b']));
      let rulesAt = from + (await rulesFor(['b'], from));
      await sleep(1000);
      judge('endpoint replaced', from, rulesAt, Date.now(), client.records);

      // 2. Scaled to zero (b gone), then back (a starts again).
      from = Date.now();
      await stopServing('b');
      server.update('EndpointSlice', slice([]));
      await rulesFor([], from);
      await sleep(1000);
      const back = Date.now();
      await serve('a');
      server.update('EndpointSlice', slice(['a']));
      rulesAt = back + (await rulesFor(['a'], back));
      await sleep(1000);
      judge('scaled to zero and back', back, rulesAt, Date.now(), client.records);

      // 3. kproxy restart: stopped (rules stay), the endpoint replaced meanwhile, a new daemon.
      await serve('b');
      await d.stop();
      from = Date.now();
      await stopServing('a');
      server.update('EndpointSlice', slice(['b']));
      await sleep(500);
      d = await daemon();
      rulesAt = from + (await rulesFor(['b'], from));
      await sleep(1000);
      judge('kproxy restart', from, rulesAt, Date.now(), client.records);

      const recs = await client.stop();
      const lostAfter = rows.reduce((n, r) => n + Number(r['lostAfterRules']), 0);
      report({
        test: 'udp',
        mode,
        load: 'a datagram every 50 ms from one socket to a UDP ClusterIP',
        faults:
          'endpoint replaced (old pod gone); scaled to zero and back; kproxy stopped, endpoint replaced, new kproxy',
        result: `${recs.length} datagrams; lost after the new rules were in the kernel: ${rows.map((r) => `${r['change']} ${r['lostAfterRules']}`).join(', ')}; lost before (pod gone, rules not yet): ${rows.map((r) => r['lostBeforeRules']).join(', ')}`,
        pass: lostAfter === 0,
        data: { rows },
      });
      // The target is 0. What remains is the moment between the tool's commit and the daemon's
      // deletion of the stale conntrack entry (the tool must exit before kproxy knows the commit
      // happened): at most one datagram per change, sent within 100 ms of the rules appearing.
      for (const r of rows) {
        expect(Number(r['lostAfterRules']), JSON.stringify(r)).toBeLessThanOrEqual(1);
        for (const l of r['lost'] as string[]) expect(Number(/sent (-?\d+) ms/.exec(l)?.[1]), l).toBeLessThan(100);
      }
    } finally {
      await client?.stop();
      for (const p of [...servers.keys()]) await stopServing(p);
      await d.stop();
      await server.close();
    }
  }, 90_000);
});
