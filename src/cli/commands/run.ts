/**
 * @module cli/commands/run
 * `kproxy run`: the daemon against an API server or a watched directory, until SIGTERM/SIGINT.
 */
import type { Loaded } from '../../config/load.ts';
import { DEFAULT_AUDIT_LOG_MAX_BYTES, parseByteSize } from '../../daemon/audit-log.ts';
import { startDaemon } from '../../daemon/daemon.ts';
import { logEventRecorder, type EventRecorder } from '../../daemon/events.ts';
import type { ClusterSource } from '../../source/api-source.ts';
import { manifestSource } from '../../source/manifest-source.ts';
import type { Logger } from '../../util/log.ts';
import { loadKubeConfig } from './kube-config.ts';

/** Runs until SIGTERM or SIGINT; the sync in flight finishes and the rules stay in place. */
export async function runDaemon(loaded: Loaded, log: Logger): Promise<number> {
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
  let source: ClusterSource;
  let events: EventRecorder;
  if (loaded.manifests) {
    source = manifestSource({ dir: loaded.manifests, nodeName: config.nodeName, log });
    events = logEventRecorder(log);
  } else {
    // The Kubernetes client is most of kproxy's module graph: only the daemon against an API server loads it.
    const [{ KubeConfig }, { apiSource }, { apiEventRecorder }] = await Promise.all([
      import('@kubernetes/client-node'),
      import('../../source/api-source.ts'),
      import('../../daemon/events-api.ts'),
    ]);
    const kubeConfig = loadKubeConfig(new KubeConfig(), loaded);
    source = apiSource({ kubeConfig, nodeName: config.nodeName, log });
    events = apiEventRecorder(kubeConfig, config.nodeName, log);
  }
  const daemon = await startDaemon({ ...audit, config, source, events, log });
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
