/**
 * @module daemon/events-api
 * Records kproxy's Events through the API server (see events.ts for what is recorded): a core v1
 * Event create, as upstream's recorder makes. Apart from events.ts so that only the daemon
 * against an API server loads the HTTP client.
 */
import { type ApiConnection, ApiError, errorText, requestJson } from '../source/api-http.ts';
import type { Logger } from '../util/log.ts';
import type { EventRecorder } from './events.ts';

const REQUEST_TIMEOUT_MS = 30_000;

export function apiEventRecorder(connection: ApiConnection, nodeName: string, log: Logger): EventRecorder {
  return {
    async record(target, type, reason, message) {
      const now = new Date().toISOString();
      const path = `/api/v1/namespaces/${encodeURIComponent(target.namespace)}/events`;
      try {
        const res = await requestJson(connection, {
          method: 'POST',
          path,
          body: {
            apiVersion: 'v1',
            kind: 'Event',
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
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
          timeoutMs: REQUEST_TIMEOUT_MS,
        });
        if (res.status !== 201 && res.status !== 200) throw new ApiError(`POST ${path}`, res.status, res.body);
      } catch (err) {
        log.warn({ reason, target, err: errorText(err) }, 'could not record an event');
      }
    },
  };
}
