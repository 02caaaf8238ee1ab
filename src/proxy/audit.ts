/**
 * @module proxy/audit
 * What the reconciler tells an audit log after each transaction it applied or tried to apply
 * (`kproxy run --audit-log`): the raw facts, cheap to hand over. The log (src/daemon/audit-log.ts)
 * derives the causes, hashes and the line it writes; recording never throws and never waits.
 */
import type { ClusterSnapshot } from '../model/cluster.ts';
import type { FamilyState } from './backend.ts';

export interface SyncAudit {
  /** When the sync started (wall clock). */
  readonly time: Date;
  /** What the backend did (a partial request may have become a full sync); requested, on error. */
  readonly kind: 'full' | 'partial';
  /** Every Service was re-derived (a full request); otherwise only `changedServices`. */
  readonly rederivedAll: boolean;
  /** The Services (`namespace/name`) the source reported changed since the previous sync. */
  readonly changedServices: ReadonlySet<string>;
  /** The desired state handed to the backend. */
  readonly families: readonly FamilyState[];
  /** The snapshot it was derived from. */
  readonly snapshot: ClusterSnapshot;
  /** Changes written (0 when the kernel already matched, or on error). */
  readonly changes: number;
  readonly durationMs: number;
  /** Present when the backend refused: the kernel kept the previous rules. */
  readonly error?: string;
}

export interface AuditLog {
  record(sync: SyncAudit): void;
}
