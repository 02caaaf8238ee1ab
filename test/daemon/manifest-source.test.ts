import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { manifestSource } from '../../src/source/manifest-source.ts';
import type { ClusterSource, SourceChange } from '../../src/source/api-source.ts';

const NODE = 'node-a';
type LogLine = { level: number; msg: string } & Record<string, unknown>;

function serviceYaml(name: string, ip: string, port = 80): string {
  return `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: shop}
spec: {clusterIP: ${ip}, ports: [{name: http, port: ${port}}]}
`;
}

function sliceYaml(name: string, service: string, address: string): string {
  return `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${name}, namespace: shop, labels: {kubernetes.io/service-name: ${service}}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [${address}]}]
`;
}

async function waitFor(what: string, predicate: () => boolean, timeoutMs = 3000): Promise<number> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return Date.now() - start;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function rig(files: Record<string, string>, pollMs = 2000) {
  const dir = await mkdtemp(join(tmpdir(), 'kproxy-manifests-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  const logs: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) });
  const source: ClusterSource = manifestSource({ dir, nodeName: NODE, log, pollMs });
  cleanups.push(() => source.stop());
  const changes: SourceChange[] = [];
  source.onChange((c) => changes.push(c));
  const names = (): string[] => source.snapshot().services.map((s) => `${s.name}:${s.ports[0]?.port}`);
  return { dir, source, changes, logs, names };
}

describe('manifestSource', () => {
  it('loads on start and follows a changed file within a second', async () => {
    const r = await rig({
      'web.yaml': serviceYaml('web', '10.96.0.10'),
      'web-slice.yaml': sliceYaml('web-1', 'web', '10.0.1.5'),
    });
    expect(r.source.isSynced()).toBe(false);
    await r.source.start();
    expect(r.source.isSynced()).toBe(true);
    expect(r.source.syncedDetail()).toEqual({ manifests: true });
    expect(r.names()).toEqual(['web:80']);
    expect(r.source.snapshot().endpointSlices).toHaveLength(1);
    expect(r.changes).toHaveLength(1);

    // In place.
    r.changes.length = 0;
    await writeFile(join(r.dir, 'web.yaml'), serviceYaml('web', '10.96.0.10', 8080));
    expect(await waitFor('in-place edit', () => r.names().join() === 'web:8080')).toBeLessThan(1000);
    expect(r.changes.flatMap((c) => [...c.services])).toEqual(['shop/web']);

    // Editor style: write a temporary file, rename it over the old one.
    r.changes.length = 0;
    await writeFile(join(r.dir, '.api.yaml.tmp'), serviceYaml('api', '10.96.0.11'));
    await rename(join(r.dir, '.api.yaml.tmp'), join(r.dir, 'api.yaml'));
    expect(await waitFor('renamed file', () => r.names().join() === 'api:80,web:8080')).toBeLessThan(1000);
    expect(new Set(r.changes.flatMap((c) => [...c.services]))).toEqual(new Set(['shop/api']));

    // An endpoint change marks its Service only.
    r.changes.length = 0;
    await writeFile(join(r.dir, 'web-slice.yaml'), sliceYaml('web-1', 'web', '10.0.1.6'));
    await waitFor('slice edit', () => r.source.snapshot().endpointSlices[0]?.endpoints[0]?.address.text === '10.0.1.6');
    expect(new Set(r.changes.flatMap((c) => [...c.services]))).toEqual(new Set(['shop/web']));

    await rm(join(r.dir, 'api.yaml'));
    await waitFor('deleted file', () => r.names().join() === 'web:8080');
  });

  it('keeps the previous snapshot while a file cannot be parsed or the directory cannot be read', async () => {
    const r = await rig({ 'web.yaml': serviceYaml('web', '10.96.0.10') });
    await r.source.start();
    await writeFile(join(r.dir, 'web.yaml'), 'apiVersion: v1\nkind: Service\nmetadata: {name: web\n');
    await waitFor('warning', () => r.logs.some((l) => l.msg.includes('keeping the previous state')));
    expect(r.names()).toEqual(['web:80']);
    await writeFile(join(r.dir, 'web.yaml'), serviceYaml('web', '10.96.0.10', 81));
    await waitFor('fixed', () => r.names().join() === 'web:81');

    // An invalid object in a well-formed file is skipped like anywhere else.
    await writeFile(join(r.dir, 'bad.yaml'), serviceYaml('bad', 'not-an-ip'));
    await waitFor('bad skipped', () => r.logs.some((l) => l['object'] === 'shop/bad'));
    expect(r.names()).toEqual(['web:81']);

    await rm(r.dir, { recursive: true, force: true });
    await waitFor('dir gone', () => r.logs.some((l) => l.msg.includes('cannot read the manifest directory')));
    expect(r.names()).toEqual(['web:81']);
  });

  it('the poll catches changes the watch does not report', async () => {
    const r = await rig({ 'web.yaml': serviceYaml('web', '10.96.0.10') }, 100);
    await r.source.start();
    // Stop the directory watch: only the poll is left.
    await r.source.stop();
    const again = manifestSource({
      dir: r.dir,
      nodeName: NODE,
      log: pino({ level: 'silent' }),
      pollMs: 100,
      debounceMs: 60_000,
    });
    cleanups.push(() => again.stop());
    await again.start();
    await writeFile(join(r.dir, 'web.yaml'), serviceYaml('web', '10.96.0.10', 90));
    await waitFor('polled', () => again.snapshot().services[0]?.ports[0]?.port === 90);
  });

  it('start() fails when the directory does not exist', async () => {
    const source = manifestSource({
      dir: join(tmpdir(), 'kproxy-no-such-dir-xyz'),
      nodeName: NODE,
      log: pino({ level: 'silent' }),
    });
    await expect(source.start()).rejects.toThrow(/does not exist/);
  });
});
