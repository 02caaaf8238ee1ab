/**
 * @module source/api-source
 * The daemon's cluster source: a reflector (list + watch, `reflector.ts`) on Services,
 * EndpointSlices, this node's Node (field selector) and, when the API serves them, ServiceCIDRs,
 * all through one `ApiConnection` (`api-http.ts`: a plain endpoint kproxy reads itself, or
 * client-node's KubeConfig for kubeconfigs that need its auth plugins; docs/adr/0013).
 *
 * Each object is validated by `normalizeObject` when it arrives, so the in-memory view only ever
 * holds validated objects and a sync never re-validates the cluster. A bad object is logged with
 * its identity and skipped; it never removes or disturbs other objects; an object that was valid
 * and becomes invalid leaves kproxy's view (logged), as if deleted. The raw objects are not kept:
 * the stores hold the normalized values, the reflectors each object's resourceVersion.
 *
 * Start-up (docs/adr/0007): the first lists go out as soon as `start()` is called, before the
 * caller loads the mode and the daemon; `start()` returns once they are on the wire.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';
import type { ClusterSnapshot, EndpointSlice, Service } from '../model/cluster.ts';
import type { Logger } from '../util/log.ts';
import { jsonLongerThan } from '../util/json-size.ts';
import { formatProblem, type Problem } from '../util/problems.ts';
import { type ApiConnection, errorText } from './api-http.ts';
import { normalizeObject, snapshotFrom, type KindValues, type ObjectKind } from './normalize.ts';
import { Reflector } from './reflector.ts';

/** What changed since the previous notification. */
export interface SourceChange {
  /** `namespace/name` of each Service whose Service object or EndpointSlices changed. */
  readonly services: ReadonlySet<string>;
  /** This node's Node changed as kproxy sees it (labels, addresses, podCIDRs), appeared or vanished. */
  readonly nodeChanged: boolean;
  /** The node's labels changed (including the Node appearing or vanishing): upstream forces a full resync. */
  readonly nodeLabelsChanged: boolean;
  readonly serviceCIDRsChanged: boolean;
}

/** The cluster narrowed to some Services: theirs, with this node's Node and the ServiceCIDRs. */
export type ServiceSelection = ClusterSnapshot;

export interface ClusterSource {
  /**
   * Begins. The API source returns at once (it retries for ever in the background): use `onChange`
   * and `isSynced()`, or `whenSynced()`, for the first complete view. The manifest source returns
   * after its first load and rejects when the directory cannot be listed.
   */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Every cache has completed its first list (stays true across later disconnections). */
  isSynced(): boolean;
  /** Per cache, whether its first list has completed. */
  syncedDetail(): Record<string, boolean>;
  /** The current validated view (lists sorted as `snapshotFrom` sorts them). Cheap when nothing changed. */
  snapshot(): ClusterSnapshot;
  /**
   * These Services (`namespace/name`) and their EndpointSlices, with the Node and ServiceCIDRs, from
   * the source's own indexes: a partial sync then costs the change, not a copy of the whole cluster
   * (100k objects at 50,000 Services). Optional; without it the proxier filters `snapshot()`.
   */
  select?(services: ReadonlySet<string>): ServiceSelection;
  /**
   * Called after cache changes (changes from one relist or one burst of events are batched into one
   * call, a microtask later) and when a cache completes its first list (possibly with nothing
   * changed: check `isSynced()`). Further coalescing is the caller's job. Listener errors are logged.
   */
  onChange(listener: (c: SourceChange) => void): void;
}

export interface Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
}

export interface ApiSourceOptions {
  /** Where requests go and how they authenticate. */
  readonly connection: ApiConnection;
  readonly nodeName: string;
  readonly log: Logger;
  /** Restart backoff after failures; doubles per consecutive failure, jittered, capped. Default 800 ms → 30 s. */
  readonly backoff?: Backoff;
  /** A watch with no traffic (not even a bookmark) for this long is reopened. Default 120 s. */
  readonly watchIdleTimeoutMs?: number;
  /** A list with nothing received for this long fails. Default 60 s. */
  readonly requestTimeoutMs?: number;
  /** [0, 1) source for jitter (tests). */
  readonly random?: () => number;
  /** Told of every invalid object after it is logged (the daemon turns a Service's into a Warning event). */
  readonly onProblem?: (problem: Problem) => void;
}

/** Objects with more JSON than this are skipped with a problem. */
export const MAX_OBJECT_JSON_CHARS = 2 * 1024 * 1024;

const DEFAULT_BACKOFF: Backoff = { initialMs: 800, maxMs: 30_000 };

type CacheName = 'services' | 'endpointSlices' | 'node' | 'serviceCIDRs';

/** A Kubernetes API resource (group `''` is the core group). */
export interface ApiResource {
  readonly group: string;
  readonly version: string;
  /** Plural, lower case, as in URLs and RBAC rules. */
  readonly resource: string;
}

/** What each cache lists and watches; `start()` builds their URLs from this. */
const INFORMED = {
  services: { group: '', version: 'v1', resource: 'services' },
  endpointSlices: { group: 'discovery.k8s.io', version: 'v1', resource: 'endpointslices' },
  node: { group: '', version: 'v1', resource: 'nodes' },
  serviceCIDRs: { group: 'networking.k8s.io', version: 'v1', resource: 'servicecidrs' },
} as const satisfies Record<CacheName, ApiResource>;

/** One RBAC grant kproxy needs: `verbs` on `resource` in API `group`. */
export interface ApiAccess {
  readonly group: string;
  readonly resource: string;
  readonly verbs: readonly string[];
}

/**
 * Everything kproxy does with the API, as RBAC sees it; deploy/clusterrole.yaml grants exactly this
 * (test/unit/deploy.test.ts). Reads come from {@link INFORMED}: a Reflector only lists (the Node with
 * a field selector, which RBAC checks as `list`) and watches, never GETs one object (a 404 on the
 * first ServiceCIDR list means the API does not serve them; no discovery request). Events (`daemon/events.ts`): a `Starting` Event on this node's Node
 * (namespace "default") and Warnings on Services (their namespace), each a core v1 create; no
 * patch (repeats are not aggregated) and no events.k8s.io. Change this when that code changes.
 */
export const API_ACCESS: readonly ApiAccess[] = [
  ...Object.values(INFORMED).map(
    (r): ApiAccess => ({ group: r.group, resource: r.resource, verbs: ['list', 'watch'] }),
  ),
  { group: '', resource: 'events', verbs: ['create'] },
];

/** `/api/v1/RESOURCE` or `/apis/GROUP/VERSION/RESOURCE`. */
function resourcePath(r: ApiResource): string {
  return `${r.group === '' ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`}/${r.resource}`;
}

export function apiSource(opts: ApiSourceOptions): ClusterSource {
  return new ApiSource(opts);
}

/** Resolves once `source.isSynced()`; rejects if `signal` aborts first. */
export function whenSynced(source: ClusterSource, signal?: AbortSignal): Promise<void> {
  if (source.isSynced()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    let done = false;
    const onAbort = (): void => {
      if (done) return;
      done = true;
      reject(
        signal?.reason instanceof Error ? signal.reason : new Error('aborted while waiting for the caches to sync'),
      );
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    source.onChange(() => {
      if (done || !source.isSynced()) return;
      done = true;
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}

// ---------------------------------------------------------------------------------------------

type Stores = { [K in ObjectKind]: Map<string, KindValues[K]> };

interface PendingChange {
  services: Set<string>;
  nodeChanged: boolean;
  nodeLabelsChanged: boolean;
  serviceCIDRsChanged: boolean;
}

class ApiSource implements ClusterSource {
  readonly #connection: ApiConnection;
  readonly #synced = new Set<CacheName>();
  readonly #nodeName: string;
  readonly #log: Logger;
  readonly #onProblem: ((problem: Problem) => void) | undefined;
  readonly #backoff: Backoff;
  readonly #random: () => number;
  readonly #watchIdleTimeoutMs: number;
  readonly #requestTimeoutMs: number;
  readonly #stop = new AbortController();
  readonly #listeners: ((c: SourceChange) => void)[] = [];
  readonly #stores: Stores = { Service: new Map(), EndpointSlice: new Map(), Node: new Map(), ServiceCIDR: new Map() };
  /** Service key (`namespace/name`) → the ids of its EndpointSlices in the store (an array: most have one, and a Set costs ~400 bytes). */
  readonly #slicesByService = new Map<string, readonly string[]>();
  readonly #reflectors: Reflector[] = [];
  #serviceCIDRsNotServed = false;
  #started = false;
  #snapshot: ClusterSnapshot | undefined;
  #pending: PendingChange | undefined;
  #flushQueued = false;

  constructor(opts: ApiSourceOptions) {
    this.#connection = opts.connection;
    this.#nodeName = opts.nodeName;
    this.#log = opts.log.child({ component: 'api-source' });
    this.#onProblem = opts.onProblem;
    this.#backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.#random = opts.random ?? Math.random;
    this.#watchIdleTimeoutMs = opts.watchIdleTimeoutMs ?? 120_000;
    this.#requestTimeoutMs = opts.requestTimeoutMs ?? 60_000;
  }

  get #stopped(): boolean {
    return this.#stop.signal.aborted;
  }

  async start(): Promise<void> {
    if (this.#started) throw new Error('the API source was already started');
    this.#started = true;
    const sent: Promise<void>[] = [];
    const cache = (name: CacheName, kind: ObjectKind, fieldSelector?: string): void => {
      const wire = Promise.withResolvers<void>();
      sent.push(wire.promise);
      const reflector = new Reflector({
        name,
        path: resourcePath(INFORMED[name]),
        ...(fieldSelector !== undefined ? { fieldSelector } : {}),
        connection: this.#connection,
        log: this.#log,
        signal: this.#stop.signal,
        requestTimeoutMs: this.#requestTimeoutMs,
        watchIdleTimeoutMs: this.#watchIdleTimeoutMs,
        backoffDelay: (failures) => this.#backoffDelay(failures),
        maxBackoffMs: this.#backoff.maxMs,
        permissionProblem: (status) => permissionProblem(status, INFORMED[name]),
        onSent: wire.resolve,
        onObject: (id, raw) => this.#objectEvent(kind, id, raw),
        onSynced: () => this.#cacheSynced(name),
        // ServiceCIDRs are listed directly, like the other caches: a 404 means the API does not serve them.
        ...(name === 'serviceCIDRs'
          ? {
              onNotServed: () => {
                this.#serviceCIDRsNotServed = true;
                this.#log.info(
                  'the API server does not serve networking.k8s.io/v1 servicecidrs: running without ServiceCIDRs',
                );
                this.#cacheSynced(name);
              },
            }
          : {}),
      });
      this.#reflectors.push(reflector);
      reflector.start();
    };
    cache('services', 'Service');
    cache('endpointSlices', 'EndpointSlice');
    cache('node', 'Node', `metadata.name=${this.#nodeName}`);
    cache('serviceCIDRs', 'ServiceCIDR');
    // Returns once the first lists are on the wire (at most 100 ms): the caller's next module loads
    // block the event loop, and a request not yet written would wait for them.
    await Promise.race([Promise.all(sent), sleep(100, undefined, { ref: false })]);
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stop.abort();
    await Promise.all(this.#reflectors.map((r) => r.stopped()));
  }

  isSynced(): boolean {
    return Object.values(this.syncedDetail()).every(Boolean);
  }

  syncedDetail(): Record<string, boolean> {
    const synced = (name: CacheName): boolean => this.#synced.has(name);
    return {
      services: synced('services'),
      endpointSlices: synced('endpointSlices'),
      node: synced('node'),
      serviceCIDRs: synced('serviceCIDRs'),
    };
  }

  snapshot(): ClusterSnapshot {
    this.#snapshot ??= snapshotFrom({
      services: this.#stores.Service.values(),
      endpointSlices: this.#stores.EndpointSlice.values(),
      node: this.#stores.Node.get(this.#nodeName),
      serviceCIDRs: this.#stores.ServiceCIDR.values(),
    });
    return this.#snapshot;
  }

  onChange(listener: (c: SourceChange) => void): void {
    this.#listeners.push(listener);
  }

  /** Jittered exponential backoff for the `failures`-th consecutive failure (1-based). */
  #backoffDelay(failures: number): number {
    const base = Math.min(this.#backoff.maxMs, this.#backoff.initialMs * 2 ** Math.min(30, Math.max(0, failures - 1)));
    return Math.round(base / 2 + (this.#random() * base) / 2);
  }

  // -------------------------------------------------------------------------------------------
  // Caches

  /** A cache completed its first list. */
  #cacheSynced(name: CacheName): void {
    this.#synced.add(name);
    const count = name === 'serviceCIDRs' && this.#serviceCIDRsNotServed ? 0 : this.#storeFor(name).size;
    this.#log.info({ cache: name, objects: count }, 'cache synced');
    if (this.isSynced()) this.#log.info('all caches synced');
    this.#queueFlush();
  }

  #storeFor(name: CacheName): Map<string, unknown> {
    switch (name) {
      case 'services':
        return this.#stores.Service;
      case 'endpointSlices':
        return this.#stores.EndpointSlice;
      case 'node':
        return this.#stores.Node;
      case 'serviceCIDRs':
        return this.#stores.ServiceCIDR;
    }
  }

  /** A reflector handed on an object added or changed (`raw`), or deleted. */
  #objectEvent(kind: ObjectKind, id: string, raw: Record<string, unknown> | undefined): void {
    if (this.#stopped) return;
    try {
      this.#apply(kind, id, raw);
    } catch (err) {
      this.#log.error({ kind, object: id, err: errorText(err) }, 'unexpected error handling an object; it is skipped');
    }
  }

  /** Sets the object `id` of the store from `raw` (validated), or deletes it (`raw` undefined). */
  #apply<K extends ObjectKind>(kind: K, id: string, raw: Record<string, unknown> | undefined): void {
    const store = this.#stores[kind];
    const prev = store.get(id);
    const next = raw === undefined ? undefined : this.#validate(kind, id, raw);
    if (next === undefined) {
      if (prev === undefined) return;
      store.delete(id);
      if (raw !== undefined)
        this.#log.warn({ kind, object: id }, `${kind} ${id} is no longer valid; removed from kproxy's view`);
    } else {
      if (prev !== undefined && isDeepStrictEqual(prev, next)) return;
      store.set(id, next);
    }
    if (kind === 'EndpointSlice')
      this.#indexSlice(id, prev as EndpointSlice | undefined, next as EndpointSlice | undefined);
    this.#noteChange(kind, prev, next);
  }

  /** Keeps `#slicesByService` (service key → slice store ids) in step with the slice store. */
  #indexSlice(id: string, prev: EndpointSlice | undefined, next: EndpointSlice | undefined): void {
    const key = (s: EndpointSlice) => `${s.namespace}/${s.serviceName}`;
    if (prev) {
      const ids = (this.#slicesByService.get(key(prev)) ?? []).filter((i) => i !== id);
      if (ids.length === 0) this.#slicesByService.delete(key(prev));
      else this.#slicesByService.set(key(prev), ids);
    }
    if (next) {
      const ids = this.#slicesByService.get(key(next)) ?? [];
      if (!ids.includes(id)) this.#slicesByService.set(key(next), [...ids, id]);
    }
  }

  select(services: ReadonlySet<string>): ServiceSelection {
    const selected = { services: [] as Service[], endpointSlices: [] as EndpointSlice[] };
    for (const key of services) {
      const service = this.#stores.Service.get(key);
      if (service) selected.services.push(service);
      for (const id of this.#slicesByService.get(key) ?? []) {
        const slice = this.#stores.EndpointSlice.get(id);
        if (slice) selected.endpointSlices.push(slice);
      }
    }
    return snapshotFrom({
      ...selected,
      node: this.#stores.Node.get(this.#nodeName),
      serviceCIDRs: this.#stores.ServiceCIDR.values(),
    });
  }

  #validate<K extends ObjectKind>(kind: K, id: string, raw: Record<string, unknown>): KindValues[K] | undefined {
    if (jsonLongerThan(raw, MAX_OBJECT_JSON_CHARS)) {
      this.#report({
        kind,
        object: id,
        path: '',
        message: `the object is more than ${MAX_OBJECT_JSON_CHARS} characters of JSON (the limit); ${kind} skipped`,
      });
      return undefined;
    }
    const n = normalizeObject(kind, raw, this.#nodeName);
    for (const p of n.problems) this.#report(p);
    return n.value;
  }

  #report(p: Problem): void {
    this.#log.warn({ kind: p.kind, object: p.object, path: p.path || undefined }, `invalid input: ${formatProblem(p)}`);
    this.#onProblem?.(p);
  }

  #noteChange<K extends ObjectKind>(kind: K, prev: KindValues[K] | undefined, next: KindValues[K] | undefined): void {
    const pending = (this.#pending ??= {
      services: new Set(),
      nodeChanged: false,
      nodeLabelsChanged: false,
      serviceCIDRsChanged: false,
    });
    for (const v of [prev, next]) {
      if (v === undefined) continue;
      if (kind === 'Service') {
        const s = v as KindValues['Service'];
        pending.services.add(`${s.namespace}/${s.name}`);
      } else if (kind === 'EndpointSlice') {
        const s = v as KindValues['EndpointSlice'];
        pending.services.add(`${s.namespace}/${s.serviceName}`);
      }
    }
    if (kind === 'Node') {
      pending.nodeChanged = true;
      const labels = (v: KindValues[K] | undefined): unknown =>
        v === undefined ? undefined : (v as KindValues['Node']).labels;
      if (!isDeepStrictEqual(labels(prev), labels(next))) pending.nodeLabelsChanged = true;
    }
    if (kind === 'ServiceCIDR') pending.serviceCIDRsChanged = true;
    this.#snapshot = undefined;
    this.#queueFlush();
  }

  #queueFlush(): void {
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    queueMicrotask(() => {
      this.#flushQueued = false;
      if (this.#stopped) return;
      const p = this.#pending;
      this.#pending = undefined;
      const change: SourceChange = {
        services: p?.services ?? new Set(),
        nodeChanged: p?.nodeChanged ?? false,
        nodeLabelsChanged: p?.nodeLabelsChanged ?? false,
        serviceCIDRsChanged: p?.serviceCIDRsChanged ?? false,
      };
      for (const listener of this.#listeners) {
        try {
          listener(change);
        } catch (err) {
          this.#log.error({ err: errorText(err) }, 'a change listener failed');
        }
      }
    });
  }
}

/**
 * The log line for 401 and 403: which credentials or which RBAC grant is missing, in words an
 * operator can act on (deploy/clusterrole.yaml grants exactly API_ACCESS).
 */
export function permissionProblem(status: number, r: ApiResource): string | undefined {
  const what = `${r.resource}${r.group === '' ? '' : `.${r.group}`}`;
  if (status === 401)
    return `unauthorized (HTTP 401): the API server does not accept kproxy's credentials while listing/watching ${what}; check the kubeconfig's token or certificate, or the service account token`;
  if (status === 403)
    return `forbidden (HTTP 403): kproxy may not list/watch ${what}; its identity needs RBAC verbs [list, watch] on resource "${r.resource}" in API group "${r.group}"${r.group === '' ? ' (core)' : ''} for all namespaces (deploy/clusterrole.yaml grants exactly what kproxy uses)`;
  return undefined;
}
