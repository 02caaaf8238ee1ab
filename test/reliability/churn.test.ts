/**
 * Issue 10, item 1 — churn under traffic. The daemon (in process, against the fake API server)
 * programs a real node namespace while clients open new TCP connections to ClusterIPs (from a pod)
 * and to a NodePort (from outside) at ≥ 200/s, and EndpointSlices change at 50 updates/s the way a
 * rollout changes them: a new ready pod appears, an old one turns terminating (still serving), then
 * disappears; a removed pod keeps serving for 2 s (its grace period) and is not reused for 3 s more.
 *
 * A connection fails when it times out (2 s: a dropped SYN is retransmitted after 1 s, so a slow
 * connection is counted apart), is refused or reset, or is answered by an endpoint that was not a
 * serving endpoint of that Service at that moment (added later, or removed more than its grace
 * period before). Convergence: from the last API update to the kernel sending every frontend to
 * exactly the final ready endpoints (read from the kernel, per frontend). Targets: 0 failed
 * connections, converged ≤ 1 s. Short: 10 s of churn; full (`npm run reliability`): 60 s.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
  daemonTopology,
} from '../support/daemon-harness.ts';
import { addVirtualPods, removeVirtualPods, sliceOf, type Condition } from './support/cluster.ts';
import { MODES, pick, report } from './support/env.ts';
import { kernelView, plainView } from './support/kernel-view.ts';
import { startLoad, type TcpRecord } from './support/load.ts';

const CHURN_MS = pick(10_000, 60_000);
const UPDATES_PER_S = 50;
const CLUSTERIP_RATE = 200;
const NODEPORT_RATE = 50;
const GRACE_MS = 2000;
const COOLDOWN_MS = 3000;
const NODE_PORT = 30080;
const SERVICES = ['s0', 's1', 's2', 's3', 'np'] as const;
const ip = (i: number): string => `10.96.0.${10 + i}`;

let topo: Topology;

beforeAll(async () => {
  topo = await daemonTopology(['a', 'b', 'c']);
}, 60_000);

afterAll(async () => {
  await topo?.destroy();
});

/** One Service's endpoints and, per address, when it was a serving endpoint. */
class Rollout {
  readonly endpoints = new Map<string, Condition>();
  /** address → [from, until) intervals it may serve new connections (until: removal + grace). */
  readonly serving = new Map<string, [number, number][]>();
  #phase = 0;
  readonly name: string;
  constructor(name: string) {
    this.name = name;
  }

  add(addr: string, at: number): void {
    this.endpoints.set(addr, 'ready');
    const list = this.serving.get(addr) ?? [];
    list.push([at, Number.POSITIVE_INFINITY]);
    this.serving.set(addr, list);
  }

  /** The next rollout step (add a ready pod; oldest ready → terminating; terminating → gone). */
  step(at: number, take: () => string | undefined, release: (addr: string, at: number) => void): boolean {
    const phase = this.#phase;
    if (phase === 0) {
      const addr = take();
      if (!addr) return false;
      this.add(addr, at);
      this.#phase = 1;
      return true;
    }
    this.#phase = (phase + 1) % 3;
    if (phase === 0) {
    } else if (phase === 1) {
      const oldest = [...this.endpoints.entries()].find(([, c]) => c === 'ready')?.[0];
      if (oldest) this.endpoints.set(oldest, 'terminating');
    } else {
      for (const [addr, c] of [...this.endpoints]) {
        if (c !== 'terminating') continue;
        this.endpoints.delete(addr);
        const list = this.serving.get(addr) ?? [];
        const open = list[list.length - 1];
        if (open) open[1] = at + GRACE_MS;
        release(addr, at);
      }
    }
    return true;
  }

  servedAt(addr: string, t: number): boolean {
    return (this.serving.get(addr) ?? []).some(([from, until]) => t >= from && t < until);
  }

  ready(): string[] {
    return [...this.endpoints.entries()].filter(([, c]) => c === 'ready').map(([a]) => `${a}:8080`);
  }
}

describe.each(MODES)('churn under traffic (%s mode)', (mode) => {
  it(
    `${CHURN_MS / 1000} s of rollouts at ${UPDATES_PER_S} updates/s under ${CLUSTERIP_RATE + NODEPORT_RATE} new connections/s: 0 failed, converged ≤ 1 s`,
    async () => {
      await resetNode(topo);
      const pods = await addVirtualPods(topo, ['a', 'b', 'c'], 50, 100);
      const server = await FakeApiServer.start({ historyLimit: 100_000 });
      const free: { addr: string; at: number }[] = pods.map((p) => ({ addr: p.ip, at: 0 }));
      const take = (): string | undefined => {
        const now = Date.now();
        const i = free.findIndex((f) => f.at <= now);
        return i < 0 ? undefined : free.splice(i, 1)[0]?.addr;
      };
      const release = (addr: string, at: number): void => void free.push({ addr, at: at + GRACE_MS + COOLDOWN_MS });
      const rollouts = SERVICES.map((s) => new Rollout(s));
      server.create('Node', nodeObject(topo));
      server.create('ServiceCIDR', serviceCIDRObject());
      const t0 = Date.now();
      rollouts.forEach((r, i) => {
        const np = r.name === 'np';
        server.create(
          'Service',
          service(r.name, 10 + i, {
            spec: np
              ? {
                  type: 'NodePort',
                  ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: NODE_PORT }],
                }
              : {},
          }),
        );
        for (let k = 0; k < 2; k++) r.add(take() as string, t0);
        server.create('EndpointSlice', sliceOf(r.name, r.endpoints));
      });
      const d = await startInProcess({ server, topo, flags: [`--proxy-mode=${mode}`], logLevel: 'info' });
      try {
        await waitFor('the first sync', () => syncLines(d.lines).length > 0, 15_000, {
          describe: () => showLog(d.lines),
        });
        const expected = (): Record<string, string[]> => {
          const out: Record<string, string[]> = {};
          rollouts.forEach((r, i) => {
            out[`${ip(i)}:80`] = r.ready().sort();
            if (r.name === 'np') out[`nodeport:${NODE_PORT}`] = r.ready().sort();
          });
          return out;
        };
        let initial: Record<string, string[]> = {};
        await waitFor(
          'the initial rules',
          async () => {
            initial = plainView(await kernelView(topo, mode));
            return JSON.stringify(initial) === JSON.stringify(expected());
          },
          5000,
          { describe: () => `want ${JSON.stringify(expected())}\ngot  ${JSON.stringify(initial)}` },
        );

        const clusterLoad = startLoad<TcpRecord>(topo.pod('cli').ns, 'tcp', {
          targets: SERVICES.map((_, i) => ({ host: ip(i), port: 80 })),
          rate: CLUSTERIP_RATE,
          timeoutMs: 2000,
        });
        const nodePortLoad = startLoad<TcpRecord>(topo.client('ext').ns, 'tcp', {
          targets: [{ host: topo.node.v4, port: NODE_PORT }],
          rate: NODEPORT_RATE,
          timeoutMs: 2000,
        });
        await sleep(1000);

        // The churn: one EndpointSlice update every 20 ms, round robin over the Services.
        let updates = 0;
        let stalls = 0;
        let lastUpdateAt = 0;
        const churnStart = Date.now();
        let next = churnStart;
        while (Date.now() - churnStart < CHURN_MS) {
          const r = rollouts[updates % rollouts.length] as Rollout;
          const at = Date.now();
          if (r.step(at, take, release)) {
            server.update('EndpointSlice', sliceOf(r.name, r.endpoints));
            lastUpdateAt = at;
          } else stalls++;
          updates++;
          next += 1000 / UPDATES_PER_S;
          await sleep(Math.max(0, next - Date.now()));
        }
        const churnMs = Date.now() - churnStart;

        // Convergence: the kernel sends every frontend to exactly the final ready endpoints.
        const want = JSON.stringify(expected());
        let last: Record<string, string[]> = {};
        const convergedAfter = await waitFor(
          'the final rules in the kernel',
          async () => {
            last = plainView(await kernelView(topo, mode));
            return JSON.stringify(last) === want;
          },
          10_000,
          { intervalMs: 10, describe: () => `want ${want}\ngot  ${JSON.stringify(last)}` },
        ).then(() => Date.now() - lastUpdateAt);

        await sleep(GRACE_MS);
        const [clusterRecs, nodePortRecs] = await Promise.all([clusterLoad.stop(), nodePortLoad.stop()]);
        const classify = (recs: readonly TcpRecord[], service: (r: TcpRecord) => Rollout) => {
          const c = { attempts: recs.length, timeout: 0, refused: 0, reset: 0, error: 0, stale: 0, slow: 0 };
          const examples: unknown[] = [];
          for (const r of recs) {
            if (r.k === 'ok') {
              const addr = (r.ep ?? '').split(':')[0] ?? '';
              if (!service(r).servedAt(addr, r.t)) {
                c.stale++;
                examples.push(r);
              }
              if (r.ms > 900) c.slow++;
            } else {
              c[r.k]++;
              examples.push(r);
            }
          }
          return { ...c, failed: c.timeout + c.refused + c.reset + c.error + c.stale, examples: examples.slice(0, 5) };
        };
        const cluster = classify(clusterRecs, (r) => rollouts[r.i] as Rollout);
        const nodePort = classify(nodePortRecs, () => rollouts[SERVICES.indexOf('np')] as Rollout);
        const attempts = cluster.attempts + nodePort.attempts;
        const failed = cluster.failed + nodePort.failed;
        const rate = Math.round(attempts / ((churnMs + 1000 + GRACE_MS) / 1000));
        const syncs = syncLines(d.lines).length;
        const errors = d.lines.filter((l) => l.level >= 50);
        const pass = failed === 0 && convergedAfter <= 1000 && errors.length === 0;
        report({
          test: 'churn',
          mode,
          load: `${rate} new TCP conn/s (ClusterIPs from a pod, a NodePort from outside) for ${Math.round((churnMs + 3000) / 1000)} s`,
          faults: `${updates - stalls} EndpointSlice updates in ${Math.round(churnMs / 1000)} s (rollouts: ready → terminating → gone, 2 s grace), minSyncPeriod 100 ms`,
          result: `${attempts} connections, ${failed} failed (timeout ${cluster.timeout + nodePort.timeout}, refused ${cluster.refused + nodePort.refused}, reset ${cluster.reset + nodePort.reset}, stale endpoint ${cluster.stale + nodePort.stale}); ${cluster.slow + nodePort.slow} slower than 900 ms; converged ${convergedAfter} ms after the last update; ${syncs} syncs`,
          pass,
          data: { cluster, nodePort, convergedAfterMs: convergedAfter, updates, stalls, churnMs, syncs },
        });
        expect(stalls, 'the pod pool never ran dry').toBe(0);
        expect(attempts / ((churnMs + 1000 + GRACE_MS) / 1000)).toBeGreaterThanOrEqual(200);
        expect({ cluster, nodePort }).toMatchObject({ cluster: { failed: 0 }, nodePort: { failed: 0 } });
        expect(convergedAfter).toBeLessThanOrEqual(1000);
        expect(errors, showLog(errors)).toEqual([]);
      } finally {
        await d.stop();
        await server.close();
        await removeVirtualPods(topo, pods);
      }
    },
    CHURN_MS + 90_000,
  );
});
