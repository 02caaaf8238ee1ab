/**
 * @module daemon/audit-log
 * `kproxy run --audit-log PATH|-`: one JSON line per transaction the reconciler applied (or tried
 * to): when, the mode, full or partial, the causes (the objects that changed since the last
 * applied sync, with their fields), the changes written, a hash of the desired state before and
 * after, the duration and the outcome. To a file, rotated by size (PATH → PATH.1, one rotated file
 * kept), or to stderr (`-`).
 *
 * Recording never blocks a sync and never throws: the line is built at once, written in the
 * background one after the other, and a failed (or dropped) write is counted in
 * `kubeproxy_audit_log_write_failures_total` and logged.
 */
import { appendFile, rename, stat } from 'node:fs/promises';
import type { ProxyMode } from '../config/proxy-config.ts';
import type { ClusterSnapshot } from '../model/cluster.ts';
import { fieldChangeText, objectChanges } from '../model/object-changes.ts';
import type { AuditLog, SyncAudit } from '../proxy/audit.ts';
import { DesiredStateHash } from '../proxy/state-hash.ts';
import type { Logger } from '../util/log.ts';

export const DEFAULT_AUDIT_LOG_MAX_BYTES = 10 * 1024 * 1024;
/** Causes listed per line, and fields per cause; the rest are counted. */
const MAX_CAUSES = 100;
const MAX_FIELDS = 20;
/** Lines waiting for a slow disk beyond this are dropped (and counted as failures). */
const MAX_PENDING_WRITES = 1000;

/** The file operations the log needs (injected in tests). */
export interface AuditFiles {
  /** The file's size; 0 when it does not exist. */
  size(path: string): Promise<number>;
  append(path: string, text: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
}

export interface AuditLogOptions {
  /** A file, or `-` for stderr. */
  readonly path: string;
  /** Rotate before a line would take the file past this size. */
  readonly maxBytes: number;
  readonly mode: ProxyMode;
  /** `kubeproxy_audit_log_write_failures_total`. */
  readonly failures: { inc(): void };
  readonly log?: Logger;
  /** Where `-` writes (default process.stderr). */
  readonly stderr?: { write(text: string): unknown };
  readonly files?: AuditFiles;
}

/** One cause: an object that changed, and how. */
export interface AuditCause {
  readonly kind: string;
  readonly name: string;
  readonly change: 'added' | 'removed' | 'modified';
  readonly fields?: readonly string[];
  readonly fieldsOmitted?: number;
}

/** The line's shape (one JSON object per line). */
export interface AuditEntry {
  readonly time: string;
  readonly mode: ProxyMode;
  readonly kind: 'full' | 'partial';
  readonly outcome: 'ok' | 'error';
  readonly error?: string;
  /** The first line of a process: everything was new, no causes are listed. */
  readonly initial?: true;
  /** Services (`namespace/name`) the source reported changed since the last applied sync. */
  readonly services: readonly string[];
  readonly causes: readonly AuditCause[];
  readonly causesOmitted?: number;
  readonly changes: number;
  /** The desired state's hash at the last applied sync (null: none yet) and after this one. */
  readonly desiredBefore: string | null;
  readonly desiredAfter: string;
  readonly durationMs: number;
}

const NODE_FILES: AuditFiles = {
  async size(path) {
    let info: Awaited<ReturnType<typeof stat>>;
    try {
      info = await stat(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw err;
    }
    // Never rotate (rename) a directory or a device someone named by mistake.
    if (!info.isFile()) throw new Error(`${path} is not a regular file`);
    return info.size;
  },
  append: (path, text) => appendFile(path, text, { mode: 0o600 }),
  rename: (from, to) => rename(from, to),
};

export class AuditLogWriter implements AuditLog {
  private readonly o: AuditLogOptions;
  private readonly files: AuditFiles;
  private readonly hash = new DesiredStateHash();
  /** The snapshot of the last applied sync: causes are what changed since. */
  private previous?: ClusterSnapshot;
  private lastDigest: string | null = null;
  /** Services changed since the last applied sync (a failed sync's are carried to the next). */
  private pendingServices = new Set<string>();
  private queue: Promise<void> = Promise.resolve();
  private pending = 0;

  constructor(options: AuditLogOptions) {
    this.o = options;
    this.files = options.files ?? NODE_FILES;
  }

  record(sync: SyncAudit): void {
    let line: string;
    try {
      line = `${JSON.stringify(this.entry(sync))}\n`;
    } catch (err) {
      this.failed('cannot build the audit line', err);
      return;
    }
    if (this.o.path === '-') {
      try {
        (this.o.stderr ?? process.stderr).write(line);
      } catch (err) {
        this.failed('cannot write the audit line', err);
      }
      return;
    }
    if (this.pending >= MAX_PENDING_WRITES) {
      this.failed('audit log writes are not keeping up: line dropped', undefined);
      return;
    }
    this.pending++;
    this.queue = this.queue.then(() =>
      this.write(line).finally(() => {
        this.pending--;
      }),
    );
  }

  /** Resolves when every recorded line was written (or failed). */
  flush(): Promise<void> {
    return this.queue;
  }

  private entry(s: SyncAudit): AuditEntry {
    const services = new Set([...this.pendingServices, ...s.changedServices]);
    const initial = this.previous === undefined;
    const changes = this.previous ? objectChanges(this.previous, s.snapshot, { services }) : [];
    const causes: AuditCause[] = changes.slice(0, MAX_CAUSES).map((c) => ({
      kind: c.kind,
      name: c.name,
      change: c.change,
      ...(c.fields.length > 0 ? { fields: c.fields.slice(0, MAX_FIELDS).map(fieldChangeText) } : {}),
      ...(c.fields.length > MAX_FIELDS ? { fieldsOmitted: c.fields.length - MAX_FIELDS } : {}),
    }));
    const before = this.lastDigest;
    this.hash.update(s.families, s.rederivedAll ? 'all' : s.changedServices);
    const after = this.hash.digest();
    if (s.error === undefined) {
      this.previous = s.snapshot;
      this.lastDigest = after;
      this.pendingServices = new Set();
    } else {
      this.pendingServices = services;
    }
    const listed = [...services].sort();
    return {
      time: s.time.toISOString(),
      mode: this.o.mode,
      kind: s.kind,
      outcome: s.error === undefined ? 'ok' : 'error',
      ...(s.error !== undefined ? { error: s.error } : {}),
      ...(initial ? { initial: true as const } : {}),
      services: listed.slice(0, MAX_CAUSES),
      causes,
      ...(changes.length > MAX_CAUSES ? { causesOmitted: changes.length - MAX_CAUSES } : {}),
      changes: s.changes,
      desiredBefore: before,
      desiredAfter: after,
      durationMs: Math.round(s.durationMs * 10) / 10,
    };
  }

  private async write(line: string): Promise<void> {
    const { path, maxBytes } = this.o;
    try {
      const size = await this.files.size(path);
      if (size > 0 && size + Buffer.byteLength(line) > maxBytes) await this.files.rename(path, `${path}.1`);
      await this.files.append(path, line);
    } catch (err) {
      this.failed(`cannot write the audit log ${path}`, err);
    }
  }

  private failed(what: string, err: unknown): void {
    this.o.failures.inc();
    this.o.log?.warn({ err: err instanceof Error ? err.message : err === undefined ? undefined : String(err) }, what);
  }
}

/** `--audit-log-max-size`: bytes, or with a suffix K/M/G (×1000) or Ki/Mi/Gi (×1024). */
export function parseByteSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*(|k|K|M|G|Ki|Mi|Gi|KiB|MiB|GiB|B)$/.exec(text.trim());
  if (!m) return undefined;
  const unit: Record<string, number> = {
    '': 1,
    B: 1,
    k: 1e3,
    K: 1e3,
    M: 1e6,
    G: 1e9,
    Ki: 1024,
    KiB: 1024,
    Mi: 1024 ** 2,
    MiB: 1024 ** 2,
    Gi: 1024 ** 3,
    GiB: 1024 ** 3,
  };
  const bytes = Math.floor(Number(m[1]) * (unit[m[2] ?? ''] ?? 1));
  return bytes > 0 ? bytes : undefined;
}
