/**
 * The `kproxy explain` and `kproxy diff --against` commands end to end in-process (no kernel):
 * flags, manifests, output formats and exit codes.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import type { Explanation } from '../../src/explain/explain.ts';
import { FakeApiServer, kubeconfigYaml } from '../support/fake-apiserver.ts';

let dirs: string[] = [];
afterEach(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

function manifests(ready: boolean): string {
  const dir = mkdtempSync(join(tmpdir(), 'kproxy-cli-'));
  dirs.push(dir);
  writeFileSync(
    join(dir, 'cluster.yaml'),
    `apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  clusterIP: 10.96.0.10
  ports: [{ name: http, port: 80, targetPort: 8080 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-abc, namespace: default, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, protocol: TCP, port: 8080 }]
endpoints:
  - { addresses: [10.244.0.2], conditions: { ready: true }, nodeName: node-a }
  - { addresses: [10.244.0.3], conditions: { ready: ${ready} }, nodeName: node-a }
---
apiVersion: v1
kind: Node
metadata: { name: node-a }
status: { addresses: [{ type: InternalIP, address: 192.0.2.1 }] }
`,
  );
  return dir;
}

async function run(argv: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const sink = new Writable({
    write(chunk, _enc, done) {
      out += String(chunk);
      done();
    },
  });
  const code = await main(argv, sink);
  return { code, out };
}

const FLAGS = ['--hostname-override=node-a', '--cluster-cidr=10.244.0.0/16'];

describe('kproxy explain', () => {
  it('--output json: the contract’s fields', async () => {
    const dir = manifests(false);
    const { code, out } = await run([
      'explain',
      '--manifests',
      dir,
      ...FLAGS,
      '--src',
      '10.244.0.5',
      '--dst',
      '10.96.0.10:80',
      '--proto',
      'tcp',
      '--output',
      'json',
    ]);
    expect(code).toBe(0);
    const e = JSON.parse(out) as Explanation;
    expect(e).toMatchObject({
      verdict: 'dnat',
      service: 'default/web:http',
      endpoints: ['10.244.0.2:8080'],
      excluded: [{ endpoint: '10.244.0.3:8080', reason: 'not-ready' }],
      masquerade: false,
    });
    expect(typeof e.reason).toBe('string');
  });

  it('text by default; iptables mode answers for its own rules', async () => {
    const dir = manifests(true);
    const args = ['explain', '--manifests', dir, ...FLAGS, '--src', '10.244.0.5', '--dst', '10.96.0.10:81'];
    const nft = await run(args);
    expect(nft.code).toBe(0);
    expect(nft.out).toMatch(/^verdict +REJECT/m);
    const ipt = await run([...args, '--proxy-mode', 'iptables']);
    expect(ipt.out).toMatch(/^verdict +not intercepted/m);
  });

  it('--packets: one JSON line per packet line, errors as lines', async () => {
    const dir = manifests(true);
    const file = join(dir, 'packets.txt');
    writeFileSync(file, '# comment\n10.244.0.5 10.96.0.10:80 tcp pod\n203.0.113.9 10.96.0.10:80\nnonsense\n');
    const { code, out } = await run(['explain', '--manifests', dir, ...FLAGS, '--packets', file, '--output', 'json']);
    const lines = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Partial<Explanation> & { error?: string });
    expect(lines.map((l) => l.verdict ?? 'error')).toEqual(['dnat', 'dnat', 'error']);
    expect(lines[1]?.masquerade).toBe(true);
    expect(code).toBe(2);
  });

  it('usage errors exit 2', async () => {
    const dir = manifests(true);
    expect((await run(['explain', '--manifests', dir, ...FLAGS, '--src', '10.244.0.5'])).code).toBe(2);
    expect(
      (
        await run([
          'explain',
          '--manifests',
          dir,
          ...FLAGS,
          '--src',
          '10.244.0.5',
          '--dst',
          '10.96.0.10:80',
          '--proto',
          'icmp',
        ])
      ).code,
    ).toBe(2);
    expect((await run(['explain', '--manifests', dir, '--against', dir])).code).toBe(2);
  });
});

describe('kproxy diff --against', () => {
  it('prints each change with its cause and exits 3; the same state: no differences, exit 0', async () => {
    const before = manifests(true);
    const after = manifests(false);
    const changed = await run(['diff', '--manifests', before, '--against', after, ...FLAGS]);
    expect(changed.code).toBe(3);
    expect(changed.out).toContain('Service port default/web:http (IPv4):');
    expect(changed.out).toContain('  internal endpoints (cluster) −10.244.0.3:8080 (local)');
    expect(changed.out).toContain('  because EndpointSlice default/web-abc: endpoint 10.244.0.3 ready true → false');
    const json = await run(['diff', '--manifests', before, '--against', after, ...FLAGS, '--output', 'json']);
    expect(JSON.parse(json.out)).toMatchObject({ ports: [{ key: 'default/web:http', change: 'modified' }] });
    const same = await run(['diff', '--manifests', before, '--against', before, ...FLAGS]);
    expect(same).toEqual({ code: 0, out: 'No differences.\n' });
    expect((await run(['diff', '--against', after, ...FLAGS])).code).toBe(2);
  });
});

describe('kproxy explain --kubeconfig', () => {
  it('lists the cluster once from the API server and explains against it', async () => {
    const server = await FakeApiServer.start();
    try {
      server.create('Service', {
        metadata: { name: 'web', namespace: 'default' },
        spec: { clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80 }] },
      });
      server.create('EndpointSlice', {
        metadata: { name: 'web-abc', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
        addressType: 'IPv4',
        ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
        endpoints: [{ addresses: ['10.244.0.2'], conditions: { ready: true }, nodeName: 'node-a' }],
      });
      server.create('Node', {
        metadata: { name: 'node-a' },
        status: { addresses: [{ type: 'InternalIP', address: '192.0.2.1' }] },
      });
      const dir = mkdtempSync(join(tmpdir(), 'kproxy-cli-'));
      dirs.push(dir);
      writeFileSync(join(dir, 'kubeconfig'), kubeconfigYaml(server));
      const { code, out } = await run([
        'explain',
        '--kubeconfig',
        join(dir, 'kubeconfig'),
        ...FLAGS,
        '--src',
        '203.0.113.9',
        '--dst',
        '10.96.0.10:80',
        '--output',
        'json',
      ]);
      expect(code).toBe(0);
      expect(JSON.parse(out)).toMatchObject({ verdict: 'dnat', endpoints: ['10.244.0.2:8080'], masquerade: true });
    } finally {
      await server.close();
    }
  });
});
