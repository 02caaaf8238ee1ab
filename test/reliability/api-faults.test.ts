/**
 * Issue 10, item 4 — API server faults, nftables and iptables modes side by side (one daemon and
 * one fake API server per mode, the same faults injected into both at once). The daemons use
 * kproxy's real restart backoff (800 ms doubling to 30 s, jittered). In turn: the server down at
 * start (connections refused), a dropped watch, a watch ended after a compaction (410 Expired, a
 * relist), lists answered 429 / 500 / 503 with Retry-After, 401 and 403, a slow server (1.5 s per
 * answer), and an outage where every request is answered 503 (20 s; 5 minutes in the full version)
 * during which the requests are counted. A change is made during each fault; it must reach the
 * kernel once the fault ends. Throughout, a sampler checks that no rule is lost (the unchanged
 * Service always has its endpoint, the changing one never has none) and traffic to the unchanged
 * Service never fails.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProxyMode } from '../../src/config/proxy-config.ts';
import type { Topology } from '../../src/sandbox/topology.ts';
import { FakeApiServer } from '../support/fake-apiserver.ts';
import {
  endpointSlice,
  nodeObject,
  resetNode,
  service,
  serviceCIDRObject,
  sleep,
  startInProcess,
  waitFor,
  type InProcessDaemon,
  daemonTopology,
} from '../support/daemon-harness.ts';
import { FULL, MODES, pick, report } from './support/env.ts';
import { kernelView, plainView } from './support/kernel-view.ts';
import { startLoad, type LoadProcess, type TcpRecord } from './support/load.ts';

const OUTAGE_MS = pick(20_000, 300_000);
const BACKOFF = { initialMs: 800, maxMs: 30_000 };
const STABLE = '10.96.0.10:80';
const MOVING = '10.96.0.11:80';
const LISTS = {
  services: '/api/v1/services',
  endpointSlices: '/apis/discovery.k8s.io/v1/endpointslices',
  nodes: '/api/v1/nodes',
};

interface Side {
  readonly mode: ProxyMode;
  readonly topo: Topology;
  readonly server: FakeApiServer;
  daemon?: InProcessDaemon;
  load?: LoadProcess<TcpRecord>;
  readonly bad: string[];
  samples: number;
}

const sides: Side[] = [];

beforeAll(async () => {
  for (const mode of MODES) {
    const topo = await daemonTopology(['a', 'b']);
    await resetNode(topo);
    const server = await FakeApiServer.start();
    sides.push({ mode, topo, server, bad: [], samples: 0 });
  }
}, 60_000);

afterAll(async () => {
  for (const s of sides) {
    await s.load?.stop();
    await s.daemon?.stop();
    await s.server.close();
    await s.topo.destroy();
  }
});

describe(`API server faults (${MODES.join(' and ')} modes at once)`, () => {
  it(
    `down at start, dropped and expired watches, 429/500/503 with Retry-After, 401/403, a slow server, a ${OUTAGE_MS / 1000} s outage: no rule lost, resync, bounded backoff`,
    async () => {
      const all = async (f: (s: Side) => unknown): Promise<void> => void (await Promise.all(sides.map(f)));
      const view = async (s: Side): Promise<Record<string, string[]>> => plainView(await kernelView(s.topo, s.mode));
      const want = (s: Side, pod: string): string => JSON.stringify([`${s.topo.pod(pod).v4}:8080`]);
      let moving = 'a';
      const change = async (): Promise<void> => {
        moving = moving === 'a' ? 'b' : 'a';
        await all((s) => s.server.apply('EndpointSlice', endpointSlice(s.topo, 'moving-1', 'moving', [moving])));
      };
      const converged = async (what: string, timeoutMs: number): Promise<number> => {
        const t = Date.now();
        await all((s) =>
          waitFor(
            `${s.mode}: ${what}`,
            async () => JSON.stringify((await view(s))[MOVING]) === want(s, moving),
            timeoutMs,
            {
              intervalMs: 50,
            },
          ),
        );
        return Date.now() - t;
      };
      const phases: Record<string, unknown> = {};

      // Down at start: the daemons start while nothing listens.
      await all(async (s) => {
        s.server.create('Node', nodeObject(s.topo));
        s.server.create('ServiceCIDR', serviceCIDRObject());
        s.server.create('Service', service('stable', 10));
        s.server.create('EndpointSlice', endpointSlice(s.topo, 'stable-1', 'stable', ['a']));
        s.server.create('Service', service('moving', 11));
        s.server.create('EndpointSlice', endpointSlice(s.topo, 'moving-1', 'moving', ['a']));
        await s.server.down();
      });
      await all(async (s) => {
        s.daemon = await startInProcess({
          server: s.server,
          topo: s.topo,
          backoff: BACKOFF,
          logLevel: 'info',
          flags: [`--proxy-mode=${s.mode}`],
        });
      });
      await sleep(1500);
      for (const s of sides) expect(await view(s), `${s.mode}: nothing programmed without the API server`).toEqual({});
      await all((s) => s.server.up());
      phases['downAtStart'] = { firstRulesAfterUpMs: await converged('rules once the server is up', 40_000) };

      // From now on: traffic to the unchanged Service, and the sampler.
      let sampling = true;
      const sampler = Promise.all(
        sides.map(async (s) => {
          while (sampling) {
            const v = await view(s);
            s.samples++;
            if (JSON.stringify(v[STABLE]) !== want(s, 'a')) s.bad.push(`stable: ${JSON.stringify(v[STABLE])}`);
            if (v[MOVING]?.length !== 1) s.bad.push(`moving: ${JSON.stringify(v[MOVING])}`);
            await sleep(200);
          }
        }),
      );
      for (const s of sides)
        s.load = startLoad<TcpRecord>(s.topo.pod('cli').ns, 'tcp', {
          targets: [{ host: STABLE.split(':')[0], port: 80 }],
          rate: 20,
          timeoutMs: 2000,
        });

      try {
        // A dropped watch (TCP reset), a change made meanwhile.
        await all((s) => waitFor('watches', () => s.server.openWatches() >= 4, 10_000));
        await all((s) => s.server.dropWatches());
        await change();
        phases['watchDropped'] = { convergedMs: await converged('after a dropped watch', 40_000) };

        // History compacted, watches ended: 410 Expired on resuming, a relist.
        await all((s) => waitFor('watches', () => s.server.openWatches() >= 4, 40_000));
        await all((s) => {
          s.server.compactHistory();
          s.server.endWatches();
        });
        await change();
        phases['expired410'] = { convergedMs: await converged('after 410 Expired', 40_000) };

        // Relists answered 429 / 503 with Retry-After and 500.
        await all((s) => waitFor('watches', () => s.server.openWatches() >= 4, 40_000));
        const retryFrom = Date.now();
        await all((s) => {
          s.server.failNext(LISTS.services, 429, 2, 'any', { retryAfterSeconds: 3 });
          s.server.failNext(LISTS.endpointSlices, 503, 2, 'any', { retryAfterSeconds: 2 });
          s.server.failNext(LISTS.nodes, 500, 2, 'any');
          s.server.compactHistory();
          s.server.dropWatches();
        });
        await change();
        const retryConverged = await converged('after 429/500/503', 40_000);
        // Retry-After honoured: after a 429 (3 s) no list of Services came sooner.
        const gaps = sides.map((s) => {
          const lists = s.server.requests.filter((r) => r.at >= retryFrom && r.path === LISTS.services && !r.watch);
          return lists.slice(1, 3).map((r, i) => r.at - (lists[i]?.at ?? 0));
        });
        phases['retryAfter'] = { convergedMs: retryConverged, servicesListGapsMs: gaps };
        for (const g of gaps) for (const gap of g) expect(gap, 'Retry-After: 3 honoured').toBeGreaterThanOrEqual(2900);

        // 401 and 403.
        await all((s) => waitFor('watches', () => s.server.openWatches() >= 4, 40_000));
        const linesBefore = sides.map((s) => s.daemon?.lines.length ?? 0);
        await all((s) => {
          s.server.failNext(LISTS.endpointSlices, 403, 3, 'any');
          s.server.failNext(LISTS.services, 401, 3, 'any');
          s.server.compactHistory();
          s.server.dropWatches();
        });
        await change();
        const deniedConverged = await converged('after 401/403', 60_000);
        const denied = sides.map((s, i) =>
          (s.daemon?.lines.slice(linesBefore[i]) ?? []).filter((l) => l.level >= 50).map((l) => l.msg),
        );
        phases['unauthorizedForbidden'] = { convergedMs: deniedConverged, errorLines: denied };
        for (const lines of denied) {
          expect(lines.filter((m) => m.startsWith('forbidden (HTTP 403)'))).toHaveLength(1);
          expect(lines.filter((m) => m.startsWith('unauthorized (HTTP 401)'))).toHaveLength(1);
          expect(lines.find((m) => m.startsWith('forbidden'))).toContain(
            'verbs [list, watch] on resource "endpointslices" in API group "discovery.k8s.io"',
          );
          expect(lines).toHaveLength(2);
        }

        // A slow server: 1.5 s per answer.
        await all((s) => waitFor('watches', () => s.server.openWatches() >= 4, 40_000));
        await all((s) => {
          s.server.setLatency(1500);
          s.server.dropWatches();
        });
        await change();
        phases['slow'] = { convergedMs: await converged('with a slow server', 60_000) };
        await all((s) => s.server.setLatency(0));

        // The outage.
        await all((s) => waitFor('watches', () => s.server.openWatches() >= 4, 40_000));
        const outageFrom = Date.now();
        const warnBefore = sides.map((s) => s.daemon?.lines.length ?? 0);
        await all((s) => s.server.startOutage(503));
        await sleep(OUTAGE_MS / 2);
        await change(); // made while the API server is unreachable: applied when it answers again
        await sleep(OUTAGE_MS / 2);
        const outageTo = Date.now();
        const perMinute = sides.map((s) => {
          const reqs = s.server.requests.filter((r) => r.at >= outageFrom && r.at < outageTo);
          const lastMinute = reqs.filter((r) => r.at >= outageTo - 60_000);
          return {
            requests: reqs.length,
            perMinute: Math.round((reqs.length / (outageTo - outageFrom)) * 60_000),
            lastMinute: outageTo - outageFrom >= 120_000 ? lastMinute.length : undefined,
            logLines: (s.daemon?.lines.length ?? 0) - (warnBefore[sides.indexOf(s)] ?? 0),
          };
        });
        await all((s) => s.server.endOutage());
        const outageConverged = await converged('after the outage', 60_000);
        phases['outage'] = { ms: outageTo - outageFrom, convergedMs: outageConverged, perMode: perMinute };
      } finally {
        sampling = false;
        await sampler;
      }
      for (const s of sides) {
        const recs = (await s.load?.stop()) ?? [];
        const failed = recs.filter((r) => r.k !== 'ok');
        const o = phases['outage'] as {
          perMode: { requests: number; perMinute: number; lastMinute?: number }[];
          convergedMs: number;
        };
        const mine = o.perMode[sides.indexOf(s)];
        const pass = failed.length === 0 && s.bad.length === 0;
        report({
          test: 'api-faults',
          mode: s.mode,
          load: `20 new TCP conn/s to an unchanged Service; one change per fault`,
          faults: `server down at start, watch dropped, 410 Expired, 429/500/503 + Retry-After, 401/403, 1.5 s latency, ${OUTAGE_MS / 1000} s outage (all 503)`,
          result: `${s.samples} kernel samples, ${s.bad.length} with a rule lost; ${recs.length} connections, ${failed.length} failed; every change applied after its fault (outage: ${o.convergedMs} ms after it ended); ${mine?.requests} requests in the outage = ${mine?.perMinute}/min${mine?.lastMinute !== undefined ? ` (${mine.lastMinute} in its last minute)` : ''}; 401/403: one error line each naming the grant`,
          pass,
          data: {
            phases,
            samples: s.samples,
            bad: s.bad.slice(0, 5),
            connections: recs.length,
            failed: failed.length,
            full: FULL,
          },
        });
        expect(s.bad.slice(0, 5), `${s.mode}: no rule lost`).toEqual([]);
        expect(failed.slice(0, 5), `${s.mode}: connections`).toEqual([]);
        // Bounded backoff: 4 caches + discovery, each at most once per backoff step.
        expect(mine?.perMinute ?? 0).toBeLessThanOrEqual(FULL ? 30 : 120);
      }
    },
    180_000 + OUTAGE_MS,
  );
});
