/**
 * bindAddressHardFail: a health server whose port is taken stops the start only when it is set;
 * otherwise kproxy runs without it and binds it once the port is free (retried, as upstream).
 */
import { createServer, type Server } from 'node:net';
import { describe, expect, it } from 'vitest';
import { bindServer } from '../../src/daemon/bound-server.ts';
import { startHealthzServer } from '../../src/daemon/healthz-server.ts';
import { ProxyHealth } from '../../src/daemon/proxy-health.ts';
import { captureLog, waitFor } from '../support/daemon-harness.ts';

async function blocker(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as { port: number }).port };
}

describe('binding the health server', () => {
  it('hard fail: a taken port fails the start', async () => {
    const b = await blocker();
    const health = new ProxyHealth({ healthTimeoutMs: 1000 });
    try {
      await expect(
        bindServer(() => startHealthzServer({ bindAddress: `127.0.0.1:${b.port}`, health }), {
          hardFail: true,
          log: captureLog().log,
        }),
      ).rejects.toThrow(/EADDRINUSE/);
    } finally {
      b.server.close();
    }
  });

  it('otherwise: logged once, retried, bound when the port frees', async () => {
    const b = await blocker();
    const health = new ProxyHealth({ healthTimeoutMs: 1000 });
    const log = captureLog('info');
    const bound = await bindServer(() => startHealthzServer({ bindAddress: `127.0.0.1:${b.port}`, health }), {
      hardFail: false,
      log: log.log,
      retryMs: 50,
    });
    try {
      expect(bound.current).toBeNull();
      await new Promise((r) => setTimeout(r, 200));
      const errors = log.lines.filter((l) => l.level === 50);
      expect(errors).toHaveLength(1);
      expect(errors[0]?.msg).toMatch(/EADDRINUSE.*retrying every 0.05 s \(bindAddressHardFail is false\)/);
      await new Promise<void>((resolve) => b.server.close(() => resolve()));
      await waitFor('the server bound', () => bound.current !== null, 2000);
      expect((await fetch(`${bound.current?.url}/livez`)).status).toBe(200);
    } finally {
      await bound.close();
    }
  });
});
