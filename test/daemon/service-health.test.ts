import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:net';
import { ServiceHealthServer, type ServiceHealthListenError } from '../../src/daemon/service-health.ts';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((c) => c()));
});

/** Reserves a free port on 127.0.0.1 by binding it; returns the port and the blocking server. */
async function occupy(): Promise<{ port: number; server: Server; release: () => Promise<void> }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  let released: Promise<void> | undefined;
  const release = () => (released ??= new Promise<void>((resolve) => server.close(() => resolve())));
  cleanups.push(release);
  return { port, server, release };
}

/** A free port: bind, read, release. */
async function freePort(): Promise<number> {
  const o = await occupy();
  await o.release();
  return o.port;
}

function setup() {
  let proxyHealthy = true;
  const errors: ServiceHealthListenError[] = [];
  const hcs = new ServiceHealthServer({
    nodeName: 'node-a',
    addresses: ['127.0.0.1'],
    proxyHealthy: () => proxyHealthy,
    onListenError: (e) => errors.push(e),
  });
  cleanups.push(() => hcs.close());
  return { hcs, errors, setProxyHealthy: (v: boolean) => (proxyHealthy = v) };
}

async function probe(port: number) {
  const res = await fetch(`http://127.0.0.1:${port}/`);
  return { status: res.status, headers: res.headers, text: await res.text() };
}

describe('service health-check servers', () => {
  it('200 with local endpoints and a healthy proxy, else 503; weight header and upstream body', async () => {
    const { hcs, errors, setProxyHealthy } = setup();
    const port = await freePort();
    await hcs.syncServices(new Map([[port, { namespace: 'default', name: 'web' }]]));
    expect(hcs.openPorts()).toEqual([port]);

    let r = await probe(port);
    expect(r.status).toBe(503);
    expect(r.headers.get('x-load-balancing-endpoint-weight')).toBe('0');
    expect(JSON.parse(r.text)).toEqual({
      service: { namespace: 'default', name: 'web' },
      localEndpoints: 0,
      serviceProxyHealthy: true,
    });

    hcs.syncEndpoints(new Map([['default/web', 2]]));
    r = await probe(port);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('application/json');
    expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    expect(r.headers.get('x-load-balancing-endpoint-weight')).toBe('2');
    expect(r.text).toBe(
      '{\n\t"service": {\n\t\t"namespace": "default",\n\t\t"name": "web"\n\t},\n\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}',
    );

    setProxyHealthy(false);
    r = await probe(port);
    expect(r.status).toBe(503);
    expect(JSON.parse(r.text)).toMatchObject({ localEndpoints: 2, serviceProxyHealthy: false });
    setProxyHealthy(true);

    // Endpoints for Services not in the new map drop to 0.
    hcs.syncEndpoints(new Map());
    expect((await probe(port)).status).toBe(503);
    expect(errors).toEqual([]);
  });

  it('closes ports no longer wanted and opens new ones', async () => {
    const { hcs } = setup();
    const [p1, p2] = [await freePort(), await freePort()];
    await hcs.syncServices(new Map([[p1, { namespace: 'a', name: 'one' }]]));
    expect(hcs.openPorts()).toEqual([p1]);
    await hcs.syncServices(new Map([[p2, { namespace: 'b', name: 'two' }]]));
    expect(hcs.openPorts()).toEqual([p2]);
    await expect(fetch(`http://127.0.0.1:${p1}/`)).rejects.toThrow();
    hcs.syncEndpoints(new Map([['b/two', 1]]));
    expect((await probe(p2)).status).toBe(200);
    await hcs.syncServices(new Map());
    expect(hcs.openPorts()).toEqual([]);
  });

  it('a port in use is reported, does not crash, and is retried on the next sync', async () => {
    const { hcs, errors } = setup();
    const busy = await occupy();
    const ok = await freePort();
    await hcs.syncServices(
      new Map([
        [busy.port, { namespace: 'default', name: 'blocked' }],
        [ok, { namespace: 'default', name: 'fine' }],
      ]),
    );
    expect(hcs.openPorts()).toEqual([ok]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({
      service: { namespace: 'default', name: 'blocked' },
      port: busy.port,
      reason: 'FailedToStartServiceHealthcheck',
    });
    expect(errors[0]?.message).toMatch(
      new RegExp(`^node node-a failed to start healthcheck "default/blocked" on port ${busy.port}: .*EADDRINUSE`),
    );

    await busy.release();
    await hcs.syncServices(
      new Map([
        [busy.port, { namespace: 'default', name: 'blocked' }],
        [ok, { namespace: 'default', name: 'fine' }],
      ]),
    );
    expect(hcs.openPorts()).toEqual([busy.port, ok].sort((a, b) => a - b));
    expect(errors).toHaveLength(1);
    hcs.syncEndpoints(new Map([['default/blocked', 1]]));
    expect((await probe(busy.port)).status).toBe(200);
  });
});
