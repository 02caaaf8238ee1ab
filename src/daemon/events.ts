/**
 * @module daemon/events
 * Kubernetes Events kproxy records, as upstream kube-proxy does: `Starting` on its Node, and a
 * warning when a Service's health-check port cannot be opened. Best effort: a failure to record
 * an Event is logged, never fatal.
 */
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

/** For sources without an API server (`--manifests`): events go to the log only. */
export function logEventRecorder(log: Logger): EventRecorder {
  return {
    async record(target, type, reason, message) {
      (type === 'Warning' ? log.warn : log.info).call(log, { event: reason, target }, message);
    },
  };
}
