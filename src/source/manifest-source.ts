/**
 * @module source/manifest-source
 * `kproxy run --manifests DIR`: the daemon's `ClusterSource` over a directory of manifests
 * (`readManifestDir` + `buildSnapshot`), reloaded when the directory changes: `fs.watch` on the
 * directory (debounced), plus a poll comparing a stat fingerprint of the entries, since editors
 * and ConfigMap volumes replace files (rename, symlink swap) in ways watches can miss.
 *
 * Never half-applied: when the directory cannot be listed, or any manifest file cannot be read or
 * parsed (an editor mid-write, a syntax error), the previous snapshot is kept (logged) until the
 * directory reads cleanly again. Invalid objects in well-formed files are skipped with a problem,
 * as everywhere else. The very first load has no previous snapshot: `start()` rejects when the
 * directory cannot be listed, and takes what it can when single files are broken.
 */
import { watch as watchDir, type FSWatcher } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { ClusterSnapshot, EndpointSlice } from '../model/cluster.ts';
import type { Logger } from '../util/log.ts';
import { formatProblem, type Problem } from '../util/problems.ts';
import type { ClusterSource, SourceChange } from './api-source.ts';
import { readManifestDir, type ManifestObjects } from './manifests.ts';
import { buildSnapshot } from './normalize.ts';

export interface ManifestSourceOptions {
  readonly dir: string;
  readonly nodeName: string;
  readonly log: Logger;
  /** Quiet time after a watch event before reloading. Default 100 ms. */
  readonly debounceMs?: number;
  /** Fallback poll period. Default 2 s. */
  readonly pollMs?: number;
}

export function manifestSource(opts: ManifestSourceOptions): ClusterSource {
  return new ManifestSource(opts);
}

const EMPTY: ClusterSnapshot = { services: [], endpointSlices: [], serviceCIDRs: [] };

class ManifestSource implements ClusterSource {
  readonly #dir: string;
  readonly #nodeName: string;
  readonly #log: Logger;
  readonly #debounceMs: number;
  readonly #pollMs: number;
  readonly #listeners: ((c: SourceChange) => void)[] = [];
  #snapshot: ClusterSnapshot = EMPTY;
  #synced = false;
  #started = false;
  #stopped = false;
  #watcher: FSWatcher | undefined;
  #pollTimer: NodeJS.Timeout | undefined;
  #debounceTimer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #fingerprint: string | undefined;
  /** The last read (objects and problems) acted on or reported, so an unchanged directory is silent. */
  #lastRead: string | undefined;

  constructor(opts: ManifestSourceOptions) {
    this.#dir = opts.dir;
    this.#nodeName = opts.nodeName;
    this.#log = opts.log.child({ component: 'manifest-source', dir: opts.dir });
    this.#debounceMs = opts.debounceMs ?? 100;
    this.#pollMs = opts.pollMs ?? 2000;
  }

  async start(): Promise<void> {
    if (this.#started) throw new Error('the manifest source was already started');
    this.#started = true;
    await this.#load(true);
    this.#watch();
    this.#pollTimer = setInterval(() => void this.#poll(), this.#pollMs);
    this.#pollTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#watcher?.close();
    this.#watcher = undefined;
    if (this.#pollTimer) clearInterval(this.#pollTimer);
    if (this.#debounceTimer) clearTimeout(this.#debounceTimer);
    await this.#running;
  }

  isSynced(): boolean {
    return this.#synced;
  }

  syncedDetail(): Record<string, boolean> {
    return { manifests: this.#synced };
  }

  snapshot(): ClusterSnapshot {
    return this.#snapshot;
  }

  onChange(listener: (c: SourceChange) => void): void {
    this.#listeners.push(listener);
  }

  #watch(): void {
    if (this.#stopped || this.#watcher) return;
    try {
      const w = watchDir(this.#dir, { persistent: false }, () => this.#schedule());
      w.on('error', (err) => {
        this.#log.warn(
          { err: String(err) },
          'watching the manifest directory failed; polling only until it can be watched again',
        );
        w.close();
        if (this.#watcher === w) this.#watcher = undefined;
      });
      this.#watcher = w;
    } catch (err) {
      this.#log.warn({ err: String(err) }, 'cannot watch the manifest directory; polling only');
    }
  }

  #schedule(): void {
    if (this.#stopped) return;
    if (this.#debounceTimer) clearTimeout(this.#debounceTimer);
    this.#debounceTimer = setTimeout(() => {
      this.#debounceTimer = undefined;
      this.#reload();
    }, this.#debounceMs);
  }

  async #poll(): Promise<void> {
    if (this.#stopped) return;
    this.#watch(); // re-establish a watch that failed (directory replaced, inotify limits)
    const fp = await this.#fingerprintNow();
    if (fp !== this.#fingerprint) this.#reload();
  }

  /** Serialised: one load at a time; a request during a load runs one more after it. */
  #reload(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = (async () => {
      do {
        this.#again = false;
        try {
          await this.#load(false);
        } catch (err) {
          this.#log.error({ err: String(err) }, 'unexpected error reloading manifests');
        }
      } while (this.#again && !this.#stopped);
      this.#running = undefined;
    })();
  }

  /** Names, sizes, mtimes and inodes of the directory's entries (symbolic links followed). */
  async #fingerprintNow(): Promise<string> {
    try {
      const names = (await readdir(this.#dir)).sort();
      const parts = await Promise.all(
        names.map(async (n) => {
          try {
            const s = await stat(join(this.#dir, n));
            return `${n}\0${s.size}\0${s.mtimeMs}\0${s.ino}`;
          } catch {
            return `${n}\0?`;
          }
        }),
      );
      return parts.join('\n');
    } catch (err) {
      return `unreadable: ${String(err)}`;
    }
  }

  async #load(first: boolean): Promise<void> {
    const fingerprint = await this.#fingerprintNow();
    let read: ManifestObjects;
    try {
      read = await readManifestDir(this.#dir);
    } catch (err) {
      if (first) throw err;
      this.#fingerprint = fingerprint;
      const text = `error: ${String(err)}`;
      if (text !== this.#lastRead) {
        this.#lastRead = text;
        this.#log.warn({ err: String(err) }, 'cannot read the manifest directory; keeping the previous state');
      }
      return;
    }
    if (this.#stopped) return;
    this.#fingerprint = fingerprint;
    const text = JSON.stringify(read);
    if (text === this.#lastRead) return;
    this.#lastRead = text;

    if (!first && read.problems.length > 0) {
      this.#report(read.problems);
      this.#log.warn('some manifest files cannot be read or parsed; keeping the previous state until they can');
      return;
    }
    const { snapshot, problems } = buildSnapshot(read.objects, this.#nodeName);
    this.#report([...read.problems, ...problems]);
    const change = diffSnapshots(this.#snapshot, snapshot);
    this.#snapshot = snapshot;
    const firstSync = !this.#synced;
    this.#synced = true;
    if (firstSync) {
      this.#log.info(
        { services: snapshot.services.length, endpointSlices: snapshot.endpointSlices.length },
        'manifests loaded',
      );
    }
    const changed = change.services.size > 0 || change.nodeChanged || change.serviceCIDRsChanged;
    if (changed) this.#log.debug({ services: change.services.size }, 'manifests changed');
    if (changed || firstSync) this.#notify(change);
  }

  #report(problems: readonly Problem[]): void {
    for (const p of problems) {
      this.#log.warn(
        { kind: p.kind, object: p.object, path: p.path || undefined },
        `invalid input: ${formatProblem(p)}`,
      );
    }
  }

  #notify(change: SourceChange): void {
    for (const listener of this.#listeners) {
      try {
        listener(change);
      } catch (err) {
        this.#log.error({ err: String(err) }, 'a change listener failed');
      }
    }
  }
}

/** What differs between two snapshots, per Service (its object and its EndpointSlices). */
export function diffSnapshots(before: ClusterSnapshot, after: ClusterSnapshot): SourceChange {
  const services = new Set<string>();
  const byKey = <T extends { namespace: string; name: string }>(list: readonly T[]): Map<string, T> =>
    new Map(list.map((s) => [`${s.namespace}/${s.name}`, s]));
  const a = byKey(before.services);
  const b = byKey(after.services);
  for (const key of new Set([...a.keys(), ...b.keys()])) {
    if (!isDeepStrictEqual(a.get(key), b.get(key))) services.add(key);
  }
  const slicesByService = (list: readonly EndpointSlice[]): Map<string, EndpointSlice[]> => {
    const m = new Map<string, EndpointSlice[]>();
    for (const s of list) {
      const key = `${s.namespace}/${s.serviceName}`;
      const group = m.get(key);
      if (group) group.push(s);
      else m.set(key, [s]);
    }
    return m;
  };
  const sa = slicesByService(before.endpointSlices);
  const sb = slicesByService(after.endpointSlices);
  for (const key of new Set([...sa.keys(), ...sb.keys()])) {
    if (!isDeepStrictEqual(sa.get(key), sb.get(key))) services.add(key);
  }
  return {
    services,
    nodeChanged: !isDeepStrictEqual(before.node, after.node),
    nodeLabelsChanged: !isDeepStrictEqual(before.node?.labels, after.node?.labels),
    serviceCIDRsChanged: !isDeepStrictEqual(before.serviceCIDRs, after.serviceCIDRs),
  };
}
