/**
 * @module source/api-source
 * The daemon's cluster source: @kubernetes/client-node informers (`ListWatch`) on Services,
 * EndpointSlices, this node's Node (field selector) and, when the API serves them, ServiceCIDRs.
 *
 * Each object is validated by `normalizeObject` when it arrives, so the in-memory view only ever
 * holds validated objects and a sync never re-validates the cluster. A bad object is logged with
 * its identity and skipped; it never removes or disturbs other objects; an object that was valid
 * and becomes invalid leaves kproxy's view (logged), as if deleted.
 *
 * What client-node does and does not do (read from its `cache.js` / `watch.js`, v2.0.1):
 * - After a list it deletes cached objects absent from the new list (DELETE callbacks), so a relist
 *   converges, deletions missed while disconnected included.
 * - A watch that ends cleanly is reopened by the ListWatch itself (its own 1 s → 30 s backoff, here
 *   scaled to ours); an ERROR event with code 410 makes that reopening a relist.
 * - Any other failure (a failed list, a non-200 watch, a dropped connection) is reported through
 *   the `error` callback and the ListWatch stops for good. We restart it with jittered exponential
 *   backoff; the cache is kept as it was, and the restart resumes from the last resourceVersion
 *   (a 410 there turns into a relist).
 * - It never asks for bookmarks: our `Watch` subclass adds `allowWatchBookmarks=true` and a
 *   server-side `timeoutSeconds`, and refuses to open a watch once we are stopped (the ListWatch
 *   would otherwise reconnect after `stop()` when stopped during its backoff sleep).
 * - Its list function is ours: a raw GET through the kubeconfig's credentials, so objects reach
 *   normalization as the server sent them (the generated typed client drops and converts fields).
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';
import {
  ListWatch,
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import type { ClusterSnapshot } from '../model/cluster.ts';
import type { Logger } from '../util/log.ts';
import { formatProblem, type Problem } from '../util/problems.ts';
import { normalizeObject, snapshotFrom, type KindValues, type ObjectKind } from './normalize.ts';

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
  readonly kubeConfig: KubeConfig;
  readonly nodeName: string;
  readonly log: Logger;
  /** Restart backoff after failures; doubles per consecutive failure, jittered, capped. Default 800 ms → 30 s. */
  readonly backoff?: Backoff;
  /** A watch with no traffic (not even a bookmark) for this long is reopened. Default 120 s. */
  readonly watchIdleTimeoutMs?: number;
  /** Timeout of one list or discovery request. Default 60 s. */
  readonly requestTimeoutMs?: number;
  /** [0, 1) source for jitter (tests). */
  readonly random?: () => number;
}

/** Objects with more JSON than this are kept only as a stub (identity) and skipped with a problem. */
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

/** What each cache lists and watches; `start()` and the ServiceCIDR discovery build their URLs from this. */
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
 * a field selector, which RBAC checks as `list`) and watches, never GETs one object. The discovery
 * GET of `/apis/networking.k8s.io/v1` is a non-resource URL every authenticated user may read
 * (built-in `system:discovery`). Events (`daemon/events.ts`): a `Starting` Event on this node's Node
 * (namespace "default") and Warnings on Services (their namespace), each a core v1 create; no
 * patch (repeats are not aggregated) and no events.k8s.io. Change this when that code changes.
 */
export const API_ACCESS: readonly ApiAccess[] = [
  ...Object.values(INFORMED).map(
    (r): ApiAccess => ({ group: r.group, resource: r.resource, verbs: ['list', 'watch'] }),
  ),
  { group: '', resource: 'events', verbs: ['create'] },
];

/** `/api/v1` or `/apis/GROUP/VERSION`. */
function groupVersionPath(r: ApiResource): string {
  return r.group === '' ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`;
}

function resourcePath(r: ApiResource): string {
  return `${groupVersionPath(r)}/${r.resource}`;
}

interface ResourceDef {
  readonly name: CacheName;
  readonly kind: ObjectKind;
  readonly path: string;
  readonly fieldSelector?: string;
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

/** Stubs standing in for oversized objects, with their JSON size. */
const oversized = new WeakMap<object, number>();

class ApiSource implements ClusterSource {
  readonly #kc: KubeConfig;
  readonly #nodeName: string;
  readonly #log: Logger;
  readonly #backoff: Backoff;
  readonly #random: () => number;
  readonly #watchIdleTimeoutMs: number;
  readonly #requestTimeoutMs: number;
  readonly #stop = new AbortController();
  readonly #listeners: ((c: SourceChange) => void)[] = [];
  readonly #stores: Stores = { Service: new Map(), EndpointSlice: new Map(), Node: new Map(), ServiceCIDR: new Map() };
  readonly #reflectors = new Map<CacheName, Reflector>();
  #serviceCIDRsNotServed = false;
  #started = false;
  #snapshot: ClusterSnapshot | undefined;
  #pending: PendingChange | undefined;
  #flushQueued = false;

  constructor(opts: ApiSourceOptions) {
    this.#kc = opts.kubeConfig;
    this.#nodeName = opts.nodeName;
    this.#log = opts.log.child({ component: 'api-source' });
    this.#backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.#random = opts.random ?? Math.random;
    this.#watchIdleTimeoutMs = opts.watchIdleTimeoutMs ?? 120_000;
    this.#requestTimeoutMs = opts.requestTimeoutMs ?? 60_000;
  }

  get stopped(): boolean {
    return this.#stop.signal.aborted;
  }

  get stopSignal(): AbortSignal {
    return this.#stop.signal;
  }

  get log(): Logger {
    return this.#log;
  }

  get kubeConfig(): KubeConfig {
    return this.#kc;
  }

  get watchIdleTimeoutMs(): number {
    return this.#watchIdleTimeoutMs;
  }

  get requestTimeoutMs(): number {
    return this.#requestTimeoutMs;
  }

  async start(): Promise<void> {
    if (this.#started) throw new Error('the API source was already started');
    this.#started = true;
    const defs: ResourceDef[] = [
      { name: 'services', kind: 'Service', path: resourcePath(INFORMED.services) },
      { name: 'endpointSlices', kind: 'EndpointSlice', path: resourcePath(INFORMED.endpointSlices) },
      {
        name: 'node',
        kind: 'Node',
        path: resourcePath(INFORMED.node),
        fieldSelector: `metadata.name=${this.#nodeName}`,
      },
    ];
    for (const def of defs) this.#startReflector(def);
    void this.#discoverServiceCIDRs();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.#stop.abort();
    await Promise.all([...this.#reflectors.values()].map((r) => r.stop()));
  }

  isSynced(): boolean {
    return Object.values(this.syncedDetail()).every(Boolean);
  }

  syncedDetail(): Record<string, boolean> {
    const synced = (name: CacheName): boolean => this.#reflectors.get(name)?.synced ?? false;
    return {
      services: synced('services'),
      endpointSlices: synced('endpointSlices'),
      node: synced('node'),
      serviceCIDRs: this.#serviceCIDRsNotServed || synced('serviceCIDRs'),
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
  backoffDelay(failures: number): number {
    const base = Math.min(this.#backoff.maxMs, this.#backoff.initialMs * 2 ** Math.min(30, Math.max(0, failures - 1)));
    return Math.round(base / 2 + (this.#random() * base) / 2);
  }

  /** client-node's own reconnect delays (1 s doubling to 30 s) mapped onto our backoff. */
  scaledDelay(clientNodeMs: number): number {
    const base = Math.min(this.#backoff.maxMs, (clientNodeMs / 1000) * this.#backoff.initialMs);
    return Math.round(base / 2 + (this.#random() * base) / 2);
  }

  // -------------------------------------------------------------------------------------------
  // Caches

  #startReflector(def: ResourceDef): void {
    const r = new Reflector(this, def);
    this.#reflectors.set(def.name, r);
    r.start();
  }

  async #discoverServiceCIDRs(): Promise<void> {
    const path = groupVersionPath(INFORMED.serviceCIDRs);
    for (let failures = 1; !this.stopped; failures++) {
      try {
        const res = await getJson(this.#kc, path, {}, this.#stop.signal, this.#requestTimeoutMs);
        if (this.stopped) return;
        let served = false;
        if (res.status === 200) {
          const resources = isRecord(res.body) && Array.isArray(res.body['resources']) ? res.body['resources'] : [];
          served = resources.some((r: unknown) => isRecord(r) && r['name'] === INFORMED.serviceCIDRs.resource);
        } else if (res.status !== 404) {
          throw new ApiError(`GET ${path}`, res.status, res.body);
        }
        if (served) {
          this.#startReflector({
            name: 'serviceCIDRs',
            kind: 'ServiceCIDR',
            path: resourcePath(INFORMED.serviceCIDRs),
          });
        } else {
          this.#serviceCIDRsNotServed = true;
          this.#log.info(
            'the API server does not serve networking.k8s.io/v1 servicecidrs: running without ServiceCIDRs',
          );
          this.cacheSynced('serviceCIDRs');
        }
        return;
      } catch (err) {
        if (this.stopped) return;
        const delayMs = this.backoffDelay(failures);
        this.#log.warn({ err: errorText(err), retryInMs: delayMs }, 'API discovery for ServiceCIDRs failed; retrying');
        try {
          await sleep(delayMs, undefined, { signal: this.#stop.signal });
        } catch {
          return;
        }
      }
    }
  }

  /** A cache completed its first list. */
  cacheSynced(name: CacheName): void {
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

  /** An informer callback: one object added, updated or deleted in client-node's cache. */
  objectEvent(kind: ObjectKind, event: 'add' | 'update' | 'delete', raw: KubernetesObject): void {
    if (this.stopped) return;
    try {
      this.#apply(kind, event, raw);
    } catch (err) {
      this.#log.error(
        { kind, object: rawIdentity(raw), err: errorText(err) },
        'unexpected error handling an object; it is skipped',
      );
    }
  }

  #apply<K extends ObjectKind>(kind: K, event: 'add' | 'update' | 'delete', raw: KubernetesObject): void {
    const id = rawIdentity(raw);
    const store = this.#stores[kind];
    const prev = store.get(id);
    const next = event === 'delete' ? undefined : this.#validate(kind, raw);
    if (next === undefined) {
      if (prev === undefined) return;
      store.delete(id);
      if (event !== 'delete')
        this.#log.warn({ kind, object: id }, `${kind} ${id} is no longer valid; removed from kproxy's view`);
    } else {
      if (prev !== undefined && isDeepStrictEqual(prev, next)) return;
      store.set(id, next);
    }
    this.#noteChange(kind, prev, next);
  }

  #validate<K extends ObjectKind>(kind: K, raw: KubernetesObject): KindValues[K] | undefined {
    const size = oversized.get(raw);
    if (size !== undefined) {
      this.#report({
        kind,
        object: rawIdentity(raw),
        path: '',
        message: `the object is ${size} characters of JSON, more than the limit of ${MAX_OBJECT_JSON_CHARS}; ${kind} skipped`,
      });
      return undefined;
    }
    const n = normalizeObject(kind, raw, this.#nodeName);
    for (const p of n.problems) this.#report(p);
    return n.value;
  }

  #report(p: Problem): void {
    this.#log.warn({ kind: p.kind, object: p.object, path: p.path || undefined }, `invalid input: ${formatProblem(p)}`);
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
      if (this.stopped) return;
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

// ---------------------------------------------------------------------------------------------
// One informer, restarted after failures.

class Reflector {
  readonly #source: ApiSource;
  readonly #def: ResourceDef;
  readonly #lw: ListWatch<KubernetesObject>;
  #failures = 0;
  #restartPending = false;
  #listedOnce = false;
  #synced = false;

  constructor(source: ApiSource, def: ResourceDef) {
    this.#source = source;
    this.#def = def;
    this.#lw = new ListWatch<KubernetesObject>(
      def.path,
      new GuardedWatch(source.kubeConfig, this, source.watchIdleTimeoutMs),
      () => this.#list(),
      false,
      undefined,
      def.fieldSelector,
      { delayFn: (ms) => this.#sleep(source.scaledDelay(ms)) },
    );
    this.#lw.on('add', (obj) => source.objectEvent(def.kind, 'add', obj));
    this.#lw.on('update', (obj) => source.objectEvent(def.kind, 'update', obj));
    this.#lw.on('delete', (obj) => source.objectEvent(def.kind, 'delete', obj));
    this.#lw.on('error', (err) => this.#failed(err));
    this.#lw.on('connect', () => this.log.debug({ cache: def.name }, 'watch (re)connecting'));
  }

  get synced(): boolean {
    return this.#synced;
  }

  get active(): boolean {
    return !this.#source.stopped;
  }

  get log(): Logger {
    return this.#source.log;
  }

  get cacheName(): CacheName {
    return this.#def.name;
  }

  start(): void {
    void this.#run();
  }

  async stop(): Promise<void> {
    await this.#lw.stop();
  }

  /** Server-side watch timeout, spread like client-go's (5 to 10 minutes) so reconnections do not align. */
  watchTimeoutSeconds(): number {
    return 300 + Math.floor(Math.random() * 300);
  }

  /** GuardedWatch: a watch is about to open, so the list it follows (if any) has been applied. */
  watchOpening(): void {
    if (this.#synced) return;
    this.#synced = true;
    this.#source.cacheSynced(this.#def.name);
  }

  /** GuardedWatch: the stream delivered something, so the connection works. */
  healthy(): void {
    this.#failures = 0;
  }

  async #run(): Promise<void> {
    if (!this.active) return;
    try {
      await this.#lw.start();
    } catch (err) {
      // Not expected (failures go to the error callback), but never leave the cache unwatched.
      this.#failed(err);
    }
  }

  #failed(err: unknown): void {
    if (!this.active || this.#restartPending) return;
    this.#failures += 1;
    const delayMs = this.#source.backoffDelay(this.#failures);
    this.#restartPending = true;
    this.log.warn(
      { cache: this.#def.name, err: errorText(err), failures: this.#failures, retryInMs: delayMs },
      'list/watch failed; keeping the cache as it is and restarting',
    );
    void (async () => {
      await this.#sleep(delayMs);
      this.#restartPending = false;
      await this.#run();
    })();
  }

  /** Resolves after `ms`, or at once when the source stops. */
  async #sleep(ms: number): Promise<void> {
    try {
      await sleep(ms, undefined, { signal: this.#source.stopSignal });
    } catch {
      // stopped
    }
  }

  async #list(): Promise<KubernetesListObject<KubernetesObject>> {
    const query: Record<string, string> = {};
    if (this.#def.fieldSelector !== undefined) query['fieldSelector'] = this.#def.fieldSelector;
    // The first list may come from the API server's watch cache; later ones (after a 410) read through.
    if (!this.#listedOnce) query['resourceVersion'] = '0';
    const res = await getJson(
      this.#source.kubeConfig,
      this.#def.path,
      query,
      this.#source.stopSignal,
      this.#source.requestTimeoutMs,
    );
    if (res.status !== 200) throw new ApiError(`list ${this.#def.path}`, res.status, res.body);
    const body = res.body;
    if (!isRecord(body) || !Array.isArray(body['items']))
      throw new Error(`list ${this.#def.path}: the answer is not a list`);
    const meta = isRecord(body['metadata']) ? body['metadata'] : {};
    const resourceVersion = typeof meta['resourceVersion'] === 'string' ? meta['resourceVersion'] : '';
    const items: KubernetesObject[] = [];
    let malformed = 0;
    for (const item of body['items'] as unknown[]) {
      if (isKubeObject(item)) items.push(bounded(item));
      else malformed += 1;
    }
    if (malformed > 0) {
      this.log.warn({ cache: this.#def.name, count: malformed }, 'list items without metadata.name skipped');
    }
    this.#listedOnce = true;
    this.#failures = 0;
    this.log.debug({ cache: this.#def.name, objects: items.length, resourceVersion }, 'listed');
    return { metadata: { resourceVersion }, items };
  }
}

/**
 * client-node's `Watch`, plus: bookmarks and a server-side timeout requested; no watch opened once
 * the source is stopped; malformed and oversized objects filtered before they reach the cache; a
 * synchronous throw (credentials, kubeconfig) reported through `done` instead of escaping.
 */
class GuardedWatch extends Watch {
  readonly #owner: Reflector;

  constructor(kc: KubeConfig, owner: Reflector, idleTimeoutMs: number) {
    super(kc);
    this.#owner = owner;
    // Private in the typings; the inactivity timeout after which the watch is reopened.
    Reflect.set(this, 'requestTimeoutMs', idleTimeoutMs);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    const owner = this.#owner;
    if (!owner.active) return new AbortController(); // never calls done: the ListWatch goes quiet
    owner.watchOpening();
    const params = { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: owner.watchTimeoutSeconds() };
    const filtered = (phase: string, obj: unknown, watchObj?: unknown): void => {
      if (!owner.active) return;
      switch (phase) {
        case 'ADDED':
        case 'MODIFIED':
        case 'DELETED':
          if (!isKubeObject(obj)) {
            owner.log.warn(
              { cache: owner.cacheName, event: phase },
              'watch event without an object with metadata.name skipped',
            );
            return;
          }
          owner.healthy();
          callback(phase, bounded(obj), watchObj);
          return;
        case 'BOOKMARK':
          owner.healthy();
          if (isRecord(obj) && isRecord(obj['metadata'])) callback(phase, obj, watchObj);
          return;
        case 'ERROR': {
          const code = isRecord(obj) ? obj['code'] : undefined;
          const message = isRecord(obj) && typeof obj['message'] === 'string' ? safeText(obj['message']) : '';
          if (code === 410)
            owner.log.info({ cache: owner.cacheName, message }, 'resource version expired; listing again');
          else owner.log.warn({ cache: owner.cacheName, code, message }, 'watch error event');
          callback(phase, isRecord(obj) ? obj : {}, watchObj);
          return;
        }
        default:
          owner.log.debug(
            { cache: owner.cacheName, event: safeText(String(phase)) },
            'unknown watch event type ignored',
          );
      }
    };
    let controller: AbortController;
    try {
      controller = await super.watch(path, params, filtered, done);
    } catch (err) {
      done(err);
      return new AbortController();
    }
    // Stopped while the request was in flight: the ListWatch had no request to abort yet.
    if (!owner.active) controller.abort();
    return controller;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

class ApiError extends Error {
  readonly statusCode: number;
  constructor(what: string, statusCode: number, body: unknown) {
    const message = isRecord(body) && typeof body['message'] === 'string' ? `: ${safeText(body['message'])}` : '';
    super(`${what}: HTTP ${statusCode}${message}`);
    this.statusCode = statusCode;
  }
}

/** GET `path` (relative to the cluster's server URL) with the kubeconfig's credentials; JSON body or undefined. */
async function getJson(
  kc: KubeConfig,
  path: string,
  query: Record<string, string>,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<{ status: number; body: unknown }> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  const url = new URL(cluster.server.replace(/\/+$/, '') + path);
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
  const opts: RequestOptions = { method: 'GET', headers: { Accept: 'application/json' } };
  await kc.applyToHTTPSOptions(opts);
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(url, { ...opts, signal, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          if (res.statusCode === 200) {
            reject(new Error(`GET ${path}: the answer is not JSON`));
            return;
          }
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Enough shape for client-node's cache (it keys by metadata.namespace and metadata.name). */
function isKubeObject(v: unknown): v is KubernetesObject {
  if (!isRecord(v) || !isRecord(v['metadata'])) return false;
  const { name, namespace } = v['metadata'];
  return typeof name === 'string' && name !== '' && (namespace === undefined || typeof namespace === 'string');
}

/** The object, or a stub holding only its identity when its JSON is over the limit. */
function bounded(obj: KubernetesObject): KubernetesObject {
  let size: number;
  try {
    size = JSON.stringify(obj).length;
  } catch {
    size = Number.POSITIVE_INFINITY;
  }
  if (size <= MAX_OBJECT_JSON_CHARS) return obj;
  const m = obj.metadata ?? {};
  const stub: KubernetesObject = {
    ...(obj.apiVersion !== undefined ? { apiVersion: obj.apiVersion } : {}),
    ...(obj.kind !== undefined ? { kind: obj.kind } : {}),
    metadata: {
      ...(m.name !== undefined ? { name: m.name } : {}),
      ...(m.namespace !== undefined ? { namespace: m.namespace } : {}),
      ...(m.resourceVersion !== undefined ? { resourceVersion: m.resourceVersion } : {}),
      ...(m.uid !== undefined ? { uid: m.uid } : {}),
    },
  };
  oversized.set(stub, size);
  return stub;
}

/** The identity client-node's cache uses: `namespace/name`, or `name` when cluster-scoped. */
function rawIdentity(obj: KubernetesObject): string {
  const ns = obj.metadata?.namespace ?? '';
  const name = obj.metadata?.name ?? '';
  return ns === '' ? name : `${ns}/${name}`;
}

/** One line of printable ASCII, at most 200 characters. */
function safeText(s: string): string {
  const clean = s.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return clean.length > 200 ? `${clean.slice(0, 200)}...` : clean;
}

function errorText(err: unknown): string {
  if (!(err instanceof Error)) return safeText(String(err));
  const cause = err.cause instanceof Error && err.cause.message !== err.message ? ` (${err.cause.message})` : '';
  return safeText(`${err.message}${cause}`);
}
