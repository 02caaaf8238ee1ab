/**
 * @module cli/commands/run
 * `kproxy run`: the daemon against an API server or a watched directory, until SIGTERM/SIGINT.
 */
import { DEFAULT_AUDIT_LOG_MAX_BYTES, parseByteSize } from '../../daemon/audit-log.ts';
import { invalidServiceEvents, logEventRecorder, type EventRecorder } from '../../daemon/events.ts';
import type { ClusterSource } from '../../source/api-source.ts';
import { manifestSource } from '../../source/manifest-source.ts';
import type { Logger } from '../../util/log.ts';
import { ConfigError, type Loaded } from '../../config/load.ts';
import { nonDefaultSettings } from '../../config/non-default.ts';
import { reloadPlan, watchConfigFile } from '../../daemon/config-reload.ts';
import type { Daemon } from '../../daemon/daemon.ts';
import { procFiles, setUpNode } from '../../kernel/node-setup.ts';
import { levelForVerbosity } from '../../util/log.ts';
import { packageVersion } from '../version.ts';
import { apiConnection } from './kube-config.ts';

/** Runs until SIGTERM or SIGINT; the sync in flight finishes and the rules stay in place. */
export async function runDaemon(
  loaded: Loaded,
  log: Logger,
  loadMode: () => Promise<unknown> = async () => true,
  /** Loads the configuration again from the config file's new text (the same flags); throws ConfigError. */
  reloadConfig?: (fileText: string) => Loaded,
): Promise<number> {
  const auditPath = loaded.commandOptions['audit-log'];
  const auditSize = loaded.commandOptions['audit-log-max-size'];
  const maxBytes = auditSize === undefined ? DEFAULT_AUDIT_LOG_MAX_BYTES : parseByteSize(auditSize);
  if (maxBytes === undefined || auditPath === '') {
    process.stderr.write(
      auditPath === ''
        ? 'kproxy: --audit-log: must name a file, or - for stderr\n'
        : `kproxy: --audit-log-max-size: a size in bytes, or with K, M, G, Ki, Mi or Gi, got ${JSON.stringify(auditSize)}\n`,
    );
    return 2;
  }
  const audit = auditPath !== undefined ? { auditLog: { path: auditPath, maxBytes } } : {};
  setUpNode(loaded.config, procFiles, log);
  logStartup(loaded, log);
  let daemon = await startOnce(loaded, log, loadMode, audit);
  if (!daemon) return 1;

  // Config reload (docs/adr/0009): one at a time; a failed restart of the daemon stops kproxy.
  let running = loaded;
  let reloading = Promise.resolve();
  let failed = false;
  const stopWatching =
    loaded.configFile !== undefined && reloadConfig
      ? watchConfigFile(
          loaded.configFile,
          (text) => {
            reloading = reloading.then(async () => {
              const next = nextConfig(text, reloadConfig, running, log);
              if (!next || !daemon) return;
              if (!next.restartDaemon) {
                running = next.loaded;
                return;
              }
              await daemon.stop();
              daemon = await startOnce(next.loaded, log, loadMode, audit);
              if (!daemon) {
                failed = true;
                process.kill(process.pid, 'SIGTERM');
                return;
              }
              running = next.loaded;
              log.info({ config: loaded.configFile }, 'configuration reloaded; the new rules were synced in full');
            });
          },
          log,
        )
      : undefined;
  const signal = await untilSignal(['SIGTERM', 'SIGINT']);
  log.info({ signal }, 'stopping');
  stopWatching?.();
  await reloading;
  await daemon?.stop();
  return failed ? 1 : 0;
}

/**
 * Settings applied without a new daemon. (Not verbosity: pino's child loggers keep the level they
 * were made with, so the daemon's modules see a new one only when made again.)
 */
const APPLIED_IN_PLACE: readonly string[] = ['nodeSetup'];

/**
 * The configuration to apply from the file's new text, or undefined when there is none: invalid,
 * unchanged, or changing a setting that needs a restart (then nothing of it is applied). The node
 * setup is applied here; `restartDaemon` says whether anything else changed, which a new daemon
 * (and its full sync) applies.
 */
function nextConfig(
  text: string,
  reload: (text: string) => Loaded,
  running: Loaded,
  log: Logger,
): { loaded: Loaded; restartDaemon: boolean } | undefined {
  let next: Loaded;
  try {
    next = reload(text);
  } catch (err) {
    log.error(
      { config: running.configFile, problems: err instanceof ConfigError ? err.problems : [String(err)] },
      'the changed config file is invalid; keeping the running configuration',
    );
    return undefined;
  }
  for (const w of next.warnings) log.warn({ warning: w }, 'configuration warning');
  const plan = reloadPlan(running, next);
  if (plan.restartNeeded.length > 0) {
    log.error(
      { config: running.configFile, restartNeeded: plan.restartNeeded, live: plan.live },
      `the config file changed ${plan.restartNeeded.join(', ')}, which only a restart applies; keeping the running configuration (restart kproxy to apply the file)`,
    );
    return undefined;
  }
  if (plan.live.length === 0) {
    log.info({ config: running.configFile }, 'the config file changed; the effective configuration did not');
    return undefined;
  }
  log.info({ config: running.configFile, changed: plan.live }, 'the config file changed; applying it live');
  if (plan.live.includes('verbosity')) log.level = levelForVerbosity(next.config.verbosity);
  if (plan.live.includes('nodeSetup')) setUpNode(next.config, procFiles, log);
  return { loaded: next, restartDaemon: plan.live.some((f) => !APPLIED_IN_PLACE.includes(f)) };
}

/** One line at start: what runs, from where, and every setting that is not the default. */
function logStartup(loaded: Loaded, log: Logger): void {
  log.info(
    {
      version: packageVersion(),
      mode: loaded.config.mode,
      node: loaded.config.nodeName,
      configSource: loaded.configFile ?? 'flags and defaults',
      configVersion: loaded.configFile !== undefined ? loaded.configVersion : undefined,
      nonDefault: nonDefaultSettings(loaded.config, loaded.configVersion),
    },
    'kproxy starting',
  );
}

/** The daemon and its cluster source, started; undefined when the mode cannot load. */
async function startOnce(
  loaded: Loaded,
  log: Logger,
  loadMode: () => Promise<unknown>,
  audit: { auditLog?: { path: string; maxBytes: number } },
): Promise<Daemon | undefined> {
  const { config } = loaded;
  let source: ClusterSource;
  let events: EventRecorder;
  if (loaded.manifests) {
    source = manifestSource({ dir: loaded.manifests, nodeName: config.nodeName, log });
    events = logEventRecorder(log);
  } else {
    // kproxy's own list/watch: client-node is loaded only for kubeconfigs that need its auth plugins
    // (docs/adr/0007, 0013). A kubeconfig that cannot be read fails the start.
    const [{ apiSource }, { apiEventRecorder }, connection] = await Promise.all([
      import('../../source/api-source.ts'),
      import('../../daemon/events-api.ts'),
      apiConnection(loaded),
    ]);
    events = apiEventRecorder(connection, config.nodeName, log);
    source = apiSource({
      connection,
      nodeName: config.nodeName,
      log,
      onProblem: invalidServiceEvents(events),
    });
  }
  // The source first: its first lists are on the wire while the mode and the daemon's modules load.
  const sourceStarted = source.start();
  sourceStarted.catch(() => undefined);
  if (!loaded.manifests) await sourceStarted.catch(() => undefined);
  if ((await loadMode()) === undefined) {
    await source.stop();
    return undefined;
  }
  const { startDaemon } = await import('../../daemon/daemon.ts');
  return await startDaemon({
    ...audit,
    config,
    source,
    sourceStarted,
    events,
    log,
  });
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
