/**
 * @module cli/commands/run
 * `kproxy run`: the daemon against an API server or a watched directory, until SIGTERM/SIGINT.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { Loaded } from '../../config/load.ts';
import { DEFAULT_AUDIT_LOG_MAX_BYTES, parseByteSize } from '../../daemon/audit-log.ts';
import { logEventRecorder, type EventRecorder } from '../../daemon/events.ts';
import type { ClusterSource } from '../../source/api-source.ts';
import { manifestSource } from '../../source/manifest-source.ts';
import type { Logger } from '../../util/log.ts';
import { loadKubeConfig } from './kube-config.ts';

/** Runs until SIGTERM or SIGINT; the sync in flight finishes and the rules stay in place. */
export async function runDaemon(
  loaded: Loaded,
  log: Logger,
  loadMode: () => Promise<unknown> = async () => true,
): Promise<number> {
  const { config } = loaded;
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
  const firstSync = Promise.withResolvers<void>();
  let source: ClusterSource;
  let events: EventRecorder;
  if (loaded.manifests) {
    source = manifestSource({ dir: loaded.manifests, nodeName: config.nodeName, log });
    events = logEventRecorder(log);
  } else {
    // The Kubernetes client is most of kproxy's start-up cost (1-2 s of CPU): the first lists go out
    // without it (a bootstrap endpoint read from the kubeconfig), and it is loaded once the first
    // sync is done (docs/adr/0007). Without a plain kubeconfig, it is loaded at once, as before.
    const { apiSource, bootstrapEndpoint } = await import('../../source/api-source.ts');
    const bootstrap = await bootstrapEndpoint({
      ...(loaded.kubeconfig ? { kubeconfig: loaded.kubeconfig } : {}),
      ...(loaded.master ? { master: loaded.master } : {}),
      env: process.env,
    });
    let kubeConfig: Promise<KubeConfig> | undefined;
    const loadKubeConfigOnce = (): Promise<KubeConfig> =>
      (kubeConfig ??= import('@kubernetes/client-node').then((k) => loadKubeConfig(new k.KubeConfig(), loaded)));
    // Loaded now when there is no bootstrap endpoint (a broken kubeconfig fails the start, as before).
    if (!bootstrap) await loadKubeConfigOnce();
    source = apiSource({
      kubeConfig: loadKubeConfigOnce,
      ...(bootstrap ? { bootstrap, informersAfter: firstSync.promise } : {}),
      nodeName: config.nodeName,
      log,
    });
    events = deferredRecorder(firstSync.promise, async () =>
      (await import('../../daemon/events-api.ts')).apiEventRecorder(await loadKubeConfigOnce(), config.nodeName, log),
    );
  }
  // The source first: its first lists are on the wire while the mode and the daemon's modules load.
  const sourceStarted = source.start();
  sourceStarted.catch(() => undefined);
  if (!loaded.manifests) await sourceStarted.catch(() => undefined);
  if ((await loadMode()) === undefined) {
    await source.stop();
    return 1;
  }
  const { startDaemon } = await import('../../daemon/daemon.ts');
  const daemon = await startDaemon({
    ...audit,
    config,
    source,
    sourceStarted,
    events,
    log,
    onFirstSync: firstSync.resolve,
  });
  const signal = await untilSignal(['SIGTERM', 'SIGINT']);
  log.info({ signal }, 'stopping');
  await daemon.stop();
  return 0;
}

/** Records events through the recorder `make` builds, once `after` has settled (it is made then). */
function deferredRecorder(after: Promise<unknown>, make: () => Promise<EventRecorder>): EventRecorder {
  let recorder: Promise<EventRecorder> | undefined;
  return {
    async record(...args) {
      await after.catch(() => undefined);
      recorder ??= make();
      await (await recorder).record(...args);
    },
  };
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
