/**
 * The daemon as a separate process, for tests that kill it (kill -9) and start another:
 *
 *   KPROXY_E2E_SERVER=http://127.0.0.1:PORT KPROXY_E2E_NETNS=NS node test/support/daemon-child.ts [kproxy run flags]
 *
 * Runs in the caller's (root) network namespace so it reaches the fake API server on 127.0.0.1,
 * and programs the kernel of NS through `ip netns exec` (the same injection as the in-process
 * tests); health-check NodePorts listen on 127.0.0.1. Logs JSON lines on stderr. SIGTERM/SIGINT:
 * stops (rules stay) and exits 0.
 */
import { hostname } from 'node:os';
import { loadProxyConfig } from '../../src/config/load.ts';
import { startDaemon } from '../../src/daemon/daemon.ts';
import { apiEventRecorder } from '../../src/daemon/events-api.ts';
import { inNetns } from '../../src/kernel/exec.ts';
import { apiSource } from '../../src/source/api-source.ts';
import { createLogger } from '../../src/util/log.ts';
import { withEphemeralPorts } from './daemon-harness.ts';
import { kubeconfigFor } from './fake-apiserver.ts';

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
  const config = withEphemeralPorts(loaded.config);
  const log = createLogger(Math.max(config.verbosity, 2));
  const kubeConfig = kubeconfigFor({ url });
  const source = apiSource({ kubeConfig, nodeName: config.nodeName, log, backoff: { initialMs: 100, maxMs: 300 } });
  const daemon = await startDaemon({
    config,
    source,
    events: apiEventRecorder(kubeConfig, config.nodeName, log),
    log,
    exec: inNetns(netns),
    serviceHealthAddresses: ['127.0.0.1'],
  });
  // process.on, not once: see untilSignal in src/cli/main.ts (execa's signal-exit would re-raise).
  const signal = await new Promise<string>((resolve) => {
    process.on('SIGTERM', () => resolve('SIGTERM'));
    process.on('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ signal }, 'stopping');
  await daemon.stop();
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`daemon-child: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
