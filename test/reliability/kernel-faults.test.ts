/**
 * Issue 10, item 3 — kernel tool faults, injected through the exec seam (startInProcess's
 * wrapExec), in nftables and iptables modes: the mode's tool missing, refusing the transaction,
 * hanging, or slow. While a fault lasts and a change is pending: the old rules stay (traffic keeps
 * reaching the old endpoint, the kernel view does not change), /healthz turns 503 after
 * 2 × syncPeriod, the mode's failure counter counts, each distinct error is logged once (however
 * many retries), and a hung tool is killed after --kernel-tool-timeout. When the fault goes away
 * the pending change reaches the kernel by itself and /healthz is 200 again. A slow tool (below
 * the timeout) only delays the change. syncPeriod 1 s here, so 503 is due after 2 s.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Exec } from '../../src/kernel/exec.ts';
import type { Topology } from '../../src/sandbox/topology.ts';
import { FakeApiServer } from '../support/fake-apiserver.ts';
import {
  endpointSlice,
  httpGet,
  metricValue,
  nodeObject,
  resetNode,
  service,
  serviceCIDRObject,
  showLog,
  sleep,
  startInProcess,
  syncLines,
  waitFor,
  type LogLine,
  flushIptables,
  daemonTopology,
} from '../support/daemon-harness.ts';
import { MODES, report } from './support/env.ts';
import { kernelView, plainView } from './support/kernel-view.ts';
import { startLoad, type TcpRecord } from './support/load.ts';

const SYNC_PERIOD_MS = 1000;
const TOOL_TIMEOUT_MS = 1000;
const CIP = '10.96.0.10';

type Fault = 'missing' | 'refusing' | 'hanging' | 'slow';

let topo: Topology;

beforeAll(async () => {
  topo = await daemonTopology(['a', 'b']);
}, 60_000);

afterAll(async () => {
  await topo?.destroy();
});

describe.each(MODES)('kernel tool faults (%s mode)', (mode) => {
  it('missing, refusing, hanging and slow tools: old rules stay, 503 after 2 × syncPeriod, counted, logged once, recovered', async () => {
    await resetNode(topo);
    await flushIptables(topo);
    let fault: Fault | undefined;
    let attempts = 0;
    // wrapExec sees the tool itself (the namespace is entered inside `inner`).
    const isTool = (file: string): boolean => (mode === 'nftables' ? file === 'nft' : /^ip6?tables-/.test(file));
    const isApply = (file: string, args: readonly string[]): boolean =>
      mode === 'nftables' ? args.includes('-f') : /-restore$/.test(file);
    const wrapExec =
      (inner: Exec): Exec =>
      async (file, args, stdin, options) => {
        if (!fault || !isTool(file)) return inner(file, args, stdin, options);
        switch (fault) {
          case 'missing':
            attempts++;
            return { exitCode: 127, stdout: '', stderr: `spawn ${file} ENOENT` };
          case 'refusing': {
            if (!isApply(file, args) || stdin === undefined) return inner(file, args, stdin, options);
            attempts++;
            // The real tool refuses the real transaction with one bad line added (at the start of
            // the first table for iptables-restore, which commits table by table).
            const bad =
              mode === 'nftables'
                ? `${stdin}\nadd rule ip kproxy no-such-chain counter\n`
                : stdin.replace(/^(\*\w+\n)/m, '$1-A NO-SUCH-CHAIN -j ACCEPT\n');
            return inner(file, args, bad, options);
          }
          case 'hanging':
            attempts++;
            return inner('sleep', ['3600'], undefined, options);
          case 'slow':
            attempts++;
            await sleep(400);
            return inner(file, args, stdin, options);
        }
      };
    const server = await FakeApiServer.start();
    server.create('Node', nodeObject(topo));
    server.create('ServiceCIDR', serviceCIDRObject());
    server.create('Service', service('web', 10));
    server.create('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['a']));
    const d = await startInProcess({
      server,
      topo,
      wrapExec,
      logLevel: 'info',
      flags: [
        `--proxy-mode=${mode}`,
        `--iptables-sync-period=${SYNC_PERIOD_MS}ms`,
        `--kernel-tool-timeout=${TOOL_TIMEOUT_MS}ms`,
      ],
    });
    const healthz = async (): Promise<number> => (await httpGet(`${d.healthzUrl}/healthz`)).status;
    const failuresMetric =
      mode === 'nftables'
        ? 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total'
        : 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total';
    const counter = async (): Promise<number> =>
      metricValue(await d.metrics(), failuresMetric, { ip_family: 'IPv4' }) ?? 0;
    const view = async (): Promise<string> => JSON.stringify(plainView(await kernelView(topo, mode))[`${CIP}:80`]);
    const rows: Record<string, unknown>[] = [];
    let load: ReturnType<typeof startLoad<TcpRecord>> | undefined;
    try {
      await waitFor('the first sync', () => syncLines(d.lines).length > 0, 15_000, {
        describe: () => showLog(d.lines),
      });
      await waitFor('web → a', async () => (await view()) === JSON.stringify([`${topo.pod('a').v4}:8080`]), 3000);
      await waitFor('/healthz 200', async () => (await healthz()) === 200, 3000);
      load = startLoad<TcpRecord>(topo.pod('cli').ns, 'tcp', {
        targets: [{ host: CIP, port: 80 }],
        rate: 50,
        timeoutMs: 2000,
      });
      let current = 'a';
      for (const f of ['missing', 'refusing', 'hanging'] as const) {
        const before = await view();
        const counted = await counter();
        const fromLine = d.lines.length;
        attempts = 0;
        fault = f;
        const next = current === 'a' ? 'b' : 'a';
        const changedAt = Date.now();
        server.update('EndpointSlice', endpointSlice(topo, 'web-1', 'web', [next]));
        let stable = true;
        await waitFor(
          '/healthz 503',
          async () => {
            if ((await view()) !== before) stable = false;
            return (await healthz()) === 503;
          },
          2 * SYNC_PERIOD_MS + 4000,
          {
            intervalMs: 50,
            describe: async () =>
              `${(await httpGet(`${d.healthzUrl}/healthz`)).body}\n${showLog(d.lines.slice(fromLine), 30)}`,
          },
        );
        const unhealthyAfter = Date.now() - changedAt;
        // Let the fault last a little longer: retries must not add log lines.
        await sleep(800);
        if ((await view()) !== before) stable = false;
        const errorLines = d.lines.slice(fromLine).filter((l: LogLine) => l.level >= 50);
        const warnings = d.lines.slice(fromLine).filter((l: LogLine) => l.level === 40);
        const messages = errorLines.map((l) => String(l['err'] ?? l.msg));
        const countedNow = (await counter()) - counted;
        const tries = attempts;
        fault = undefined;
        const recoveredAt = Date.now();
        await waitFor(
          'the pending change in the kernel',
          async () => (await view()) === JSON.stringify([`${topo.pod(next).v4}:8080`]),
          5000,
          {
            intervalMs: 20,
          },
        );
        const changeIn = Date.now() - recoveredAt;
        await waitFor('/healthz 200 again', async () => (await healthz()) === 200, 5000, { intervalMs: 20 });
        const healthyIn = Date.now() - recoveredAt;
        current = next;
        const row = {
          fault: f,
          attempts: tries,
          unhealthyAfterMs: unhealthyAfter,
          failuresCounted: countedNow,
          errorLines: errorLines.length,
          warnLines: warnings.length,
          warnExample: warnings[0]?.msg,
          distinctErrors: new Set(messages).size,
          oldRulesKept: stable,
          changeInKernelMs: changeIn,
          healthyAgainMs: healthyIn,
          example: messages[0],
        };
        rows.push(row);
        expect(stable, `${f}: the old rules stayed`).toBe(true);
        expect(unhealthyAfter, `${f}: 503 after 2 × syncPeriod`).toBeGreaterThanOrEqual(2 * SYNC_PERIOD_MS - 100);
        expect(unhealthyAfter).toBeLessThan(2 * SYNC_PERIOD_MS + 2500);
        expect(countedNow, `${f}: counted`).toBeGreaterThan(0);
        expect(tries, `${f}: retried`).toBeGreaterThanOrEqual(3);
        expect(messages.length, `${f}: each distinct error logged once: ${messages.join(' | ')}`).toBe(
          new Set(messages).size,
        );
        expect(messages.length, `${f}: an error was logged`).toBeGreaterThan(0);
        expect(messages.length).toBeLessThanOrEqual(3);
        if (f === 'hanging')
          expect(messages.some((m) => m.includes(`did not finish within ${TOOL_TIMEOUT_MS} ms`))).toBe(true);
        if (f === 'missing') expect(messages.some((m) => m.includes('is not available'))).toBe(true);
        expect(changeIn, `${f}: recovered by itself`).toBeLessThan(SYNC_PERIOD_MS + 2000);
      }
      // Slow (400 ms per run, under the timeout): the change only lands later; nothing fails.
      {
        const counted = await counter();
        const fromLine = d.lines.length;
        fault = 'slow';
        attempts = 0;
        const next = current === 'a' ? 'b' : 'a';
        const changedAt = Date.now();
        server.update('EndpointSlice', endpointSlice(topo, 'web-1', 'web', [next]));
        await waitFor(
          'the change, slowly',
          async () => (await view()) === JSON.stringify([`${topo.pod(next).v4}:8080`]),
          8000,
          {
            intervalMs: 20,
          },
        );
        const changeIn = Date.now() - changedAt;
        const countedNow = (await counter()) - counted;
        const code = await healthz();
        fault = undefined;
        rows.push({ fault: 'slow', attempts, changeInKernelMs: changeIn, failuresCounted: countedNow, healthz: code });
        expect(countedNow, showLog(d.lines.slice(fromLine).filter((l) => l.level >= 40))).toBe(0);
        expect(code).toBe(200);
        expect(changeIn).toBeGreaterThanOrEqual(400);
      }
      const recs = await load.stop();
      const failed = recs.filter((r) => r.k !== 'ok');
      const faultsOk = rows.every(
        (r) => r['fault'] === 'slow' || (r['oldRulesKept'] === true && r['distinctErrors'] === r['errorLines']),
      );
      report({
        test: 'kernel-faults',
        mode,
        load: `50 new TCP conn/s to a ClusterIP during the faults; one pending change per fault`,
        faults: `the mode's tool missing, refusing the transaction, hanging (killed after ${TOOL_TIMEOUT_MS} ms), slow (400 ms per run); syncPeriod ${SYNC_PERIOD_MS} ms`,
        result: `${rows
          .map((r) =>
            r['fault'] === 'slow'
              ? `slow: change in ${r['changeInKernelMs']} ms, 0 failures`
              : `${r['fault']}: 503 after ${r['unhealthyAfterMs']} ms, ${r['attempts']} tries → ${r['errorLines']} error line(s), old rules kept, recovered in ${r['changeInKernelMs']} ms`,
          )
          .join('; ')}; ${recs.length} connections, ${failed.length} failed`,
        pass: failed.length === 0 && faultsOk,
        data: { rows, connections: recs.length, failed: failed.length },
      });
      expect(failed, JSON.stringify(failed.slice(0, 5))).toEqual([]);
      expect(recs.every((r) => r.k !== 'ok' || r.pod === 'a' || r.pod === 'b')).toBe(true);
    } finally {
      fault = undefined;
      await load?.stop();
      await d.stop();
      await server.close();
    }
  }, 90_000);
});
