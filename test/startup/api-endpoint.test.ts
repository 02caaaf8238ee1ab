/**
 * Reaching the API server without client-node (docs/adr/0007, 0013): the endpoint read from a
 * plain kubeconfig or the service account, its credentials read again as they rotate, and the
 * first lists going out at once, then watches from their resourceVersions.
 */
import type { RequestOptions } from 'node:https';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { plainEndpoint } from '../../src/source/api-endpoint.ts';
import { type ApiEndpoint, CREDENTIALS_REFRESH_MS, endpointConnection } from '../../src/source/api-http.ts';
import { apiSource, type ClusterSource, type SourceChange } from '../../src/source/api-source.ts';
import { FakeApiServer } from '../support/fake-apiserver.ts';

const NODE = 'node-a';

function files(map: Record<string, string>): (path: string) => Buffer {
  return (path) => {
    const text = map[path];
    if (text === undefined) throw new Error(`ENOENT: ${path}`);
    return Buffer.from(text);
  };
}

function kubeconfig(cluster: string, user: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'current-context: c',
    'contexts:',
    '- name: c',
    '  context: {cluster: k, user: u}',
    'clusters:',
    '- name: k',
    '  cluster:',
    ...cluster
      .split('\n')
      .filter(Boolean)
      .map((l) => `    ${l}`),
    'users:',
    '- name: u',
    '  user:',
    ...(user === '' ? ['    {}'] : user.split('\n').map((l) => `    ${l}`)),
    '',
  ].join('\n');
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('plainEndpoint: a plain kubeconfig read without client-node', () => {
  it('takes the server, the CA, a bearer token and client certificates (data or files beside the kubeconfig)', async () => {
    const read = files({
      '/etc/kp/config': kubeconfig(
        `server: https://10.0.0.1:6443\ncertificate-authority: ca.pem\ntls-server-name: api.internal`,
        `client-certificate-data: ${b64('CERT')}\nclient-key: /keys/key.pem\ntoken: abc`,
      ),
      '/etc/kp/ca.pem': 'CA',
      '/keys/key.pem': 'KEY',
    });
    const ep = (await plainEndpoint({ kubeconfig: '/etc/kp/config', env: {}, readFile: read })) as ApiEndpoint;
    expect(ep.server).toBe('https://10.0.0.1:6443');
    expect(ep.ca?.toString()).toBe('CA');
    expect(ep.cert?.toString()).toBe('CERT');
    expect(ep.key?.toString()).toBe('KEY');
    expect(ep.token).toBe('abc');
    expect(ep.servername).toBe('api.internal');
    expect(ep.rejectUnauthorized).toBe(true);
  });

  it('verifies TLS unless the kubeconfig says insecure-skip-tls-verify: true; --master overrides the server', async () => {
    const read = files({
      '/k': kubeconfig('server: https://a:6443\ninsecure-skip-tls-verify: true', 'tokenFile: /t'),
      '/t': 'tok\n',
    });
    const ep = await plainEndpoint({ kubeconfig: '/k', master: 'https://b:443', env: {}, readFile: read });
    expect(ep).toEqual({ server: 'https://b:443', token: 'tok', rejectUnauthorized: false });
  });

  it.each([
    ['exec credentials', 'server: https://a', 'exec: {command: aws}'],
    ['an auth provider', 'server: https://a', 'auth-provider: {name: oidc}'],
    ['basic auth', 'server: https://a', 'username: u\npassword: p'],
    ['impersonation', 'server: https://a', 'as: admin'],
    ['a proxy', 'server: https://a\nproxy-url: http://proxy:3128', ''],
    ['no server', 'certificate-authority: /ca', ''],
  ])('leaves %s to client-node (no plain endpoint)', async (_what, cluster, user) => {
    const read = files({ '/k': kubeconfig(cluster, user) });
    expect(await plainEndpoint({ kubeconfig: '/k', env: {}, readFile: read })).toBeUndefined();
  });

  it('follows kproxy run: in-cluster (service account token and CA), else $KUBECONFIG unless it names several files', async () => {
    const read = files({
      '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt': 'CA',
      '/var/run/secrets/kubernetes.io/serviceaccount/token': 'sa-token\n',
      '/home/k': kubeconfig('server: https://k:6443', 'token: x'),
    });
    const env = { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' };
    const ep = await plainEndpoint({ env, readFile: read });
    expect(ep).toMatchObject({ server: 'https://[fd00::1]:443', token: 'sa-token', rejectUnauthorized: true });
    expect(ep?.ca?.toString()).toBe('CA');
    expect(await plainEndpoint({ env: { KUBECONFIG: '/home/k' }, readFile: read })).toMatchObject({
      server: 'https://k:6443',
    });
    expect(await plainEndpoint({ env: { KUBECONFIG: '/home/k:/other' }, readFile: read })).toBeUndefined();
    expect(await plainEndpoint({ kubeconfig: '/missing', env: {}, readFile: read })).toBeUndefined();
  });
});

describe('endpointConnection: credentials read again as they rotate', () => {
  it('reads the token file again after a minute; a failed or non-plain reading keeps the last credentials', async () => {
    let clock = 0;
    let token: string | undefined = 'first';
    let reads = 0;
    const conn = endpointConnection(
      { server: 'https://a:6443', token: 'first', rejectUnauthorized: true },
      async () => {
        reads += 1;
        if (token === undefined) throw new Error('unreadable');
        return { server: 'https://ignored', token, rejectUnauthorized: true };
      },
      () => clock,
    );
    const bearer = async (): Promise<unknown> => {
      const opts: RequestOptions = {};
      await conn.apply(opts);
      return (opts.headers as Record<string, unknown> | undefined)?.['Authorization'];
    };
    token = 'second';
    expect(await bearer()).toBe('Bearer first');
    expect(reads).toBe(0);
    clock += CREDENTIALS_REFRESH_MS;
    expect(await bearer()).toBe('Bearer second');
    expect(conn.server).toBe('https://a:6443');
    token = undefined;
    clock += CREDENTIALS_REFRESH_MS;
    expect(await bearer()).toBe('Bearer second');
    expect(reads).toBe(2);
  });
});

// ---------------------------------------------------------------------------------------------

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function svc(name: string, ip: string): Record<string, unknown> {
  return { metadata: { name, namespace: 'shop' }, spec: { clusterIP: ip, ports: [{ name: 'http', port: 80 }] } };
}

function slice(name: string, service: string, ip: string): Record<string, unknown> {
  return {
    metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080 }],
    endpoints: [{ addresses: [ip], conditions: { ready: true } }],
  };
}

describe('the first lists', () => {
  async function setup(opts: { serviceCIDRs: boolean }) {
    const server = await FakeApiServer.start();
    cleanups.push(() => server.close());
    if (!opts.serviceCIDRs) server.disable('ServiceCIDR');
    server.create('Node', {
      metadata: { name: NODE },
      status: { addresses: [{ type: 'InternalIP', address: '192.0.2.1' }] },
    });
    if (opts.serviceCIDRs)
      server.create('ServiceCIDR', { metadata: { name: 'kubernetes' }, spec: { cidrs: ['10.96.0.0/16'] } });
    server.create('Service', svc('web', '10.96.0.10'));
    server.create('EndpointSlice', slice('web-1', 'web', '10.0.1.5'));
    const source: ClusterSource = apiSource({
      connection: endpointConnection({ server: server.url, rejectUnauthorized: true }),
      nodeName: NODE,
      log: pino({ level: 'silent' }),
      backoff: { initialMs: 20, maxMs: 200 },
    });
    cleanups.push(() => source.stop());
    const changes: SourceChange[] = [];
    source.onChange((c) => changes.push(c));
    return { server, source, changes };
  }

  it('go out at once (no discovery round trip), then every cache watches from its list, missing nothing', async () => {
    const r = await setup({ serviceCIDRs: true });
    await r.source.start();
    await until('synced', () => r.source.isSynced());
    // One list per cache, nothing else before them.
    const lists = r.server.requests.filter((q) => !q.watch).map((q) => q.path);
    expect(lists.sort()).toEqual([
      '/api/v1/nodes',
      '/api/v1/services',
      '/apis/discovery.k8s.io/v1/endpointslices',
      '/apis/networking.k8s.io/v1/servicecidrs',
    ]);
    expect(r.source.snapshot().services.map((s) => s.name)).toEqual(['web']);
    expect(r.source.snapshot().serviceCIDRs.map((c) => c.name)).toEqual(['kubernetes']);
    await until('four watches', () => r.server.openWatches() === 4);
    for (const w of r.server.requests.filter((q) => q.watch)) expect(w.query['resourceVersion']).not.toBe('0');

    const before = r.changes.length;
    r.server.update('EndpointSlice', slice('web-1', 'web', '10.0.1.6'));
    r.server.create('Service', svc('api', '10.96.0.11'));
    await until('the change', () => r.source.snapshot().services.length === 2);
    await until('the slice', () => r.source.snapshot().endpointSlices[0]?.endpoints[0]?.address.text === '10.0.1.6');
    expect(r.server.requests.filter((q) => !q.watch)).toHaveLength(4);
    expect(new Set(r.changes.slice(before).flatMap((c) => [...c.services]))).toEqual(new Set(['shop/web', 'shop/api']));
  });

  it('a 404 on the ServiceCIDR list means the API does not serve them', async () => {
    const r = await setup({ serviceCIDRs: false });
    await r.source.start();
    await until('synced', () => r.source.isSynced());
    expect(r.source.syncedDetail()['serviceCIDRs']).toBe(true);
    expect(r.source.snapshot().serviceCIDRs).toEqual([]);
    await until('three watches', () => r.server.openWatches() === 3);
    expect(r.server.requests.some((q) => q.watch && q.path.endsWith('/servicecidrs'))).toBe(false);
  });
});
