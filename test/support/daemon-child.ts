/**
 * The daemon as a separate process, for tests that kill it (kill -9) and start another:
 *
 *   KPROXY_E2E_SERVER=http://127.0.0.1:PORT KPROXY_E2E_NETNS=NS node test/support/daemon-child.ts [kproxy run flags]
 *
 * Runs in the caller's (root) network namespace so it reaches the fake API server on 127.0.0.1,
 * and programs the kernel of NS through a tool spawner started under `ip netns exec NS` (the same
 * as the in-process tests: libnftables and netlink reads in NS); health-check NodePorts listen on
 * 127.0.0.1. Logs JSON lines on stderr. SIGTERM/SIGINT:
 * stops (rules stay) and exits 0.
 *
 * It starts the way `kproxy run --kubeconfig` does with a plain kubeconfig (src/cli/commands/run.ts,
 * docs/adr/0007, 0013): the first lists go out before the daemon's modules load, and client-node
 * is never loaded, so a restart measured with this child costs what a restarted `kproxy run`
 * costs. (So nothing here imports the daemon's modules at the top.)
 */
import { hostname } from 'node:os';
import { loadProxyConfig } from '../../src/config/load.ts';
import { startSpawner } from '../../src/kernel/spawner.ts';
import { createLogger } from '../../src/util/log.ts';

async function main(): Promise<number> {
  const url = process.env['KPROXY_E2E_SERVER'];
  const netns = process.env['KPROXY_E2E_NETNS'];
  if (!url || !netns) {
    process.stderr.write('daemon-child: KPROXY_E2E_SERVER and KPROXY_E2E_NETNS are required\n');
    return 2;
  }
  const loaded = loadProxyConfig({
    argv: process.argv.slice(2),
    hostname: hostname(),
    readFile: () => {
      throw new Error('no config file');
    },
    commandFlags: ['manifests'],
  });
  // Port 0 is refused by the configuration (as upstream): ephemeral ports are set here.
  const config = { ...loaded.config, healthzBindAddress: '127.0.0.1:0', metricsBindAddress: '127.0.0.1:0' };
  const log = createLogger(Math.max(config.verbosity, 2));
  const [{ apiSource }, { apiEventRecorder }, { endpointConnection }] = await Promise.all([
    import('../../src/source/api-source.ts'),
    import('../../src/daemon/events-api.ts'),
    import('../../src/source/api-http.ts'),
  ]);
  const connection = endpointConnection({ server: url, rejectUnauthorized: false });
  const source = apiSource({ connection, nodeName: config.nodeName, log, backoff: { initialMs: 100, maxMs: 300 } });
  const events = apiEventRecorder(connection, config.nodeName, log);
  const sourceStarted = source.start();
  sourceStarted.catch(() => undefined);
  const { startDaemon } = await import('../../src/daemon/daemon.ts');
  const spawner = startSpawner(['ip', 'netns', 'exec', netns]);
  const daemon = await startDaemon({
    config,
    source,
    sourceStarted,
    events,
    log,
    exec: spawner.exec,
    kernelCall: spawner.call,
    serviceHealthAddresses: ['127.0.0.1'],
  });
  // process.on, not once: see untilSignal in src/cli/main.ts (execa's signal-exit would re-raise).
  const signal = await new Promise<string>((resolve) => {
    process.on('SIGTERM', () => resolve('SIGTERM'));
    process.on('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ signal }, 'stopping');
  await daemon.stop();
  spawner.stop();
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`daemon-child: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
