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
 * - Its cache keeps whatever the list and the watch hand it, for ever: we hand it `CacheStub`s
 *   (identity and resourceVersion), and only kproxy's stores hold the objects, normalized.
 *
 * Start-up (docs/adr/0007): loading client-node takes 1–2 s of CPU (its generated models), more
 * than everything else kproxy loads together. Given a `bootstrap` endpoint (`bootstrapEndpoint`:
 * the kubeconfig's server and plain credentials, read without client-node), the first list of
 * each cache goes out at once and fills the caches; client-node is loaded afterwards
 * (`informersAfter`, e.g. once the first sync is done) and its informers start from those lists'
 * resourceVersions, so nothing between the list and the watch is missed.
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';
import type { KubeConfig, KubernetesListObject, KubernetesObject, ListWatch, Watch } from '@kubernetes/client-node';
import type { ClusterSnapshot, EndpointSlice, Service } from '../model/cluster.ts';
import type { Logger } from '../util/log.ts';
import { jsonLongerThan } from '../util/json-size.ts';
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

export interface ServiceSelection {
  readonly services: readonly Service[];
  readonly endpointSlices: readonly EndpointSlice[];
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
   * The current Services and EndpointSlices of these Services (`namespace/name`), from the
   * source's own indexes: a partial sync then costs the change, not a sorted copy of the whole
   * cluster (20k objects at 10,000 Services). Optional; without it the proxier filters `snapshot()`.
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

/**
 * Where the API server is and how to authenticate, read without client-node (`bootstrapEndpoint`),
 * for the first lists only: later lists and every watch go through client-node's KubeConfig.
 */
export interface ApiEndpoint {
  /** `https://host:port` (or `http://`). */
  readonly server: string;
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** False only when the kubeconfig says `insecure-skip-tls-verify: true`. */
  readonly rejectUnauthorized: boolean;
  readonly servername?: string;
  readonly token?: string;
}

export interface ApiSourceOptions {
  /**
   * client-node's KubeConfig, or a function loading it (with `bootstrap`, called only once the
   * first lists are in and `informersAfter` has settled: loading client-node is the largest part
   * of kproxy's start-up).
   */
  readonly kubeConfig: KubeConfig | (() => Promise<KubeConfig>);
  /** Sends the first list of each cache without client-node (see `bootstrapEndpoint`); absent: informers list. */
  readonly bootstrap?: ApiEndpoint;
  /**
   * With `bootstrap`: the informers (and client-node) start when this settles, or 3 s after the
   * first lists at the latest; at once when a first list failed. Default: right after the lists.
   */
  readonly informersAfter?: Promise<unknown>;
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

/** client-node's classes the informers use, loaded when the informers start. */
interface InformerClasses {
  readonly ListWatch: typeof ListWatch;
  readonly GuardedWatch: GuardedWatchClass;
}

class ApiSource implements ClusterSource {
  readonly #kcSource: KubeConfig | (() => Promise<KubeConfig>);
  #kc: KubeConfig | undefined;
  readonly #bootstrap: ApiEndpoint | undefined;
  readonly #informersAfter: Promise<unknown> | undefined;
  #classes: InformerClasses | undefined;
  /** Reflectors asked for before the informer classes were loaded. */
  readonly #queued: ResourceDef[] = [];
  /** First lists made through the bootstrap endpoint, handed to each informer's first list. */
  readonly #prefetched = new Map<CacheName, Promise<KubernetesListObject<CacheStub> | undefined>>();
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
  /** Service key (`namespace/name`) → the ids of its EndpointSlices in the store. */
  readonly #slicesByService = new Map<string, Set<string>>();
  readonly #reflectors = new Map<CacheName, Reflector>();
  #serviceCIDRsNotServed = false;
  #started = false;
  #snapshot: ClusterSnapshot | undefined;
  #pending: PendingChange | undefined;
  #flushQueued = false;

  constructor(opts: ApiSourceOptions) {
    this.#kcSource = opts.kubeConfig;
    if (typeof opts.kubeConfig !== 'function') this.#kc = opts.kubeConfig;
    this.#bootstrap = opts.bootstrap;
    this.#informersAfter = opts.informersAfter;
    this.#nodeName = opts.nodeName;
    this.#log = opts.log.child({ component: 'api-source' });
    this.#onProblem = opts.onProblem;
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

  /** Set once the informers start (reflectors exist only from then on). */
  get kubeConfig(): KubeConfig {
    if (!this.#kc) throw new Error('the KubeConfig is not loaded yet');
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
    // With a bootstrap endpoint the first lists go out now, before client-node is even loaded.
    const sent: Promise<void>[] = [];
    if (this.#bootstrap) {
      for (const def of defs) {
        const wire = Promise.withResolvers<void>();
        sent.push(wire.promise);
        this.#prefetched.set(def.name, this.#prefetch(def, wire.resolve));
      }
    }
    for (const def of defs) this.#startReflector(def);
    // Without one, the informers start first (as they always did), then discovery.
    if (this.#bootstrap) void this.#startInformers();
    else await this.#startInformers();
    if (this.#bootstrap) void this.#prefetchServiceCIDRs();
    else void this.#discoverServiceCIDRs();
    // Returns once the first lists are on the wire (at most 100 ms): the caller's next module loads
    // block the event loop, and a request not yet written would wait for them.
    if (sent.length > 0) await Promise.race([Promise.all(sent), sleep(100, undefined, { ref: false })]);
  }

  /** Loads client-node (and the KubeConfig) when it is time, then starts the queued reflectors. */
  async #startInformers(): Promise<void> {
    try {
      if (this.#bootstrap) {
        const firstLists = Promise.all(this.#prefetched.values());
        const lists = await firstLists;
        // A failed first list needs its informer now; otherwise wait for the caller's signal (bounded).
        if (lists.every((l) => l !== undefined) && this.#informersAfter) {
          await Promise.race([this.#informersAfter.catch(() => undefined), sleep(3000, undefined, { ref: false })]);
        }
      }
      if (this.stopped) return;
      const [kc, classes] = await Promise.all([
        this.#kc ?? (this.#kcSource as () => Promise<KubeConfig>)(),
        loadInformerClasses(),
      ]);
      this.#kc = kc;
      this.#classes = classes;
      if (this.stopped) return;
      for (const def of this.#queued.splice(0)) this.#createReflector(def);
    } catch (err) {
      this.#log.error({ err: errorText(err) }, 'cannot start the informers (kubeconfig or client library)');
    }
  }

  /** The first list of a cache through the bootstrap endpoint, applied at once; undefined if it failed. */
  async #prefetch(def: ResourceDef, onSent: () => void): Promise<KubernetesListObject<CacheStub> | undefined> {
    try {
      const list = await listResource(this, def, true, this.#bootstrapTarget(), onSent);
      if (this.stopped) return undefined;
      for (const item of list.items) this.objectEvent(def.kind, 'add', item);
      this.cacheSynced(def.name);
      return list;
    } catch (err) {
      onSent();
      if (!this.stopped)
        this.#log.info({ cache: def.name, err: errorText(err) }, 'first list failed; the informer lists');
      return undefined;
    }
  }

  /** The bootstrap list of a cache, once (the informer's first list); undefined: list normally. */
  takePrefetched(name: CacheName): Promise<KubernetesListObject<CacheStub> | undefined> | undefined {
    const p = this.#prefetched.get(name);
    this.#prefetched.delete(name);
    return p;
  }

  #bootstrapTarget(): HttpTarget {
    const ep = this.#bootstrap;
    if (!ep) throw new Error('no bootstrap endpoint');
    return endpointTarget(ep);
  }

  /** Where requests go: client-node's KubeConfig once loaded, else the bootstrap endpoint. */
  async httpTarget(): Promise<HttpTarget> {
    if (this.#kc) return kubeConfigTarget(this.#kc);
    if (this.#bootstrap) return this.#bootstrapTarget();
    await until(() => this.#kc !== undefined || this.stopped, this.#stop.signal);
    return kubeConfigTarget(this.kubeConfig);
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
    const synced = (name: CacheName): boolean => this.#synced.has(name);
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

  /** The backoff's ceiling (a Retry-After is honoured up to it). */
  get maxBackoffMs(): number {
    return this.#backoff.maxMs;
  }

  /** client-node's own reconnect delays (1 s doubling to 30 s) mapped onto our backoff. */
  scaledDelay(clientNodeMs: number): number {
    const base = Math.min(this.#backoff.maxMs, (clientNodeMs / 1000) * this.#backoff.initialMs);
    return Math.round(base / 2 + (this.#random() * base) / 2);
  }

  // -------------------------------------------------------------------------------------------
  // Caches

  #startReflector(def: ResourceDef): void {
    if (this.#classes) this.#createReflector(def);
    else this.#queued.push(def);
  }

  #createReflector(def: ResourceDef): void {
    if (!this.#classes || this.stopped) return;
    const r = new Reflector(this, def, this.#classes);
    this.#reflectors.set(def.name, r);
    r.start();
  }

  /**
   * With a bootstrap endpoint: ServiceCIDRs are listed at once, like the other caches (no
   * discovery round trip first); a 404 means the API does not serve them; any other failure
   * falls back to discovery.
   */
  async #prefetchServiceCIDRs(): Promise<void> {
    const def: ResourceDef = { name: 'serviceCIDRs', kind: 'ServiceCIDR', path: resourcePath(INFORMED.serviceCIDRs) };
    try {
      const list = await listResource(this, def, true, this.#bootstrapTarget());
      if (this.stopped) return;
      for (const item of list.items) this.objectEvent(def.kind, 'add', item);
      this.#prefetched.set(def.name, Promise.resolve(list));
      this.cacheSynced(def.name);
      this.#startReflector(def);
    } catch (err) {
      if (this.stopped) return;
      if (err instanceof ApiError && err.statusCode === 404) {
        this.#serviceCIDRsNotServed = true;
        this.#log.info('the API server does not serve networking.k8s.io/v1 servicecidrs: running without ServiceCIDRs');
        this.cacheSynced('serviceCIDRs');
        return;
      }
      await this.#discoverServiceCIDRs();
    }
  }

  async #discoverServiceCIDRs(): Promise<void> {
    const path = groupVersionPath(INFORMED.serviceCIDRs);
    for (let failures = 1; !this.stopped; failures++) {
      try {
        const res = await getJson(await this.httpTarget(), path, {}, this.#stop.signal, this.#requestTimeoutMs);
        if (this.stopped) return;
        let served = false;
        if (res.status === 200) {
          const resources = isRecord(res.body) && Array.isArray(res.body['resources']) ? res.body['resources'] : [];
          served = resources.some((r: unknown) => isRecord(r) && r['name'] === INFORMED.serviceCIDRs.resource);
        } else if (res.status !== 404) {
          throw new ApiError(`GET ${path}`, res.status, res.body);
        }
        if (served) {
          const def: ResourceDef = {
            name: 'serviceCIDRs',
            kind: 'ServiceCIDR',
            path: resourcePath(INFORMED.serviceCIDRs),
          };
          if (this.#bootstrap && !this.#classes)
            this.#prefetched.set(
              def.name,
              this.#prefetch(def, () => {}),
            );
          this.#startReflector(def);
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

  /** A cache completed its first list (a second report of it is ignored). */
  cacheSynced(name: CacheName): void {
    if (this.#synced.has(name)) return;
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

  /**
   * An informer callback: client-node's cache took `stub` for an added or updated object (the
   * object is its `arrived`, taken here), or let it go (deleted).
   */
  objectEvent(kind: ObjectKind, event: 'add' | 'update' | 'delete', stub: CacheStub): void {
    if (this.stopped) return;
    const raw = stub.arrived;
    stub.arrived = undefined;
    // Taken already: the informer replaying the bootstrap list, applied when it arrived.
    if (event !== 'delete' && raw === undefined) return;
    try {
      this.#apply(kind, rawIdentity(stub), event === 'delete' ? undefined : raw);
    } catch (err) {
      this.#log.error(
        { kind, object: rawIdentity(stub), err: errorText(err) },
        'unexpected error handling an object; it is skipped',
      );
    }
  }

  /** Sets the object `id` of the store from `raw` (validated), or deletes it (`raw` undefined). */
  #apply<K extends ObjectKind>(kind: K, id: string, raw: KubernetesObject | undefined): void {
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
      const ids = this.#slicesByService.get(key(prev));
      ids?.delete(id);
      if (ids?.size === 0) this.#slicesByService.delete(key(prev));
    }
    if (next) {
      const ids = this.#slicesByService.get(key(next));
      if (ids) ids.add(id);
      else this.#slicesByService.set(key(next), new Set([id]));
    }
  }

  select(services: ReadonlySet<string>): ServiceSelection {
    const out = { services: [] as Service[], endpointSlices: [] as EndpointSlice[] };
    for (const key of services) {
      const service = this.#stores.Service.get(key);
      if (service) out.services.push(service);
      for (const id of this.#slicesByService.get(key) ?? []) {
        const slice = this.#stores.EndpointSlice.get(id);
        if (slice) out.endpointSlices.push(slice);
      }
    }
    return out;
  }

  #validate<K extends ObjectKind>(kind: K, id: string, raw: KubernetesObject): KindValues[K] | undefined {
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
  readonly #lw: ListWatch<CacheStub>;
  #failures = 0;
  #restartPending = false;
  /** The 401/403 last reported for this cache (reported again only after it changed or cleared). */
  #denied: number | undefined;
  #listedOnce = false;
  #synced = false;

  constructor(source: ApiSource, def: ResourceDef, classes: InformerClasses) {
    this.#source = source;
    this.#def = def;
    this.#lw = new classes.ListWatch<CacheStub>(
      def.path,
      new classes.GuardedWatch(source.kubeConfig, this, source.watchIdleTimeoutMs),
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
    this.#denied = undefined;
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
    // A Retry-After (429, 503) is honoured, within the backoff's ceiling.
    const retryAfter = err instanceof ApiError ? err.retryAfterMs : undefined;
    const backoff = this.#source.backoffDelay(this.#failures);
    const delayMs =
      retryAfter === undefined ? backoff : Math.max(backoff, Math.min(retryAfter, this.#source.maxBackoffMs));
    this.#restartPending = true;
    const status = statusOf(err);
    const denied = status === undefined ? undefined : permissionProblem(status, INFORMED[this.#def.name]);
    if (denied && this.#denied !== status) {
      // Said once per cache and status, at error level: retrying will not fix it until someone acts.
      this.log.error({ cache: this.#def.name, status, retryInMs: delayMs }, denied);
    }
    this.#denied = denied ? status : undefined;
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

  async #list(): Promise<KubernetesListObject<CacheStub>> {
    const prefetched = await this.#source.takePrefetched(this.#def.name);
    if (prefetched) {
      this.#listedOnce = true;
      return prefetched;
    }
    const list = await listResource(this.#source, this.#def, !this.#listedOnce, await this.#source.httpTarget());
    this.#listedOnce = true;
    this.#failures = 0;
    this.#denied = undefined;
    return list;
  }
}

/** One LIST of a resource, as cache stubs (malformed items skipped). */
async function listResource(
  source: ApiSource,
  def: ResourceDef,
  first: boolean,
  target: HttpTarget,
  onSent?: () => void,
): Promise<KubernetesListObject<CacheStub>> {
  const query: Record<string, string> = {};
  if (def.fieldSelector !== undefined) query['fieldSelector'] = def.fieldSelector;
  // The first list may come from the API server's watch cache; later ones (after a 410) read through.
  if (first) query['resourceVersion'] = '0';
  const res = await getJson(target, def.path, query, source.stopSignal, source.requestTimeoutMs, onSent);
  if (res.status !== 200) throw new ApiError(`list ${def.path}`, res.status, res.body, res.retryAfterMs);
  const body = res.body;
  if (!isRecord(body) || !Array.isArray(body['items'])) throw new Error(`list ${def.path}: the answer is not a list`);
  const meta = isRecord(body['metadata']) ? body['metadata'] : {};
  const resourceVersion = typeof meta['resourceVersion'] === 'string' ? meta['resourceVersion'] : '';
  const items: CacheStub[] = [];
  let malformed = 0;
  for (const item of body['items'] as unknown[]) {
    if (isKubeObject(item)) items.push(cacheStub(item));
    else malformed += 1;
  }
  if (malformed > 0) {
    source.log.warn({ cache: def.name, count: malformed }, 'list items without metadata.name skipped');
  }
  source.log.debug({ cache: def.name, objects: items.length, resourceVersion }, 'listed');
  return { metadata: { resourceVersion }, items };
}

/**
 * client-node's `Watch`, plus: bookmarks and a server-side timeout requested; no watch opened once
 * the source is stopped; malformed objects filtered, the others handed on as cache stubs; a
 * synchronous throw (credentials, kubeconfig) reported through `done` instead of escaping.
 */
type GuardedWatchClass = new (kc: KubeConfig, owner: Reflector, idleTimeoutMs: number) => Watch;

/** client-node's informer classes, loaded on first use (client-node is most of kproxy's start-up). */
let informerClasses: Promise<InformerClasses> | undefined;
function loadInformerClasses(): Promise<InformerClasses> {
  informerClasses ??= import('@kubernetes/client-node').then((k) => ({
    ListWatch: k.ListWatch,
    GuardedWatch: guardedWatchClass(k.Watch),
  }));
  return informerClasses;
}

function guardedWatchClass(WatchBase: typeof Watch): GuardedWatchClass {
  return class GuardedWatch extends WatchBase {
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
            callback(phase, cacheStub(obj), watchObj);
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
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers

class ApiError extends Error {
  readonly statusCode: number;
  /** The answer's Retry-After (429, 503), in ms. */
  readonly retryAfterMs: number | undefined;
  constructor(what: string, statusCode: number, body: unknown, retryAfterMs?: number) {
    const message = isRecord(body) && typeof body['message'] === 'string' ? `: ${safeText(body['message'])}` : '';
    super(`${what}: HTTP ${statusCode}${message}`);
    this.statusCode = statusCode;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Retry-After in seconds (the API server never sends the HTTP-date form), as ms; at most an hour. */
function retryAfterOf(header: string | string[] | undefined): number | undefined {
  const text = Array.isArray(header) ? header[0] : header;
  if (text === undefined || !/^\d{1,6}$/.test(text.trim())) return undefined;
  return Math.min(3_600_000, Number(text.trim()) * 1000);
}

/** The HTTP status of a failed list or watch (ours, or client-node's Watch error's `statusCode`). */
function statusOf(err: unknown): number | undefined {
  if (err instanceof ApiError) return err.statusCode;
  const code = isRecord(err) ? err['statusCode'] : undefined;
  return typeof code === 'number' ? code : undefined;
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

/** Where a GET goes and how it authenticates: client-node's KubeConfig, or the bootstrap endpoint. */
interface HttpTarget {
  readonly server: string;
  apply(opts: RequestOptions): Promise<void>;
}

function kubeConfigTarget(kc: KubeConfig): HttpTarget {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  return { server: cluster.server, apply: (opts) => kc.applyToHTTPSOptions(opts) };
}

function endpointTarget(ep: ApiEndpoint): HttpTarget {
  return {
    server: ep.server,
    apply: async (opts) => {
      if (ep.ca) opts.ca = ep.ca;
      if (ep.cert) opts.cert = ep.cert;
      if (ep.key) opts.key = ep.key;
      if (ep.servername) opts.servername = ep.servername;
      opts.rejectUnauthorized = ep.rejectUnauthorized;
      if (ep.token) opts.headers = { ...opts.headers, Authorization: `Bearer ${ep.token}` };
    },
  };
}

/** Resolves when `done()` holds (polled every 20 ms) or the signal aborts. */
async function until(done: () => boolean, signal: AbortSignal): Promise<void> {
  while (!done() && !signal.aborted) await sleep(20, undefined, { ref: false });
}

/** GET `path` (relative to the target's server URL) with its credentials; JSON body or undefined. */
async function getJson(
  target: HttpTarget,
  path: string,
  query: Record<string, string>,
  signal: AbortSignal,
  timeoutMs: number,
  onSent?: () => void,
): Promise<{ status: number; body: unknown; retryAfterMs?: number }> {
  const url = new URL(target.server.replace(/\/+$/, '') + path);
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
  const opts: RequestOptions = { method: 'GET', headers: { Accept: 'application/json' } };
  await target.apply(opts);
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
        const retryAfterMs = retryAfterOf(res.headers['retry-after']);
        resolve({ status: res.statusCode ?? 0, body, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer within ${timeoutMs} ms`)));
    if (onSent) req.on('finish', onSent);
    req.on('error', reject);
    req.end();
  });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An object with the identity client-node's cache keys by (metadata.namespace and metadata.name). */
type NamedObject = KubernetesObject & { metadata: { name: string } };

/** Enough shape for client-node's cache. */
function isKubeObject(v: unknown): v is NamedObject {
  if (!isRecord(v) || !isRecord(v['metadata'])) return false;
  const { name, namespace } = v['metadata'];
  return typeof name === 'string' && name !== '' && (namespace === undefined || typeof namespace === 'string');
}

/**
 * What client-node's informer (ListWatch) caches in place of an API object. ListWatch reads only
 * an object's metadata.namespace and .name (its keys; a relist deletes the keys it no longer sees)
 * and .resourceVersion (the same version again is no update; the last one seen is where the watch
 * resumes), so that is all the stub keeps: kproxy's stores hold the normalized values, and the raw
 * objects are not kept (at 10k Services × 10, ~27 MB less live heap). The object rides along in
 * `arrived` until the add or update callback takes it (`objectEvent`, synchronously, in the same
 * list or event); one the informer already holds at that resourceVersion gets no callback, so it
 * is dropped with its stub unvalidated, as the informer would have dropped it.
 */
interface CacheStub extends KubernetesObject {
  readonly metadata: { readonly name: string; readonly namespace?: string; readonly resourceVersion?: string };
  arrived: KubernetesObject | undefined;
}

function cacheStub(obj: NamedObject): CacheStub {
  const { name, namespace, resourceVersion } = obj.metadata;
  return { metadata: { name, namespace, resourceVersion }, arrived: obj };
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

// ---------------------------------------------------------------------------------------------
// The bootstrap endpoint: the kubeconfig read without client-node, for the first lists

export interface BootstrapInput {
  /** `--kubeconfig` (or the config file's `clientConnection.kubeconfig`). */
  readonly kubeconfig?: string;
  /** `--master`: overrides the server address. */
  readonly master?: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly readFile?: (path: string) => Buffer;
}

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const CLUSTER_KEYS = new Set([
  'server',
  'certificate-authority',
  'certificate-authority-data',
  'insecure-skip-tls-verify',
  'tls-server-name',
  'extensions',
]);
const USER_KEYS = new Set([
  'token',
  'tokenFile',
  'client-certificate',
  'client-certificate-data',
  'client-key',
  'client-key-data',
  'extensions',
]);

/**
 * The API server and credentials for the first lists, chosen as `kproxy run` chooses its
 * KubeConfig (`--kubeconfig`, else in-cluster, else `$KUBECONFIG` or `~/.kube/config`; `--master`
 * overrides the server), or undefined whenever anything is not plain: exec or auth-provider
 * credentials, basic auth, impersonation, a proxy, several kubeconfig files, an unreadable file.
 * Then the informers list through client-node as before; nothing is ever weaker than client-node's
 * own reading (TLS is verified unless the kubeconfig says `insecure-skip-tls-verify: true`).
 */
export async function bootstrapEndpoint(input: BootstrapInput): Promise<ApiEndpoint | undefined> {
  const read = input.readFile ?? ((path: string) => readFileSync(path));
  try {
    let endpoint: ApiEndpoint | undefined;
    if (input.kubeconfig) endpoint = await fromKubeconfigFile(input.kubeconfig, read);
    else if (input.env['KUBERNETES_SERVICE_HOST']) endpoint = inCluster(input.env, read);
    else {
      const paths = input.env['KUBECONFIG'];
      if (paths?.includes(':')) return undefined;
      endpoint = await fromKubeconfigFile(paths || join(homedir(), '.kube', 'config'), read);
    }
    if (endpoint && input.master) endpoint = { ...endpoint, server: input.master };
    return endpoint;
  } catch {
    return undefined;
  }
}

function inCluster(env: BootstrapInput['env'], read: (path: string) => Buffer): ApiEndpoint | undefined {
  const host = env['KUBERNETES_SERVICE_HOST'] ?? '';
  const port = env['KUBERNETES_SERVICE_PORT'] ?? '443';
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    ca: read(`${SERVICE_ACCOUNT_DIR}/ca.crt`),
    token: read(`${SERVICE_ACCOUNT_DIR}/token`).toString('utf8').trim(),
    rejectUnauthorized: true,
  };
}

async function fromKubeconfigFile(path: string, read: (path: string) => Buffer): Promise<ApiEndpoint | undefined> {
  const { parse } = await import('yaml');
  const doc: unknown = parse(read(path).toString('utf8'));
  if (!isRecord(doc)) return undefined;
  const named = (list: unknown, name: unknown, field: string): Record<string, unknown> | undefined => {
    if (!Array.isArray(list)) return undefined;
    const hits = list.filter((e) => isRecord(e) && e['name'] === name);
    const hit = hits.length === 1 ? hits[0] : undefined;
    return isRecord(hit) && isRecord(hit[field]) ? hit[field] : undefined;
  };
  const context = named(doc['contexts'], doc['current-context'], 'context');
  if (!context) return undefined;
  const cluster = named(doc['clusters'], context['cluster'], 'cluster');
  const user = context['user'] === undefined ? {} : named(doc['users'], context['user'], 'user');
  if (!cluster || !user || typeof cluster['server'] !== 'string') return undefined;
  if (Object.keys(cluster).some((k) => !CLUSTER_KEYS.has(k))) return undefined;
  if (Object.keys(user).some((k) => !USER_KEYS.has(k))) return undefined;
  const base = dirname(path);
  const file = (p: unknown): Buffer | undefined =>
    typeof p === 'string' && p !== '' ? read(isAbsolute(p) ? p : join(base, p)) : undefined;
  const data = (d: unknown): Buffer | undefined =>
    typeof d === 'string' && d !== '' ? Buffer.from(d, 'base64') : undefined;
  const ca = data(cluster['certificate-authority-data']) ?? file(cluster['certificate-authority']);
  const cert = data(user['client-certificate-data']) ?? file(user['client-certificate']);
  const key = data(user['client-key-data']) ?? file(user['client-key']);
  const token =
    typeof user['token'] === 'string' && user['token'] !== ''
      ? user['token']
      : file(user['tokenFile'])?.toString('utf8').trim();
  const insecure = cluster['insecure-skip-tls-verify'];
  if (insecure !== undefined && typeof insecure !== 'boolean') return undefined;
  const servername = cluster['tls-server-name'];
  return {
    server: cluster['server'],
    ...(ca ? { ca } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
    ...(token ? { token } : {}),
    ...(typeof servername === 'string' && servername !== '' ? { servername } : {}),
    rejectUnauthorized: insecure !== true,
  };
}
