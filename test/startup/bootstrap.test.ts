/**
 * The API source's start-up path (docs/adr/0007): the bootstrap endpoint read from a kubeconfig
 * without client-node, the first lists made through it, and client-node's informers started later
 * from those lists' resourceVersions, missing nothing in between.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import {
  apiSource,
  bootstrapEndpoint,
  type ApiEndpoint,
  type ClusterSource,
  type SourceChange,
} from '../../src/source/api-source.ts';
import { FakeApiServer, kubeconfigFor } from '../support/fake-apiserver.ts';

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

describe('bootstrapEndpoint: a plain kubeconfig read without client-node', () => {
  it('takes the server, the CA, a bearer token and client certificates (data or files beside the kubeconfig)', async () => {
    const read = files({
      '/etc/kp/config': kubeconfig(
        `server: https://10.0.0.1:6443\ncertificate-authority: ca.pem\ntls-server-name: api.internal`,
        `client-certificate-data: ${b64('CERT')}\nclient-key: /keys/key.pem\ntoken: abc`,
      ),
      '/etc/kp/ca.pem': 'CA',
      '/keys/key.pem': 'KEY',
    });
    const ep = (await bootstrapEndpoint({ kubeconfig: '/etc/kp/config', env: {}, readFile: read })) as ApiEndpoint;
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
    const ep = await bootstrapEndpoint({ kubeconfig: '/k', master: 'https://b:443', env: {}, readFile: read });
    expect(ep).toEqual({ server: 'https://b:443', token: 'tok', rejectUnauthorized: false });
  });

  it.each([
    ['exec credentials', 'server: https://a', 'exec: {command: aws}'],
    ['an auth provider', 'server: https://a', 'auth-provider: {name: oidc}'],
    ['basic auth', 'server: https://a', 'username: u\npassword: p'],
    ['impersonation', 'server: https://a', 'as: admin'],
    ['a proxy', 'server: https://a\nproxy-url: http://proxy:3128', ''],
    ['no server', 'certificate-authority: /ca', ''],
  ])('leaves %s to client-node (no bootstrap)', async (_what, cluster, user) => {
    const read = files({ '/k': kubeconfig(cluster, user) });
    expect(await bootstrapEndpoint({ kubeconfig: '/k', env: {}, readFile: read })).toBeUndefined();
  });

  it('follows kproxy run: in-cluster (service account token and CA), else $KUBECONFIG unless it names several files', async () => {
    const read = files({
      '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt': 'CA',
      '/var/run/secrets/kubernetes.io/serviceaccount/token': 'sa-token\n',
      '/home/k': kubeconfig('server: https://k:6443', 'token: x'),
    });
    const env = { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' };
    const ep = await bootstrapEndpoint({ env, readFile: read });
    expect(ep).toMatchObject({ server: 'https://[fd00::1]:443', token: 'sa-token', rejectUnauthorized: true });
    expect(ep?.ca?.toString()).toBe('CA');
    expect(await bootstrapEndpoint({ env: { KUBECONFIG: '/home/k' }, readFile: read })).toMatchObject({
      server: 'https://k:6443',
    });
    expect(await bootstrapEndpoint({ env: { KUBECONFIG: '/home/k:/other' }, readFile: read })).toBeUndefined();
    expect(await bootstrapEndpoint({ kubeconfig: '/missing', env: {}, readFile: read })).toBeUndefined();
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

describe('the first lists through the bootstrap endpoint', () => {
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
    const gate = Promise.withResolvers<void>();
    let kubeConfigLoadedAt: number | undefined;
    const source: ClusterSource = apiSource({
      kubeConfig: async () => {
        kubeConfigLoadedAt = Date.now();
        return kubeconfigFor(server);
      },
      bootstrap: { server: server.url, rejectUnauthorized: true },
      informersAfter: gate.promise,
      nodeName: NODE,
      log: pino({ level: 'silent' }),
      backoff: { initialMs: 20, maxMs: 200 },
    });
    cleanups.push(() => source.stop());
    const changes: SourceChange[] = [];
    source.onChange((c) => changes.push(c));
    return { server, source, gate, changes, loadedAt: () => kubeConfigLoadedAt };
  }

  it('fills the caches before client-node is loaded; the informers then start from the lists, missing nothing', async () => {
    const r = await setup({ serviceCIDRs: true });
    await r.source.start();
    await until('synced', () => r.source.isSynced());
    // One list per cache, no discovery round trip, no watch yet, and no KubeConfig loaded.
    const lists = r.server.requests.filter((q) => !q.watch).map((q) => q.path);
    expect(lists.sort()).toEqual([
      '/api/v1/nodes',
      '/api/v1/services',
      '/apis/discovery.k8s.io/v1/endpointslices',
      '/apis/networking.k8s.io/v1/servicecidrs',
    ]);
    expect(r.server.requests.some((q) => q.watch)).toBe(false);
    expect(r.loadedAt()).toBeUndefined();
    expect(r.source.snapshot().services.map((s) => s.name)).toEqual(['web']);
    expect(r.source.snapshot().serviceCIDRs.map((c) => c.name)).toEqual(['kubernetes']);

    // A change made between the first list and the watch reaches the cache once the informers start.
    r.server.update('EndpointSlice', slice('web-1', 'web', '10.0.1.6'));
    r.server.create('Service', svc('api', '10.96.0.11'));
    const before = r.changes.length;
    r.gate.resolve();
    await until('the change', () => r.source.snapshot().services.length === 2);
    await until('the slice', () => r.source.snapshot().endpointSlices[0]?.endpoints[0]?.address.text === '10.0.1.6');
    expect(r.loadedAt()).toBeDefined();
    // Every informer reused its bootstrap list (no second list), then watched from its resourceVersion.
    await until('four watches', () => r.server.requests.filter((q) => q.watch).length === 4);
    expect(r.server.requests.filter((q) => !q.watch)).toHaveLength(4);
    for (const w of r.server.requests.filter((q) => q.watch)) expect(w.query['resourceVersion']).not.toBe('0');
    // Replaying the bootstrap lists into the informers changed nothing: only the two real changes.
    const services = new Set(r.changes.slice(before).flatMap((c) => [...c.services]));
    expect(services).toEqual(new Set(['shop/web', 'shop/api']));
  });

  it('a 404 on the ServiceCIDR list means the API does not serve them', async () => {
    const r = await setup({ serviceCIDRs: false });
    await r.source.start();
    await until('synced', () => r.source.isSynced());
    expect(r.source.syncedDetail()['serviceCIDRs']).toBe(true);
    expect(r.source.snapshot().serviceCIDRs).toEqual([]);
    r.gate.resolve();
    await until('three watches', () => r.server.requests.filter((q) => q.watch).length === 3);
    expect(r.server.requests.some((q) => q.watch && q.path.endsWith('/servicecidrs'))).toBe(false);
  });
});
