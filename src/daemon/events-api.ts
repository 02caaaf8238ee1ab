/**
 * @module daemon/events-api
 * Records kproxy's Events through the API server (see events.ts for what is recorded). Apart from
 * events.ts so that only the daemon against an API server loads the Kubernetes client.
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../util/log.ts';
import type { EventRecorder } from './events.ts';

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
