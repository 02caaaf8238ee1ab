/**
 * `/rules` on the metrics address and the audit log, first against a fixed applied state, then
 * through the running daemon (a real nftables backend in a throw-away network namespace, a source
 * the test drives): what the proxier last applied is what /rules serves, and every sync writes one
 * audit line naming its causes.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { iptablesMode } from '../../src/backends/iptables/index.ts';
import { nftablesMode } from '../../src/backends/nftables/index.ts';
import { loadProxyConfig } from '../../src/config/load.ts';
import type { AuditEntry } from '../../src/daemon/audit-log.ts';
import { startDaemon } from '../../src/daemon/daemon.ts';
import { logEventRecorder } from '../../src/daemon/events.ts';
import type { RunningServer } from '../../src/daemon/http-listen.ts';
import { createProxyMetrics } from '../../src/daemon/metrics.ts';
import { startMetricsServer } from '../../src/daemon/metrics-server.ts';
import type { RulesSource } from '../../src/daemon/rules-endpoint.ts';
import { type Exec, inNetns } from '../../src/kernel/exec.ts';
import type { ClusterSnapshot } from '../../src/model/cluster.ts';
import { type FamilyState, familyStateOf, type ProxyModeDefinition } from '../../src/proxy/backend.ts';
import type { ClusterSource, SourceChange } from '../../src/source/api-source.ts';
import { createLogger } from '../../src/util/log.ts';
import { ep, local, node, NODE, service, slice, snapshot } from '../support/cluster-builders.ts';
import { withNetns } from '../support/netns.ts';
import { sampleStateV4, sampleStateV6 } from '../support/states.ts';

const quiet = createLogger(0, { write: () => true } as never);
let servers: RunningServer[] = [];
let dirs: string[] = [];
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

function loaded(mode: string) {
  return loadProxyConfig({
    argv: [`--proxy-mode=${mode}`, `--hostname-override=${NODE}`, '--cluster-cidr=10.244.0.0/16'],
    hostname: NODE,
    readFile: () => '',
  }).config;
}

async function rulesServer(mode: ProxyModeDefinition, applied: () => readonly FamilyState[]): Promise<string> {
  const rules: RulesSource = { mode, config: loaded(mode.mode), lastApplied: applied };
  const server = await startMetricsServer({
    bindAddress: '127.0.0.1:0',
    registry: createProxyMetrics().registry,
    proxyMode: mode.mode,
    rules,
  });
  if (!server) throw new Error('disabled');
  servers.push(server);
  return server.url;
}

describe('/rules', () => {
  const applied = [familyStateOf(sampleStateV4()), familyStateOf(sampleStateV6())];

  it('JSON: every family’s node state with its service ports and decided endpoints; ?service= and ?family=', async () => {
    const url = await rulesServer(nftablesMode, () => applied);
    const res = await fetch(`${url}/rules`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await res.json()) as {
      mode: string;
      families: { family: string; servicePorts: { key: string }[] }[];
    };
    expect(body.mode).toBe('nftables');
    expect(body.families.map((f) => f.family)).toEqual(['ipv4', 'ipv6']);
    expect(body.families[0]?.servicePorts.map((sp) => sp.key)).toEqual(
      sampleStateV4().servicePorts.map((sp) => sp.key),
    );
    const one = (await (await fetch(`${url}/rules?service=default/lb`)).json()) as typeof body;
    expect(one.families.map((f) => f.servicePorts.map((sp) => sp.key))).toEqual([['default/lb:p'], []]);
    expect(one.families[0]?.servicePorts[0]).toMatchObject({
      internal: { kind: 'local', endpoints: [{ ip: '10.244.0.2', port: 8080, isLocal: true }] },
    });
    const v6 = (await (await fetch(`${url}/rules?family=ipv6`)).json()) as typeof body;
    expect(v6.families.map((f) => f.family)).toEqual(['ipv6']);
  });

  it("text: the mode's dump of the applied state, per mode; one Service's alone", async () => {
    const nft = await (await fetch(`${await rulesServer(nftablesMode, () => applied)}/rules?format=text`)).text();
    expect(nft).toContain('add table ip kproxy');
    expect(nft).toContain('10.96.0.7');
    const ipt = await rulesServer(iptablesMode, () => applied);
    const one = await (await fetch(`${ipt}/rules?format=text&service=default/lb`)).text();
    expect(one).toContain('# IPv4 (iptables-restore)');
    expect(one).toContain('default/lb:p');
    expect(one).not.toContain('default/affinity:p');
  });

  it('errors: before the first sync 503, an unknown Service 404, bad parameters 400; no source: 404', async () => {
    let state: readonly FamilyState[] = [];
    const url = await rulesServer(nftablesMode, () => state);
    expect((await fetch(`${url}/rules`)).status).toBe(503);
    state = applied;
    expect((await fetch(`${url}/rules?service=default/nothing`)).status).toBe(404);
    expect((await fetch(`${url}/rules?format=yaml`)).status).toBe(400);
    expect((await fetch(`${url}/rules?family=ipv5`)).status).toBe(400);
    expect((await fetch(`${url}/rules?service=no-slash`)).status).toBe(400);
    const bare = await startMetricsServer({
      bindAddress: '127.0.0.1:0',
      registry: createProxyMetrics().registry,
      proxyMode: 'nftables',
    });
    if (!bare) throw new Error('disabled');
    servers.push(bare);
    expect((await fetch(`${bare.url}/rules`)).status).toBe(404);
  });
});

/** A source the test drives: set a snapshot, name the Services that changed. */
class DrivenSource implements ClusterSource {
  #snapshot: ClusterSnapshot;
  readonly #listeners: ((c: SourceChange) => void)[] = [];
  constructor(initial: ClusterSnapshot) {
    this.#snapshot = initial;
  }
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  isSynced(): boolean {
    return true;
  }
  syncedDetail(): Record<string, boolean> {
    return {};
  }
  snapshot(): ClusterSnapshot {
    return this.#snapshot;
  }
  onChange(listener: (c: SourceChange) => void): void {
    this.#listeners.push(listener);
  }
  set(next: ClusterSnapshot, services: string[]): void {
    this.#snapshot = next;
    const change = {
      services: new Set(services),
      nodeChanged: false,
      nodeLabelsChanged: false,
      serviceCIDRsChanged: false,
    };
    for (const l of this.#listeners) l(change);
  }
}

const cluster = (ready: boolean) =>
  snapshot({
    services: [service('web')],
    slices: [slice('web', [local('10.244.0.2'), ep('10.244.0.3', { node: NODE, ready })], { name: 'web-1' })],
    node: node(),
  });

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('the daemon: /rules and --audit-log', () => {
  it('serves what it last applied and writes one audit line per sync with its causes', async () => {
    await withNetns(async (ns) => {
      const dir = mkdtempSync(join(tmpdir(), 'kproxy-audit-'));
      dirs.push(dir);
      const auditPath = join(dir, 'audit.log');
      const config = {
        ...loaded('nftables'),
        healthzBindAddress: '127.0.0.1:0',
        metricsBindAddress: '127.0.0.1:0',
        minSyncPeriodMs: 0,
      };
      const source = new DrivenSource(cluster(true));
      const daemon = await startDaemon({
        config,
        source,
        events: logEventRecorder(quiet),
        log: quiet,
        exec: inNetns(ns),
        auditLog: { path: auditPath, maxBytes: 1024 * 1024 },
      });
      try {
        const url = daemon.metricsServer?.url;
        const endpoints = async () => {
          const r = await fetch(`${url}/rules?service=default/web&family=ipv4`);
          if (r.status !== 200) return [];
          const body = (await r.json()) as {
            families: { servicePorts: { internal: { endpoints?: { ip: string }[] } }[] }[];
          };
          return (body.families[0]?.servicePorts[0]?.internal.endpoints ?? []).map((e) => e.ip);
        };
        await until('the first sync', async () => (await endpoints()).length === 2);
        source.set(cluster(false), ['default/web']);
        await until('the endpoint change', async () => (await endpoints()).join() === '10.244.0.2');
        const audit = () =>
          readFileSync(auditPath, 'utf8')
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l) as AuditEntry);
        await until('two audit lines', () => {
          try {
            return audit().length >= 2;
          } catch {
            return false;
          }
        });
        const [first, second] = audit();
        expect(first).toMatchObject({ mode: 'nftables', kind: 'full', outcome: 'ok', initial: true });
        expect(first?.changes).toBeGreaterThan(0);
        expect(second).toMatchObject({
          kind: 'partial',
          outcome: 'ok',
          services: ['default/web'],
          causes: [
            { kind: 'EndpointSlice', name: 'default/web-1', fields: ['endpoint 10.244.0.3 ready true → false'] },
          ],
          desiredBefore: first?.desiredAfter,
        });
        const text = await (await fetch(`${url}/rules?format=text&service=default/web`)).text();
        expect(text).toContain('10.244.0.2');
        expect(text).not.toContain('10.244.0.3');
        expect(await (await fetch(`${url}/metrics`)).text()).toContain('kubeproxy_audit_log_write_failures_total 0');
      } finally {
        await daemon.stop();
      }
    });
  });

  it('a sync the kernel refuses leaves /rules at what was applied; the retry moves it on', async () => {
    await withNetns(async (ns) => {
      const config = {
        ...loaded('nftables'),
        healthzBindAddress: '127.0.0.1:0',
        metricsBindAddress: '127.0.0.1:0',
        minSyncPeriodMs: 0,
      };
      let refuse = false;
      let refused = 0;
      const base = inNetns(ns);
      const exec: Exec = async (file, args, stdin, options) => {
        if (refuse && file === 'nft' && args.includes('-f')) {
          refused++;
          return { exitCode: 1, stdout: '', stderr: 'Error: refused by the test' };
        }
        return base(file, args, stdin, options);
      };
      const source = new DrivenSource(cluster(true));
      const daemon = await startDaemon({ config, source, events: logEventRecorder(quiet), log: quiet, exec });
      try {
        const url = daemon.metricsServer?.url;
        const applied = async () => {
          const r = await fetch(`${url}/rules?family=ipv4`);
          if (r.status !== 200) return [];
          const body = (await r.json()) as {
            families: { servicePorts: { key: string; internal: { endpoints?: { ip: string }[] } }[] }[];
          };
          return (body.families[0]?.servicePorts ?? []).map(
            (sp) => `${sp.key}=${(sp.internal.endpoints ?? []).map((e) => e.ip).join('+')}`,
          );
        };
        await until(
          'the first sync',
          async () => (await applied()).join() === 'default/web:http=10.244.0.2+10.244.0.3',
        );
        refuse = true;
        // One endpoint goes, and a Service comes, in syncs the kernel refuses.
        const next = snapshot({
          services: [service('web'), service('api', { clusterIPs: ['10.96.0.11'] })],
          slices: [
            slice('web', [local('10.244.0.2'), ep('10.244.0.3', { node: NODE, ready: false })], { name: 'web-1' }),
            slice('api', [local('10.244.0.4')], { name: 'api-1' }),
          ],
          node: node(),
        });
        source.set(next, ['default/web', 'default/api']);
        await until('a refused sync', () => refused >= 2);
        expect(await applied()).toEqual(['default/web:http=10.244.0.2+10.244.0.3']);
        refuse = false;
        await until('the retry', async () => (await applied()).length === 2);
        expect(await applied()).toEqual(['default/api:http=10.244.0.4', 'default/web:http=10.244.0.2']);
      } finally {
        await daemon.stop();
      }
    });
  });
});
