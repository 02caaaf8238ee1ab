import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import {
  connectionFor,
  FakeApiServer,
  kubeconfigFor,
  type FakeApiServerOptions,
  type FakeKind,
} from '../support/fake-apiserver.ts';
import { kubeConfigConnection, type ApiConnection } from '../../src/source/api-http.ts';
import { apiSource, whenSynced, type ClusterSource, type SourceChange } from '../../src/source/api-source.ts';
import { buildSnapshot } from '../../src/source/normalize.ts';

const NODE = 'node-a';
type Obj = Record<string, unknown>;
type LogLine = { level: number; msg: string } & Record<string, unknown>;

function svc(name: string, ip: string, spec: Obj = {}, meta: Obj = {}): Obj {
  return {
    metadata: { name, namespace: 'shop', ...meta },
    spec: { clusterIP: ip, ports: [{ name: 'http', port: 80 }], ...spec },
  };
}

function slice(name: string, service: string, addresses: string[], extra: Obj = {}): Obj {
  return {
    metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080 }],
    endpoints: addresses.map((a) => ({ addresses: [a], conditions: { ready: true } })),
    ...extra,
  };
}

function node(name: string, labels: Record<string, string> = {}, address = '192.0.2.10', status: Obj = {}): Obj {
  return { metadata: { name, labels }, status: { addresses: [{ type: 'InternalIP', address }], ...status } };
}

function cidr(name: string, ...cidrs: string[]): Obj {
  return { metadata: { name }, spec: { cidrs } };
}

async function waitFor(what: string, predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Rig {
  server: FakeApiServer;
  source: ClusterSource;
  changes: SourceChange[];
  logs: LogLine[];
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function rig(
  setup: (s: FakeApiServer) => void = () => {},
  serverOptions: FakeApiServerOptions = {},
  connect: (s: FakeApiServer) => ApiConnection = connectionFor,
): Promise<Rig> {
  const server = await FakeApiServer.start(serverOptions);
  cleanups.push(() => server.close());
  setup(server);
  const logs: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) });
  const source = apiSource({
    connection: connect(server),
    nodeName: NODE,
    log,
    backoff: { initialMs: 20, maxMs: 200 },
  });
  cleanups.push(() => source.stop());
  const changes: SourceChange[] = [];
  source.onChange((c) => changes.push(c));
  return { server, source, changes, logs };
}

/** Started, synced, and every watch open at the server (so dropWatches() reaches them all). */
async function synced(r: Rig, watches = 4): Promise<void> {
  await r.source.start();
  await waitFor('sync', () => r.source.isSynced());
  await waitFor('watches', () => r.server.openWatches() === watches);
}

const serviceNames = (r: Rig): string[] => r.source.snapshot().services.map((s) => `${s.namespace}/${s.name}`);
const changedServices = (r: Rig): Set<string> => new Set(r.changes.flatMap((c) => [...c.services]));
const requestsFor = (r: Rig, path: string, watch: boolean): number =>
  r.server.requests.filter((q) => q.path === path && q.watch === watch).length;
const warnings = (r: Rig): LogLine[] => r.logs.filter((l) => l.level >= 40);

/** The objects the server holds, as a manifest would give them (kind and apiVersion set). */
function allObjects(server: FakeApiServer): unknown[] {
  return (['Service', 'EndpointSlice', 'Node', 'ServiceCIDR'] as FakeKind[]).flatMap((k) => server.list(k));
}

describe("apiSource: kproxy's reflectors against a server speaking the real protocol", () => {
  it('syncs initially: not synced before the first lists, the whole view after', async () => {
    const r = await rig((s) => {
      s.create('Service', svc('web', '10.96.0.10'));
      s.create('Service', svc('api', '10.96.0.11'));
      s.create('EndpointSlice', slice('web-1', 'web', ['10.0.1.5', '10.0.1.6']));
      s.create('Node', node(NODE, { 'topology.kubernetes.io/zone': 'z1' }));
      s.create('Node', node('node-b'));
      s.create('ServiceCIDR', cidr('kubernetes', '10.96.0.0/16'));
    });
    expect(r.source.isSynced()).toBe(false);
    await r.source.start();
    expect(r.source.isSynced()).toBe(false);
    await whenSynced(r.source);
    expect(r.source.syncedDetail()).toEqual({ services: true, endpointSlices: true, node: true, serviceCIDRs: true });

    const snap = r.source.snapshot();
    expect(serviceNames(r)).toEqual(['shop/api', 'shop/web']);
    expect(snap.endpointSlices.map((s) => s.endpoints.length)).toEqual([2]);
    expect(snap.node?.name).toBe(NODE);
    expect(snap.node?.labels).toEqual({ 'topology.kubernetes.io/zone': 'z1' });
    expect(snap.serviceCIDRs.map((c) => c.name)).toEqual(['kubernetes']);
    // Exactly what normalizing the same objects in one go gives.
    expect(snap).toEqual(buildSnapshot(allObjects(r.server), NODE).snapshot);
    // A partial sync's view: the named Services and their slices, with the Node and ServiceCIDRs.
    const web = r.source.select?.(new Set(['shop/web', 'shop/gone']));
    if (!web) throw new Error('the API source selects');
    expect(web.services.map((s) => s.name)).toEqual(['web']);
    expect(web.endpointSlices.map((s) => s.name)).toEqual(['web-1']);
    expect(web.node).toEqual(snap.node);
    expect(web.serviceCIDRs).toEqual(snap.serviceCIDRs);
    expect(changedServices(r)).toEqual(new Set(['shop/web', 'shop/api']));
    expect(r.changes.some((c) => c.nodeChanged && c.nodeLabelsChanged)).toBe(true);
    expect(r.changes.some((c) => c.serviceCIDRsChanged)).toBe(true);
    // Only this node was asked for, and the watches asked for bookmarks.
    const nodeWatch = r.server.requests.find((q) => q.path === '/api/v1/nodes' && q.watch);
    expect(nodeWatch?.query['fieldSelector']).toBe(`metadata.name=${NODE}`);
    expect(nodeWatch?.query['allowWatchBookmarks']).toBe('true');
    expect(warnings(r)).toEqual([]);
    // The snapshot is cached while nothing changes.
    expect(r.source.snapshot()).toBe(snap);
  });

  it('reflects ADDED, MODIFIED and DELETED in snapshot() and onChange', async () => {
    const r = await rig((s) => s.create('Service', svc('web', '10.96.0.10')));
    await synced(r);

    r.changes.length = 0;
    r.server.create('Service', svc('api', '10.96.0.11'));
    await waitFor('added', () => serviceNames(r).includes('shop/api'));
    expect(changedServices(r)).toEqual(new Set(['shop/api']));

    r.changes.length = 0;
    r.server.update('Service', svc('api', '10.96.0.11', { ports: [{ name: 'http', port: 8443 }] }));
    await waitFor('modified', () =>
      r.source.snapshot().services.some((s) => s.name === 'api' && s.ports[0]?.port === 8443),
    );
    expect(changedServices(r)).toEqual(new Set(['shop/api']));

    r.changes.length = 0;
    r.server.create('EndpointSlice', slice('api-1', 'api', ['10.0.2.1']));
    await waitFor('slice', () => r.source.snapshot().endpointSlices.length === 1);
    expect(changedServices(r)).toEqual(new Set(['shop/api']));

    // A slice moving to another Service changes both.
    r.changes.length = 0;
    r.server.update('EndpointSlice', slice('api-1', 'web', ['10.0.2.1']));
    await waitFor('slice moved', () => r.source.snapshot().endpointSlices[0]?.serviceName === 'web');
    expect(changedServices(r)).toEqual(new Set(['shop/api', 'shop/web']));

    r.changes.length = 0;
    r.server.delete('Service', 'api', 'shop');
    r.server.delete('EndpointSlice', 'api-1', 'shop');
    await waitFor(
      'deleted',
      () => !serviceNames(r).includes('shop/api') && r.source.snapshot().endpointSlices.length === 0,
    );
    expect(changedServices(r)).toEqual(new Set(['shop/api', 'shop/web']));
    expect(r.source.snapshot()).toEqual(buildSnapshot(allObjects(r.server), NODE).snapshot);
  });

  it('accepts bookmarks and resumes from the bookmarked resourceVersion', async () => {
    const r = await rig((s) => s.create('Service', svc('web', '10.96.0.10')), { bookmarkIntervalMs: 30 });
    await synced(r);
    // Writes the Service watch does not see move the global resourceVersion; bookmarks carry it.
    r.server.create('Node', node('node-b'));
    r.server.create('Node', node('node-c'));
    const latest = r.server.resourceVersion;
    await sleep(150);
    expect(requestsFor(r, '/api/v1/services', true)).toBe(1); // bookmarks do not disturb the watch
    r.server.endWatches();
    await waitFor('reconnect', () => requestsFor(r, '/api/v1/services', true) === 2);
    const again = r.server.requests.filter((q) => q.path === '/api/v1/services' && q.watch)[1];
    expect(again?.query['resourceVersion']).toBe(latest);
    expect(requestsFor(r, '/api/v1/services', false)).toBe(1); // no relist
    expect(warnings(r)).toEqual([]);
  });

  it('410 Gone: relists and converges, including a deletion made while disconnected', async () => {
    const r = await rig((s) => {
      s.create('Service', svc('web', '10.96.0.10'));
      s.create('Service', svc('old', '10.96.0.12'));
      s.create('EndpointSlice', slice('old-1', 'old', ['10.0.3.1']));
    });
    await synced(r);
    r.changes.length = 0;
    r.server.endWatches(); // a clean close: the reflector reopens the watch at once...
    r.server.delete('Service', 'old', 'shop');
    r.server.delete('EndpointSlice', 'old-1', 'shop');
    r.server.create('Service', svc('new', '10.96.0.13'));
    r.server.compactHistory(); // ...and finds its resourceVersion expired
    await waitFor(
      'converged',
      () => serviceNames(r).join() === 'shop/new,shop/web' && r.source.snapshot().endpointSlices.length === 0,
    );
    expect(requestsFor(r, '/api/v1/services', false)).toBe(2);
    expect(changedServices(r)).toEqual(new Set(['shop/old', 'shop/new']));
    expect(r.logs.some((l) => l.msg.includes('resource version expired'))).toBe(true);
    expect(r.source.snapshot()).toEqual(buildSnapshot(allObjects(r.server), NODE).snapshot);
  });

  it('dropped connections: restarts with backoff, keeps the cache meanwhile, converges', async () => {
    const r = await rig((s) => s.create('Service', svc('web', '10.96.0.10')));
    await synced(r);
    // The restarted watches fail a few times more (500): the view must stay as it was.
    r.server.failNext('/api/v1/services', 500, 3, 'watch');
    r.server.failNext('/api/v1/services', 500, 3, 'list');
    expect(r.server.dropWatches()).toBe(4);
    r.server.create('Service', svc('api', '10.96.0.11'));
    r.server.delete('Service', 'web', 'shop');
    await sleep(30);
    expect(r.source.isSynced()).toBe(true);
    await waitFor('converged', () => serviceNames(r).join() === 'shop/api');
    // Resumed from its resourceVersion: no relist needed.
    expect(requestsFor(r, '/api/v1/services', false)).toBe(1);
    expect(requestsFor(r, '/api/v1/services', true)).toBeGreaterThanOrEqual(5);
    const failures = r.logs.filter((l) => l.msg.includes('list/watch failed') && l['cache'] === 'services');
    expect(failures.length).toBeGreaterThanOrEqual(4);
    expect(failures.map((l) => l['failures'])).toEqual([1, 2, 3, 4].slice(0, failures.length));
    await waitFor('watching again', () => r.server.openWatches() === 4);
  });

  it('retries a list that fails with 500s', async () => {
    const r = await rig((s) => {
      s.create('Service', svc('web', '10.96.0.10'));
      s.failNext('/api/v1/services', 500, 3, 'list');
    });
    await r.source.start();
    await waitFor('others synced', () => r.source.syncedDetail()['endpointSlices'] === true);
    await whenSynced(r.source);
    expect(requestsFor(r, '/api/v1/services', false)).toBe(4);
    expect(serviceNames(r)).toEqual(['shop/web']);
    expect(r.logs.some((l) => l.msg.includes('list/watch failed') && String(l['err']).includes('HTTP 500'))).toBe(true);
  });

  it('a corrupt list body or watch event: logged, retried with backoff, the cache and the other caches kept', async () => {
    const r = await rig((s) => {
      s.create('Service', svc('web', '10.96.0.10'));
      s.create('EndpointSlice', slice('web-1', 'web', ['10.0.1.5']));
      // A list cut short, then one whose items are not an array, before a good one.
      s.garbleNext(
        '/api/v1/services',
        '{"kind":"ServiceList","metadata":{},"items":[{"metadata":{"name":"x"',
        1,
        'list',
      );
      s.garbleNext('/api/v1/services', '{"kind":"ServiceList","metadata":{},"items":{"a":1}}', 1, 'list');
    });
    await synced(r);
    expect(serviceNames(r)).toEqual(['shop/web']);
    expect(requestsFor(r, '/api/v1/services', false)).toBe(3);
    const failed = r.logs.filter((l) => l.msg.includes('list/watch failed') && l['cache'] === 'services');
    expect(failed.map((l) => l['failures'])).toEqual([1, 2]);
    // The body is untrusted: the logged error gives offsets, never its content.
    expect(failed.every((l) => !String(l['err']).includes('"x"'))).toBe(true);

    // A watch stream that is not JSON: the watch restarts from its resourceVersion, nothing is lost.
    r.server.garbleNext('/api/v1/services', 'this is not a watch event\n', 1, 'watch');
    r.server.dropWatches();
    r.server.create('Service', svc('api', '10.96.0.11'));
    await waitFor('converged', () => serviceNames(r).join() === 'shop/api,shop/web');
    expect(r.logs.some((l) => String(l['err']).includes('an event that is not JSON'))).toBe(true);
    expect(requestsFor(r, '/api/v1/services', false)).toBe(3); // resumed, no relist
    expect(r.source.snapshot().endpointSlices.map((e) => e.name)).toEqual(['web-1']);
  });

  it('copes with slow answers', async () => {
    const r = await rig((s) => {
      s.create('Service', svc('web', '10.96.0.10'));
      s.setLatency(200);
    });
    await r.source.start();
    await sleep(100);
    expect(r.source.isSynced()).toBe(false);
    await whenSynced(r.source);
    r.server.create('Service', svc('api', '10.96.0.11'));
    await waitFor('added', () => serviceNames(r).includes('shop/api'));
    await waitFor('watches', () => r.server.openWatches() === 4);
    r.server.dropWatches(); // the reconnection is slow too
    r.server.delete('Service', 'web', 'shop');
    await waitFor('deleted', () => serviceNames(r).join() === 'shop/api');
  });

  it('skips an invalid Service without disturbing others; valid → invalid leaves the view; fixed → back', async () => {
    const r = await rig((s) => {
      s.create('Service', svc('web', '10.96.0.10'));
      s.create('Service', svc('bad', '10.96.0.11', { ports: [{ name: 'http', port: 'eighty' }] }));
      s.create('Service', { metadata: { name: 'weird', namespace: 'shop' }, spec: 'not an object' });
      s.create('EndpointSlice', {
        metadata: { name: 'no-label', namespace: 'shop' },
        addressType: 'IPv4',
        endpoints: 7,
      });
    });
    await synced(r);
    expect(serviceNames(r)).toEqual(['shop/web']);
    expect(r.source.snapshot().endpointSlices).toEqual([]);
    const warned = warnings(r).map((l) => String(l['object']));
    expect(warned).toEqual(expect.arrayContaining(['shop/bad', 'shop/weird', 'shop/no-label']));

    r.changes.length = 0;
    r.server.update('Service', svc('web', 'not-an-ip'));
    await waitFor('removed', () => serviceNames(r).length === 0);
    expect(changedServices(r)).toEqual(new Set(['shop/web']));
    expect(r.logs.some((l) => l.msg.includes('no longer valid'))).toBe(true);

    r.server.update('Service', svc('web', '10.96.0.10'));
    await waitFor('back', () => serviceNames(r).join() === 'shop/web');
    // Deleting an object kproxy never accepted changes nothing.
    r.changes.length = 0;
    r.server.delete('Service', 'bad', 'shop');
    r.server.create('Service', svc('marker', '10.96.0.20'));
    await waitFor('marker', () => serviceNames(r).includes('shop/marker'));
    expect(changedServices(r)).toEqual(new Set(['shop/marker']));
  });

  it('ignores unknown fields', async () => {
    const r = await rig((s) =>
      s.create('Service', {
        ...svc('web', '10.96.0.10', {
          someFutureField: { x: 1 },
          ports: [{ name: 'http', port: 80, newPortField: true }],
        }),
        futureTopLevel: [1, 2, 3],
      }),
    );
    await synced(r);
    expect(serviceNames(r)).toEqual(['shop/web']);
    expect(warnings(r)).toEqual([]);
  });

  it('skips huge objects (over a list limit, or over the size cap) and keeps the rest', async () => {
    const manyIPs = Array.from({ length: 10_000 }, (_, i) => `198.51.${Math.floor(i / 250)}.${(i % 250) + 1}`);
    const r = await rig((s) => {
      s.create('Service', svc('web', '10.96.0.10'));
      s.create('Service', svc('huge', '10.96.0.11', { externalIPs: manyIPs }));
    });
    await synced(r);
    expect(serviceNames(r)).toEqual(['shop/web']);
    expect(warnings(r).some((l) => l['object'] === 'shop/huge' && l.msg.includes('more than the limit of 100'))).toBe(
      true,
    );

    r.server.create('Service', svc('giant', '10.96.0.12', {}, { annotations: { blob: 'x'.repeat(2_200_000) } }));
    r.server.create('Service', svc('after', '10.96.0.13'));
    await waitFor('after', () => serviceNames(r).includes('shop/after'));
    expect(serviceNames(r)).toEqual(['shop/after', 'shop/web']);
    expect(warnings(r).some((l) => l['object'] === 'shop/giant' && l.msg.includes('characters of JSON'))).toBe(true);
  });

  it('node changes: labels set nodeLabelsChanged, addresses only nodeChanged, status noise nothing', async () => {
    const r = await rig((s) => s.create('Node', node(NODE, { zone: 'a' })));
    await synced(r);
    expect(r.source.snapshot().node?.labels).toEqual({ zone: 'a' });

    r.changes.length = 0;
    r.server.update('Node', node(NODE, { zone: 'b' }));
    await waitFor('labels', () => r.source.snapshot().node?.labels['zone'] === 'b');
    expect(r.changes).toEqual([
      { services: new Set(), nodeChanged: true, nodeLabelsChanged: true, serviceCIDRsChanged: false },
    ]);

    r.changes.length = 0;
    r.server.update('Node', node(NODE, { zone: 'b' }, '192.0.2.99'));
    await waitFor('address', () => r.source.snapshot().node?.addresses[0]?.text === '192.0.2.99');
    expect(r.changes).toEqual([
      { services: new Set(), nodeChanged: true, nodeLabelsChanged: false, serviceCIDRsChanged: false },
    ]);

    // A heartbeat (conditions) changes nothing kproxy reads: no notification.
    r.changes.length = 0;
    r.server.update(
      'Node',
      node(NODE, { zone: 'b' }, '192.0.2.99', { conditions: [{ type: 'Ready', status: 'True' }] }),
    );
    r.server.create('Service', svc('marker', '10.96.0.20'));
    await waitFor('marker', () => serviceNames(r).includes('shop/marker'));
    expect(r.changes.every((c) => !c.nodeChanged)).toBe(true);

    // Other nodes are never seen.
    r.server.create('Node', node('node-b', { zone: 'c' }));
    r.server.delete('Node', NODE);
    await waitFor('node gone', () => r.source.snapshot().node === undefined);
    expect(r.changes.at(-1)).toMatchObject({ nodeChanged: true, nodeLabelsChanged: true });
  });

  it('counts ServiceCIDRs as synced (with none) when the API does not serve them', async () => {
    const r = await rig((s) => {
      s.disable('ServiceCIDR');
      s.create('Service', svc('web', '10.96.0.10'));
    });
    await synced(r, 3);
    expect(r.source.syncedDetail()['serviceCIDRs']).toBe(true);
    expect(r.source.snapshot().serviceCIDRs).toEqual([]);
    // One list (answered 404), never a watch.
    expect(r.server.requests.filter((q) => q.path.endsWith('/servicecidrs')).map((q) => q.watch)).toEqual([false]);
    expect(r.logs.some((l) => l.msg.includes('does not serve'))).toBe(true);
  });

  it('retries a ServiceCIDR list that fails, then watches ServiceCIDRs', async () => {
    const r = await rig((s) => {
      s.failNext('/apis/networking.k8s.io/v1/servicecidrs', 503, 2, 'list');
      s.create('ServiceCIDR', cidr('kubernetes', '10.96.0.0/16'));
    });
    await synced(r);
    expect(r.source.snapshot().serviceCIDRs.map((c) => c.name)).toEqual(['kubernetes']);
    expect(requestsFor(r, '/apis/networking.k8s.io/v1/servicecidrs', false)).toBe(3);
    r.changes.length = 0;
    r.server.create('ServiceCIDR', cidr('extra', '10.97.0.0/16'));
    await waitFor('cidr', () => r.source.snapshot().serviceCIDRs.length === 2);
    expect(r.changes.some((c) => c.serviceCIDRsChanged)).toBe(true);
  });

  it("works through client-node's KubeConfig too (kubeconfigs with auth plugins)", async () => {
    const r = await rig(
      (s) => s.create('Service', svc('web', '10.96.0.10')),
      {},
      (s) => kubeConfigConnection(kubeconfigFor(s)),
    );
    await synced(r);
    r.server.create('Service', svc('api', '10.96.0.11'));
    await waitFor('added', () => serviceNames(r).join() === 'shop/api,shop/web');
  });

  it('a watch the server ends at once, again and again, is retried with backoff, not in a tight loop', async () => {
    const r = await rig((s) => s.create('Service', svc('web', '10.96.0.10')));
    await synced(r);
    const before = requestsFor(r, '/api/v1/services', true);
    for (let i = 0; i < 20; i++) {
      r.server.endWatches('Service');
      await sleep(10);
    }
    // 20 ends in 200 ms: with backoff (20 ms doubling to 200 ms) far fewer reopenings than ends.
    expect(requestsFor(r, '/api/v1/services', true) - before).toBeLessThan(12);
    expect(r.logs.some((l) => l.msg.includes('list/watch failed') && String(l['err']).includes('ended at once'))).toBe(
      true,
    );
    await waitFor('watching again', () => r.server.openWatches() === 4);
  });

  it('stop() closes the watches and ends notifications', async () => {
    const r = await rig((s) => s.create('Service', svc('web', '10.96.0.10')));
    await synced(r);
    await r.source.stop();
    await waitFor('watches closed', () => r.server.openWatches() === 0);
    r.changes.length = 0;
    r.server.create('Service', svc('api', '10.96.0.11'));
    r.server.endWatches();
    await sleep(100);
    expect(r.changes).toEqual([]);
    expect(r.server.openWatches()).toBe(0);
    expect(serviceNames(r)).toEqual(['shop/web']);
  });
});
