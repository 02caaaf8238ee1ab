/**
 * @module daemon/events
 * Kubernetes Events kproxy records, as upstream kube-proxy does: `Starting` on its Node, and a
 * warning when a Service's health-check port cannot be opened. Best effort: a failure to record
 * an Event is logged, never fatal.
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../util/log.ts';

export interface EventTarget {
  readonly kind: 'Node' | 'Service';
  readonly name: string;
  /** Node events go to "default", as upstream's recorder puts them. */
  readonly namespace: string;
}

export interface EventRecorder {
  record(target: EventTarget, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void>;
}

export function apiEventRecorder(kubeConfig: KubeConfig, nodeName: string, log: Logger): EventRecorder {
  const api = kubeConfig.makeApiClient(CoreV1Api);
  return {
    async record(target, type, reason, message) {
      const now = new Date();
      try {
        await api.createNamespacedEvent({
          namespace: target.namespace,
          body: {
            metadata: { generateName: `${target.name}.`, namespace: target.namespace },
            involvedObject: {
              kind: target.kind,
              name: target.name,
              namespace: target.kind === 'Node' ? '' : target.namespace,
              apiVersion: 'v1',
            },
            type,
            reason,
            message,
            source: { component: 'kube-proxy', host: nodeName },
            reportingComponent: 'kube-proxy',
            reportingInstance: nodeName,
            firstTimestamp: now,
            lastTimestamp: now,
            count: 1,
          },
        });
      } catch (err) {
        log.warn(
          { reason, target, err: err instanceof Error ? err.message : String(err) },
          'could not record an event',
        );
      }
    },
  };
}

/** For sources without an API server (`--manifests`): events go to the log only. */
export function logEventRecorder(log: Logger): EventRecorder {
  return {
    async record(target, type, reason, message) {
      (type === 'Warning' ? log.warn : log.info).call(log, { event: reason, target }, message);
    },
  };
}
