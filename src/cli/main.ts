/**
 * @module cli/main
 * `kproxy sync | dump | cleanup`. The edge where arguments, files, the host name and the kernel
 * meet the pure pipeline (sources → model → render → diff); each command is a straight line.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { ConfigError, loadProxyConfig, type CommandFlag, type Loaded } from '../config/load.ts';
import { cleanupStaleConntrack } from '../kernel/conntrack.ts';
import { execProgram } from '../kernel/exec.ts';
import { readManifestDir } from '../source/manifests.ts';
import { buildSnapshot } from '../source/normalize.ts';
import { nodeStates } from '../proxy/desired.ts';
import { familyStateOf, type ProxyModeDefinition } from '../proxy/backend.ts';
import { loadProxyMode } from '../proxy/modes.ts';
import type { NodeState } from '../model/node-state.ts';
import { createLogger, type Logger } from '../util/log.ts';
import type { KubeConfig } from '@kubernetes/client-node';
import type { ClusterSource } from '../source/api-source.ts';
import { manifestSource } from '../source/manifest-source.ts';
import { startDaemon } from '../daemon/daemon.ts';
import { logEventRecorder, type EventRecorder } from '../daemon/events.ts';
import { formatProblem, type Problem } from '../util/problems.ts';
import { KernelToolError } from '../kernel/errors.ts';

const USAGE = `Usage: kproxy <command> [flags]

Commands:
  sync     --manifests DIR   program this network namespace's kernel from the objects in DIR
  dump     --manifests DIR   print the rules sync would program; touches nothing. --format: nftables
                             mode nft|json, iptables mode restore; --ip-family ipv4|ipv6: one family
  cleanup                    remove kproxy's rules in the mode's engine (and nothing else)
  run                        the daemon: watch the API server (--kubeconfig, --master, or in-cluster)
                             or a directory (--manifests DIR) and keep the kernel in sync

Flags (upstream kube-proxy names): --config FILE, --proxy-mode nftables|nft|iptables,
  --hostname-override, --cluster-cidr, --detect-local-mode, --pod-bridge-interface,
  --pod-interface-name-prefix, --masquerade-all, --nodeport-addresses, --iptables-masquerade-bit,
  --iptables-localhost-nodeports, -v N; for run also --kubeconfig, --master, --healthz-bind-address,
  --metrics-bind-address, --iptables-sync-period, --iptables-min-sync-period.
  kproxy's own: --iptables-flavor auto|nft|legacy (which iptables; default: detect as upstream's image does)
`;

/** Exit codes: 0 done, 1 the work failed (kernel, input), 2 usage or configuration error. */
export async function main(argv: readonly string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    out.write(USAGE);
    return command ? 0 : 2;
  }
  const flags: Record<string, readonly CommandFlag[]> = {
    sync: ['manifests'],
    dump: ['manifests', 'format', 'ip-family'],
    cleanup: [],
    run: ['manifests'],
  };
  const commandFlags = flags[command];
  if (!commandFlags) {
    process.stderr.write(`kproxy: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
    return 2;
  }
  let loaded: Loaded;
  try {
    loaded = loadProxyConfig({
      argv: rest,
      hostname: hostname(),
      readFile: (p) => readFileSync(p, 'utf8'),
      commandFlags,
    });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`kproxy: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const log = createLogger(loaded.config.verbosity);
  for (const w of loaded.warnings) log.warn({ warning: w }, 'configuration warning');
  const mode = await loadProxyMode(loaded.config.mode);
  try {
    switch (command) {
      case 'sync':
        return await sync(loaded, mode, log);
      case 'dump':
        return await dump(loaded, mode, log, out);
      case 'run':
        return await runDaemon(loaded, log);
      default:
        return await cleanup(loaded, mode, log);
    }
  } catch (err) {
    if (err instanceof KernelToolError) {
      log.error({ code: err.code }, err.message);
      return 1;
    }
    throw err;
  }
}

async function desiredFromManifests(loaded: Loaded, log: Logger): Promise<NodeState[] | undefined> {
  if (!loaded.manifests) {
    log.error('--manifests DIR is required (reading from an API server is `kproxy run`)');
    return undefined;
  }
  let read: Awaited<ReturnType<typeof readManifestDir>>;
  try {
    read = await readManifestDir(loaded.manifests);
  } catch (err) {
    log.error({ dir: loaded.manifests }, err instanceof Error ? err.message : String(err));
    return undefined;
  }
  const { snapshot, problems } = buildSnapshot(read.objects, loaded.config.nodeName);
  reportProblems(log, [...read.problems, ...problems]);
  if (!snapshot.node) {
    log.warn(
      { node: loaded.config.nodeName },
      'no Node object for this node: no node IPs, zone or podCIDRs (NodePorts with nodePortAddresses "primary" answer nowhere)',
    );
  }
  return nodeStates(snapshot, loaded.config);
}

function reportProblems(log: Logger, problems: readonly Problem[]): void {
  for (const p of problems)
    log.warn({ kind: p.kind, object: p.object, path: p.path || undefined }, `skipped: ${formatProblem(p)}`);
}

async function sync(loaded: Loaded, mode: ProxyModeDefinition, log: Logger): Promise<number> {
  const states = await desiredFromManifests(loaded, log);
  if (!states) return 1;
  const backend = mode.createBackend({ config: loaded.config, exec: execProgram, log });
  const families = states.map(familyStateOf);
  const started = performance.now();
  const report = await backend.sync({ families, full: true, changed: new Set() });
  reportProblems(log, report.problems);
  if (!(await backend.matches(families))) {
    log.error('the kernel does not hold the desired rules after the sync (someone else changed them?)');
    return 1;
  }
  // UDP clients keep sending into a black hole unless flows to the old state are forgotten.
  let conntrackDeleted = 0;
  for (const state of states) {
    const r = await cleanupStaleConntrack(execProgram, { state });
    conntrackDeleted += r.deleted;
    for (const e of r.errors) log.warn({ family: state.family }, `conntrack cleanup: ${e}`);
  }
  log.info(
    {
      mode: mode.mode,
      changes: report.changes,
      ...report.detail,
      servicePorts: states.map((s) => s.servicePorts.length),
      conntrackDeleted,
      ms: Math.round(performance.now() - started),
    },
    report.changes === 0 ? 'kernel already up to date' : 'rules applied',
  );
  return 0;
}

async function dump(
  loaded: Loaded,
  mode: ProxyModeDefinition,
  log: Logger,
  out: NodeJS.WritableStream,
): Promise<number> {
  const format = loaded.format ?? mode.dumpFormats[0];
  if (!mode.dumpFormats.includes(format)) {
    log.error(`--format: ${mode.mode} mode prints ${mode.dumpFormats.join(' or ')}, not ${JSON.stringify(format)}`);
    return 2;
  }
  const states = await desiredFromManifests(loaded, log);
  if (!states) return 1;
  const { text, problems } = mode.dump({
    states,
    config: loaded.config,
    format,
    ...(loaded.ipFamily ? { family: loaded.ipFamily } : {}),
  });
  reportProblems(log, problems);
  out.write(text);
  return 0;
}

/** Runs until SIGTERM or SIGINT; the sync in flight finishes and the rules stay in place. */
async function runDaemon(loaded: Loaded, log: Logger): Promise<number> {
  const { config } = loaded;
  let source: ClusterSource;
  let events: EventRecorder;
  if (loaded.manifests) {
    source = manifestSource({ dir: loaded.manifests, nodeName: config.nodeName, log });
    events = logEventRecorder(log);
  } else {
    // The Kubernetes client is most of kproxy's module graph: only the daemon against an API server loads it.
    const [{ KubeConfig }, { apiSource }, { apiEventRecorder }] = await Promise.all([
      import('@kubernetes/client-node'),
      import('../source/api-source.ts'),
      import('../daemon/events-api.ts'),
    ]);
    const kubeConfig = loadKubeConfig(new KubeConfig(), loaded);
    source = apiSource({ kubeConfig, nodeName: config.nodeName, log });
    events = apiEventRecorder(kubeConfig, config.nodeName, log);
  }
  const daemon = await startDaemon({ config, source, events, log });
  const signal = await untilSignal(['SIGTERM', 'SIGINT']);
  log.info({ signal }, 'stopping');
  await daemon.stop();
  return 0;
}

/**
 * Resolves with the first of `signals` received. The handlers stay installed until then and for
 * as long as the caller runs after it (a repeated signal while stopping is ignored): with
 * `process.once`, execa's exit hook (signal-exit) sees itself as the only remaining listener when
 * a signal arrives while a subprocess (nft, conntrack) runs, and re-raises the signal, killing the
 * process before the sync in flight finishes and the daemon exits 0.
 */
function untilSignal(signals: readonly NodeJS.Signals[]): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    for (const s of signals) process.on(s, () => resolve(s));
  });
}

/** The standard client-node way: --kubeconfig, else in-cluster, else the default chain; --master overrides the server. */
function loadKubeConfig(kc: KubeConfig, loaded: Loaded): KubeConfig {
  if (loaded.kubeconfig) kc.loadFromFile(loaded.kubeconfig);
  else if (process.env['KUBERNETES_SERVICE_HOST']) kc.loadFromCluster();
  else kc.loadFromDefault();
  if (loaded.master) {
    const cluster = kc.getCurrentCluster();
    kc.loadFromClusterAndUser(
      { ...(cluster ?? { name: 'master', skipTLSVerify: false }), server: loaded.master },
      kc.getCurrentUser() ?? { name: 'anonymous' },
    );
  }
  return kc;
}

async function cleanup(loaded: Loaded, mode: ProxyModeDefinition, log: Logger): Promise<number> {
  const removed = await mode.createBackend({ config: loaded.config, exec: execProgram, log }).cleanup();
  log.info({ mode: mode.mode, removed }, removed.length > 0 ? 'removed kproxy rules' : 'nothing to remove');
  return 0;
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(
        `kproxy: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exit(1);
    },
  );
}
