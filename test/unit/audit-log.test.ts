/**
 * The audit log (`kproxy run --audit-log`): one JSON line per transaction with its causes and the
 * desired state's hashes, size rotation keeping one old file, stderr, and failed writes counted
 * without ever throwing into the sync.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type AuditEntry,
  type AuditFiles,
  AuditLogWriter,
  DEFAULT_AUDIT_LOG_MAX_BYTES,
  parseByteSize,
} from '../../src/daemon/audit-log.ts';
import { createProxyMetrics } from '../../src/daemon/metrics.ts';
import type { ClusterSnapshot } from '../../src/model/cluster.ts';
import { familyStateOf } from '../../src/proxy/backend.ts';
import type { SyncAudit } from '../../src/proxy/audit.ts';
import { nodeStates } from '../../src/proxy/desired.ts';
import type { ProxyConfig } from '../../src/config/proxy-config.ts';
import { ep, local, node, NODE, options, service, slice, snapshot } from '../support/cluster-builders.ts';

const config = options({ clusterCIDRs: ['10.244.0.0/16'] }) as unknown as ProxyConfig;
let dirs: string[] = [];
afterEach(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'kproxy-audit-'));
  dirs.push(d);
  return d;
};

function cluster(ready = true, port = 80): ClusterSnapshot {
  return snapshot({
    services: [
      service('web', { ports: [{ name: 'http', protocol: 'TCP', port }] }),
      service('db', { clusterIPs: ['10.96.0.20'] }),
    ],
    slices: [
      slice('web', [ep('10.1.2.3', { node: NODE, ready }), local('10.1.2.4')], { name: 'web-abc' }),
      slice('db', [local('10.1.3.3')], { name: 'db-1' }),
    ],
    node: node(),
  });
}

function sync(snap: ClusterSnapshot, extra: Partial<SyncAudit> = {}): SyncAudit {
  return {
    time: new Date('2026-11-30T12:00:00Z'),
    kind: 'full',
    rederivedAll: true,
    changedServices: new Set(),
    families: nodeStates(snap, config).map(familyStateOf),
    snapshot: snap,
    changes: 7,
    durationMs: 12.34,
    ...extra,
  };
}

const lines = (path: string): AuditEntry[] =>
  readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as AuditEntry);

describe('audit log', () => {
  it('one line per sync: causes with fields, changes, the desired state hash before and after, outcome', async () => {
    const path = join(tempDir(), 'audit.log');
    const metrics = createProxyMetrics();
    const audit = new AuditLogWriter({
      path,
      maxBytes: DEFAULT_AUDIT_LOG_MAX_BYTES,
      mode: 'nftables',
      failures: metrics.auditLogWriteFailuresTotal,
    });
    audit.record(sync(cluster()));
    audit.record(
      sync(cluster(false), {
        kind: 'partial',
        rederivedAll: false,
        changedServices: new Set(['default/web']),
        changes: 2,
      }),
    );
    audit.record(
      sync(cluster(false, 81), {
        kind: 'partial',
        rederivedAll: false,
        changedServices: new Set(['default/web']),
        changes: 0,
        error: 'nft: Error: Could not process rule',
      }),
    );
    await audit.flush();
    const [first, second, third] = lines(path);
    expect(first).toMatchObject({
      time: '2026-11-30T12:00:00.000Z',
      mode: 'nftables',
      kind: 'full',
      outcome: 'ok',
      initial: true,
      causes: [],
      changes: 7,
      desiredBefore: null,
      durationMs: 12.3,
    });
    expect(first?.desiredAfter).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(second).toMatchObject({
      kind: 'partial',
      outcome: 'ok',
      services: ['default/web'],
      causes: [
        {
          kind: 'EndpointSlice',
          name: 'default/web-abc',
          change: 'modified',
          fields: ['endpoint 10.1.2.3 ready true → false'],
        },
      ],
      changes: 2,
      desiredBefore: first?.desiredAfter,
    });
    expect(second?.desiredAfter).not.toBe(first?.desiredAfter);
    expect(third).toMatchObject({
      outcome: 'error',
      error: 'nft: Error: Could not process rule',
      causes: [{ kind: 'Service', name: 'default/web', fields: ['spec.ports[0].port 80 → 81'] }],
      desiredBefore: second?.desiredAfter,
    });
    expect(await metrics.auditLogWriteFailuresTotal.get()).toMatchObject({ values: [{ value: 0 }] });
  });

  it('the hash depends on the state only: a partial update and a full one agree; a failed sync’s causes carry over', async () => {
    const out: string[] = [];
    const audit = new AuditLogWriter({
      path: '-',
      maxBytes: 1,
      mode: 'iptables',
      failures: { inc: () => undefined },
      stderr: { write: (t: string) => out.push(t) },
    });
    audit.record(sync(cluster()));
    audit.record(
      sync(cluster(false), {
        kind: 'partial',
        rederivedAll: false,
        changedServices: new Set(['default/web']),
        error: 'x',
      }),
    );
    audit.record(sync(cluster(false), { kind: 'full', rederivedAll: true, changedServices: new Set() }));
    const fresh = new AuditLogWriter({
      path: '-',
      maxBytes: 1,
      mode: 'iptables',
      failures: { inc: () => undefined },
      stderr: { write: (t: string) => out.push(t) },
    });
    fresh.record(sync(cluster(false)));
    const [a, failed, retried, other] = out.map((l) => JSON.parse(l) as AuditEntry);
    expect(failed?.desiredAfter).toBe(retried?.desiredAfter);
    expect(retried?.desiredAfter).toBe(other?.desiredAfter);
    expect(retried?.desiredBefore).toBe(a?.desiredAfter);
    // The full retry after the failure names what the failed sync could not apply.
    expect(retried?.services).toEqual(['default/web']);
    expect(retried?.causes.map((c) => c.name)).toEqual(['default/web-abc']);
  });

  it('rotates by size, keeping one old file', async () => {
    const path = join(tempDir(), 'audit.log');
    const audit = new AuditLogWriter({ path, maxBytes: 1500, mode: 'nftables', failures: { inc: () => undefined } });
    for (let i = 0; i < 12; i++) audit.record(sync(cluster(i % 2 === 0)));
    await audit.flush();
    expect(statSync(path).size).toBeLessThanOrEqual(1500);
    expect(statSync(`${path}.1`).size).toBeLessThanOrEqual(1500);
    const all = [...lines(`${path}.1`), ...lines(path)];
    expect(all.length).toBeGreaterThan(1);
    expect(all.length).toBeLessThan(12);
    // Whole lines only, the newest last in the current file.
    expect(all.every((l) => l.changes === 7 && l.outcome === 'ok')).toBe(true);
  });

  it('a failed write is counted and logged, never thrown, and later writes go on', async () => {
    const metrics = createProxyMetrics();
    const written: string[] = [];
    let failNext = true;
    const files: AuditFiles = {
      size: async () => 0,
      rename: async () => undefined,
      append: async (_p, text) => {
        if (failNext) {
          failNext = false;
          throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
        }
        written.push(text);
      },
    };
    const warnings: unknown[] = [];
    const audit = new AuditLogWriter({
      path: '/audit.log',
      maxBytes: 1000,
      mode: 'nftables',
      failures: metrics.auditLogWriteFailuresTotal,
      files,
      log: { warn: (...args: unknown[]) => warnings.push(args) } as never,
    });
    expect(() => audit.record(sync(cluster()))).not.toThrow();
    audit.record(sync(cluster(false)));
    await audit.flush();
    expect(written).toHaveLength(1);
    expect(warnings).toHaveLength(1);
    expect(await metrics.auditLogWriteFailuresTotal.get()).toMatchObject({ values: [{ value: 1 }] });
    const text = await metrics.registry.metrics();
    expect(text).toContain('kubeproxy_audit_log_write_failures_total 1');
  });

  it('an unwritable path (a directory) counts failures', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'x'), '');
    const metrics = createProxyMetrics();
    const audit = new AuditLogWriter({
      path: dir,
      maxBytes: 1000,
      mode: 'nftables',
      failures: metrics.auditLogWriteFailuresTotal,
    });
    audit.record(sync(cluster()));
    await audit.flush();
    expect(await metrics.auditLogWriteFailuresTotal.get()).toMatchObject({ values: [{ value: 1 }] });
    // Never renamed away as if it were a full log file.
    expect(statSync(dir).isDirectory()).toBe(true);
  });

  it('--audit-log-max-size: bytes, K/M/G and Ki/Mi/Gi', () => {
    expect(parseByteSize('1048576')).toBe(1048576);
    expect(parseByteSize('10Mi')).toBe(10 * 1024 * 1024);
    expect(parseByteSize('5M')).toBe(5_000_000);
    expect(parseByteSize('1.5Ki')).toBe(1536);
    expect(parseByteSize('0')).toBeUndefined();
    expect(parseByteSize('ten')).toBeUndefined();
  });
});
