/**
 * @module daemon/events
 * Kubernetes Events kproxy records, as upstream kube-proxy does: `Starting` on its Node, and a
 * warning when a Service's health-check port cannot be opened; and a warning on a Service skipped
 * as invalid. Best effort: a failure to record
 * an Event is logged, never fatal.
 */
import type { Logger } from '../util/log.ts';
import { formatProblem, type Problem } from '../util/problems.ts';

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

/** Distinct (object, problem) pairs remembered; past this the memory starts over (an Event may repeat). */
const MAX_REMEMBERED_PROBLEMS = 1000;

/**
 * A Warning event on each Service skipped as invalid (reason `InvalidService`), once per distinct
 * problem: a Service re-sent unchanged by its watch does not add an Event each time.
 */
export function invalidServiceEvents(events: EventRecorder): (problem: Problem) => void {
  const seen = new Set<string>();
  return (p) => {
    if (p.kind !== 'Service') return;
    const key = `${p.object}\n${p.path}\n${p.message}`;
    if (seen.has(key)) return;
    if (seen.size >= MAX_REMEMBERED_PROBLEMS) seen.clear();
    seen.add(key);
    const [namespace = '', name = ''] = p.object.split('/');
    void events.record(
      { kind: 'Service', namespace, name },
      'Warning',
      'InvalidService',
      `skipped: ${formatProblem(p)}`,
    );
  };
}
