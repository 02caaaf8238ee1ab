/**
 * A fake Kubernetes API server speaking the real wire protocol (JSON over HTTP, LIST with a list
 * resourceVersion, WATCH as a chunked stream of newline-delimited JSON events, 410 Gone as an
 * ERROR event, BOOKMARKs, discovery), so tests exercise kproxy's reflectors as a real server would.
 *
 * Served: Services (`/api/v1/services`, `/api/v1/namespaces/NS/services`), EndpointSlices
 * (`/apis/discovery.k8s.io/v1/...endpointslices`), Nodes (`/api/v1/nodes`), ServiceCIDRs
 * (`/apis/networking.k8s.io/v1/servicecidrs`), single-object GETs of those, and Event creation
 * (POST `/api/v1/namespaces/NS/events` and `/apis/events.k8s.io/v1/namespaces/NS/events`, recorded in
 * `events`). Query parameters: `watch`, `resourceVersion`, `allowWatchBookmarks`, `timeoutSeconds`,
 * `fieldSelector` (`metadata.name`, `metadata.namespace`; `=`, `==`, `!=`) and equality-based
 * `labelSelector`.
 *
 * Semantics follow the real server where a client could tell the difference: one global,
 * monotonically increasing resourceVersion; list items carry no `kind`/`apiVersion`, watch objects
 * do; a DELETED event carries the deletion's resourceVersion; a watch from a resourceVersion whose
 * following events are no longer retained gets HTTP 200, then an ERROR event holding a Status with
 * code 410 (reason Expired), then the end of the stream; a watch without a resourceVersion (or "0")
 * starts with synthetic ADDED events for every current object.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { type ApiConnection, endpointConnection } from '../../src/source/api-http.ts';

export type FakeKind = 'Service' | 'EndpointSlice' | 'Node' | 'ServiceCIDR';
export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';
type Obj = Record<string, unknown>;

interface ResourceInfo {
  readonly kind: FakeKind;
  readonly apiVersion: string;
  /** `/api/v1` or `/apis/GROUP/VERSION`. */
  readonly prefix: string;
  readonly plural: string;
  readonly namespaced: boolean;
}

const RESOURCES: Readonly<Record<FakeKind, ResourceInfo>> = {
  Service: { kind: 'Service', apiVersion: 'v1', prefix: '/api/v1', plural: 'services', namespaced: true },
  EndpointSlice: {
    kind: 'EndpointSlice',
    apiVersion: 'discovery.k8s.io/v1',
    prefix: '/apis/discovery.k8s.io/v1',
    plural: 'endpointslices',
    namespaced: true,
  },
  Node: { kind: 'Node', apiVersion: 'v1', prefix: '/api/v1', plural: 'nodes', namespaced: false },
  ServiceCIDR: {
    kind: 'ServiceCIDR',
    apiVersion: 'networking.k8s.io/v1',
    prefix: '/apis/networking.k8s.io/v1',
    plural: 'servicecidrs',
    namespaced: false,
  },
};
const KINDS = Object.keys(RESOURCES) as FakeKind[];

/** Resources listed in discovery but not served (as on a real cluster, the group holds more than we watch). */
const DISCOVERY_EXTRAS: Readonly<Record<string, readonly { name: string; kind: string; namespaced: boolean }[]>> = {
  '/api/v1': [
    { name: 'events', kind: 'Event', namespaced: true },
    { name: 'namespaces', kind: 'Namespace', namespaced: false },
    { name: 'pods', kind: 'Pod', namespaced: true },
  ],
  '/apis/discovery.k8s.io/v1': [],
  '/apis/networking.k8s.io/v1': [
    { name: 'ingresses', kind: 'Ingress', namespaced: true },
    { name: 'networkpolicies', kind: 'NetworkPolicy', namespaced: true },
  ],
  '/apis/events.k8s.io/v1': [{ name: 'events', kind: 'Event', namespaced: true }],
};

export interface RecordedRequest {
  /** Epoch ms of arrival. */
  readonly at: number;
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly watch: boolean;
}

export interface RecordedEvent {
  /** `v1` (core) or `events.k8s.io/v1`, from the path it was posted to. */
  readonly apiVersion: string;
  readonly namespace: string;
  readonly object: Obj;
}

interface HistoryEntry {
  readonly rv: number;
  readonly kind: FakeKind;
  readonly type: WatchEventType;
  readonly object: Obj;
}

interface Selector {
  matches(obj: Obj): boolean;
}

interface Watcher {
  readonly kind: FakeKind;
  readonly selector: Selector;
  readonly bookmarks: boolean;
  readonly res: ServerResponse;
  timer?: NodeJS.Timeout;
}

interface Failure {
  readonly path: string;
  readonly status: number;
  readonly which: 'any' | 'list' | 'watch';
  readonly retryAfterSeconds: number | undefined;
  /** Answer 200 with this raw text instead of a Status (a corrupt body). */
  readonly body?: string;
  remaining: number;
}

export interface FakeApiServerOptions {
  /** Watch events retained for resuming watches (all kinds together); older resourceVersions get 410. Default 1000. */
  readonly historyLimit?: number;
  /** BOOKMARK period for watches that asked for them; 0 disables. Default 500 ms. */
  readonly bookmarkIntervalMs?: number;
  /** Require `Authorization: Bearer TOKEN` on every request (401 otherwise). */
  readonly token?: string;
}

export class FakeApiServer {
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  readonly port: number;
  /** Every request, in arrival order. */
  readonly requests: RecordedRequest[] = [];
  /** Events created through the API, in arrival order. */
  readonly events: RecordedEvent[] = [];

  readonly #server: Server;
  readonly #historyLimit: number;
  readonly #objects = new Map<FakeKind, Map<string, Obj>>(KINDS.map((k) => [k, new Map()]));
  readonly #history: HistoryEntry[] = [];
  readonly #watchers = new Set<Watcher>();
  readonly #disabled = new Set<FakeKind>();
  readonly #failures: Failure[] = [];
  readonly #bookmarkTimer: NodeJS.Timeout | undefined;
  #rv = 1;
  readonly #token: string | undefined;
  /** Every request answered with this status (an outage of the API server behind a load balancer). */
  #outage: { status: number; retryAfterSeconds: number | undefined } | undefined;
  /** Not listening (connections refused) since `down()`. */
  #down = false;
  /** A watch from a resourceVersion below this gets 410 Gone. */
  #expiredBelow = 0;
  #latencyMs = 0;

  private constructor(server: Server, options: FakeApiServerOptions) {
    this.#server = server;
    const { port } = server.address() as AddressInfo;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.#historyLimit = options.historyLimit ?? 1000;
    this.#token = options.token;
    const every = options.bookmarkIntervalMs ?? 500;
    if (every > 0) {
      this.#bookmarkTimer = setInterval(() => this.#sendBookmarks(), every);
      this.#bookmarkTimer.unref();
    }
  }

  static async start(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    let self: FakeApiServer | undefined;
    const server = createServer((req, res) => {
      if (!self) {
        res.writeHead(503).end();
        return;
      }
      self.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendStatus(res, 500, 'InternalError', String(err));
        else res.destroy();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    self = new FakeApiServer(server, options);
    return self;
  }

  // -------------------------------------------------------------------------------------------
  // Test controls

  /** The current (latest) resourceVersion. */
  get resourceVersion(): string {
    return String(this.#rv);
  }

  /** Store a new object (any shape below `metadata.name`); assigns uid, creationTimestamp, resourceVersion. Returns the stored copy. */
  create(kind: FakeKind, obj: object): Obj {
    const info = RESOURCES[kind];
    const o = this.#prepare(info, obj);
    const meta = o['metadata'] as Obj;
    const key = objectKey(o);
    const store = this.#store(kind);
    if (store.has(key)) throw new Error(`fake apiserver: ${kind} ${key} already exists`);
    meta['uid'] = randomUUID();
    meta['creationTimestamp'] = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    meta['resourceVersion'] = String(++this.#rv);
    store.set(key, o);
    this.#emit(kind, 'ADDED', o);
    return structuredClone(o);
  }

  /** Replace an existing object (uid and creationTimestamp are kept); assigns a new resourceVersion. */
  update(kind: FakeKind, obj: object): Obj {
    const info = RESOURCES[kind];
    const o = this.#prepare(info, obj);
    const meta = o['metadata'] as Obj;
    const key = objectKey(o);
    const store = this.#store(kind);
    const old = store.get(key);
    if (!old) throw new Error(`fake apiserver: ${kind} ${key} does not exist`);
    const oldMeta = old['metadata'] as Obj;
    meta['uid'] = oldMeta['uid'];
    meta['creationTimestamp'] = oldMeta['creationTimestamp'];
    meta['resourceVersion'] = String(++this.#rv);
    store.set(key, o);
    this.#emit(kind, 'MODIFIED', o);
    return structuredClone(o);
  }

  /** Create or update. */
  apply(kind: FakeKind, obj: object): Obj {
    const o = this.#prepare(RESOURCES[kind], obj);
    return this.#store(kind).has(objectKey(o)) ? this.update(kind, obj) : this.create(kind, obj);
  }

  /** Delete by name (and namespace, default `default`, for namespaced kinds); returns false when absent. */
  delete(kind: FakeKind, name: string, namespace?: string): boolean {
    const info = RESOURCES[kind];
    const key = info.namespaced ? `${namespace ?? 'default'}/${name}` : name;
    const store = this.#store(kind);
    const old = store.get(key);
    if (!old) return false;
    store.delete(key);
    const gone = structuredClone(old);
    (gone['metadata'] as Obj)['resourceVersion'] = String(++this.#rv);
    this.#emit(kind, 'DELETED', gone);
    return true;
  }

  get(kind: FakeKind, name: string, namespace?: string): Obj | undefined {
    const key = RESOURCES[kind].namespaced ? `${namespace ?? 'default'}/${name}` : name;
    const o = this.#store(kind).get(key);
    return o ? structuredClone(o) : undefined;
  }

  list(kind: FakeKind): Obj[] {
    return [...this.#store(kind).values()].map((o) => structuredClone(o));
  }

  /** Destroy every open watch connection abruptly (TCP reset from the client's view); returns how many. */
  dropWatches(): number {
    const n = this.#watchers.size;
    for (const w of [...this.#watchers]) {
      this.#forget(w);
      w.res.socket?.destroy();
      w.res.destroy();
    }
    return n;
  }

  /** End every open watch (of `kind`) cleanly, as the real server does when a watch's timeout expires; returns how many. */
  endWatches(kind?: FakeKind): number {
    const ending = [...this.#watchers].filter((w) => kind === undefined || w.kind === kind);
    const n = ending.length;
    for (const w of ending) {
      this.#forget(w);
      w.res.end();
    }
    return n;
  }

  openWatches(kind?: FakeKind): number {
    return [...this.#watchers].filter((w) => kind === undefined || w.kind === kind).length;
  }

  /** Delay every later answer (and the headers of every later watch) by `ms`. */
  setLatency(ms: number): void {
    this.#latencyMs = ms;
  }

  /**
   * Answer the next `count` requests for exactly `path` (no query) with `status` and a Status body.
   * `which` limits it to lists (and GETs) or to watches.
   */
  failNext(
    path: string,
    status: number,
    count = 1,
    which: 'any' | 'list' | 'watch' = 'any',
    opts: { retryAfterSeconds?: number } = {},
  ): void {
    this.#failures.push({ path, status, which, remaining: count, retryAfterSeconds: opts.retryAfterSeconds });
  }

  /** Answer the next `count` requests for exactly `path` with 200 and `body` as it is (a corrupt list or watch stream). */
  garbleNext(path: string, body: string, count = 1, which: 'any' | 'list' | 'watch' = 'any'): void {
    this.#failures.push({ path, status: 200, which, remaining: count, retryAfterSeconds: undefined, body });
  }

  /**
   * An outage: every request is answered `status` (with Retry-After when given) and every open watch
   * is dropped, until `endOutage()`. Requests are still recorded (to measure a client's backoff).
   */
  startOutage(status = 503, retryAfterSeconds?: number): void {
    this.#outage = { status, retryAfterSeconds };
    this.dropWatches();
  }

  endOutage(): void {
    this.#outage = undefined;
  }

  /** Stops listening (new connections are refused) and drops every connection, until `up()`. */
  async down(): Promise<void> {
    if (this.#down) return;
    this.#down = true;
    this.dropWatches();
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    await closed;
  }

  /** Listens again, on the same port. */
  async up(): Promise<void> {
    if (!this.#down) return;
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.port, '127.0.0.1', () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    this.#down = false;
  }

  /**
   * Forget the retained watch history (like an etcd compaction): a watch from any resourceVersion
   * before now gets an ERROR 410 event, so its client must list again. Open watches are not touched.
   */
  compactHistory(): void {
    this.#history.length = 0;
    this.#rv += 1; // a write elsewhere in the cluster: the newest retained point is after every client's
    this.#expiredBelow = this.#rv;
  }

  /** Stop serving a resource: its paths answer 404 and discovery no longer lists it. */
  disable(kind: FakeKind): void {
    this.#disabled.add(kind);
  }

  enable(kind: FakeKind): void {
    this.#disabled.delete(kind);
  }

  async close(): Promise<void> {
    if (this.#bookmarkTimer) clearInterval(this.#bookmarkTimer);
    if (this.#down) return;
    this.dropWatches();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  // -------------------------------------------------------------------------------------------
  // Store and events

  #store(kind: FakeKind): Map<string, Obj> {
    const s = this.#objects.get(kind);
    if (!s) throw new Error(`fake apiserver: unknown kind ${kind}`);
    return s;
  }

  #prepare(info: ResourceInfo, obj: object): Obj {
    const o = structuredClone(obj) as Obj;
    const meta = isRecord(o['metadata']) ? o['metadata'] : {};
    o['metadata'] = meta;
    if (typeof meta['name'] !== 'string' || meta['name'] === '')
      throw new Error('fake apiserver: metadata.name is required');
    if (info.namespaced) {
      if (typeof meta['namespace'] !== 'string' || meta['namespace'] === '') meta['namespace'] = 'default';
    } else {
      delete meta['namespace'];
    }
    o['kind'] = info.kind;
    o['apiVersion'] = info.apiVersion;
    return o;
  }

  #emit(kind: FakeKind, type: WatchEventType, object: Obj): void {
    const rv = Number((object['metadata'] as Obj)['resourceVersion']);
    this.#history.push({ rv, kind, type, object: structuredClone(object) });
    while (this.#history.length > this.#historyLimit) {
      const dropped = this.#history.shift();
      if (dropped) this.#expiredBelow = Math.max(this.#expiredBelow, dropped.rv);
    }
    for (const w of this.#watchers) {
      if (w.kind === kind && w.selector.matches(object)) writeEvent(w.res, type, object);
    }
  }

  #sendBookmarks(): void {
    for (const w of this.#watchers) {
      if (!w.bookmarks) continue;
      const info = RESOURCES[w.kind];
      writeEvent(w.res, 'BOOKMARK', {
        kind: info.kind,
        apiVersion: info.apiVersion,
        metadata: { resourceVersion: String(this.#rv) },
      });
    }
  }

  #forget(w: Watcher): void {
    if (w.timer) clearTimeout(w.timer);
    this.#watchers.delete(w);
  }

  // -------------------------------------------------------------------------------------------
  // HTTP

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const query = Object.fromEntries(url.searchParams);
    const watch = query['watch'] === 'true' || query['watch'] === '1';
    const method = req.method ?? 'GET';
    this.requests.push({ at: Date.now(), method, path, query, watch });

    if (this.#latencyMs > 0) {
      await new Promise((resolve) => setTimeout(resolve, this.#latencyMs));
      if (res.destroyed) return;
    }

    if (this.#token !== undefined && req.headers.authorization !== `Bearer ${this.#token}`) {
      return sendStatus(res, 401, 'Unauthorized', 'Unauthorized');
    }
    if (this.#outage) {
      const { status, retryAfterSeconds } = this.#outage;
      return sendStatus(
        res,
        status,
        reasonFor(status),
        'the server is currently unable to handle the request',
        retryAfterSeconds,
      );
    }

    const failure = this.#failures.find(
      (f) => f.remaining > 0 && f.path === path && (f.which === 'any' || (f.which === 'watch') === watch),
    );
    if (failure) {
      failure.remaining -= 1;
      if (failure.body !== undefined) {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(failure.body);
        return;
      }
      sendStatus(
        res,
        failure.status,
        reasonFor(failure.status),
        `injected failure for ${path}`,
        failure.retryAfterSeconds,
      );
      return;
    }

    if (method === 'POST') return this.#handlePost(req, res, path);
    if (method !== 'GET') return sendStatus(res, 405, 'MethodNotAllowed', `${method} is not supported here`);

    const discovery = this.#discovery(path);
    if (discovery !== undefined) return sendJson(res, 200, discovery);
    if (path === '/version')
      return sendJson(res, 200, { major: '1', minor: '34', gitVersion: 'v1.34.0-fake', platform: 'linux/amd64' });
    if (path === '/healthz' || path === '/livez' || path === '/readyz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok');
      return;
    }

    const route = this.#route(path);
    if (!route) return sendStatus(res, 404, 'NotFound', 'the server could not find the requested resource');
    let selector: Selector;
    try {
      selector = parseSelectors(query['fieldSelector'] ?? '', query['labelSelector'] ?? '', route.namespace);
    } catch (err) {
      return sendStatus(res, 400, 'BadRequest', (err as Error).message);
    }

    if (route.name !== undefined) {
      if (watch) return sendStatus(res, 400, 'BadRequest', 'watch a single object with a fieldSelector');
      const key = route.info.namespaced ? `${route.namespace}/${route.name}` : route.name;
      const o = this.#store(route.info.kind).get(key);
      if (!o) return sendStatus(res, 404, 'NotFound', `${route.info.plural} "${route.name}" not found`);
      return sendJson(res, 200, o);
    }
    if (watch) return this.#watch(res, route.info, selector, query);
    const items = [...this.#store(route.info.kind).values()]
      .filter((o) => selector.matches(o))
      .sort((a, b) => compareText(objectKey(a), objectKey(b)))
      .map(({ kind: _k, apiVersion: _a, ...rest }) => rest);
    return sendJson(res, 200, {
      kind: `${route.info.kind}List`,
      apiVersion: route.info.apiVersion,
      metadata: { resourceVersion: String(this.#rv) },
      items,
    });
  }

  #watch(res: ServerResponse, info: ResourceInfo, selector: Selector, query: Record<string, string>): void {
    const rvParam = query['resourceVersion'] ?? '';
    const from = rvParam === '' || rvParam === '0' ? undefined : Number(rvParam);
    if (from !== undefined && (!Number.isSafeInteger(from) || from < 0)) {
      return sendStatus(res, 400, 'BadRequest', `invalid resourceVersion ${JSON.stringify(rvParam)}`);
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();

    if (from !== undefined && from < this.#expiredBelow) {
      writeEvent(res, 'ERROR', {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: `too old resource version: ${from} (${this.#expiredBelow})`,
        reason: 'Expired',
        code: 410,
      });
      res.end();
      return;
    }

    if (from === undefined) {
      for (const o of this.#store(info.kind).values()) if (selector.matches(o)) writeEvent(res, 'ADDED', o);
    } else {
      for (const e of this.#history) {
        if (e.rv > from && e.kind === info.kind && selector.matches(e.object)) writeEvent(res, e.type, e.object);
      }
    }

    const w: Watcher = { kind: info.kind, selector, bookmarks: query['allowWatchBookmarks'] === 'true', res };
    const timeout = Number(query['timeoutSeconds'] ?? '');
    if (Number.isFinite(timeout) && timeout > 0) {
      w.timer = setTimeout(() => {
        this.#forget(w);
        res.end();
      }, timeout * 1000);
      w.timer.unref();
    }
    this.#watchers.add(w);
    res.on('close', () => this.#forget(w));
  }

  async #handlePost(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const m = /^\/(api\/v1|apis\/events\.k8s\.io\/v1)\/namespaces\/([^/]+)\/events$/.exec(path);
    if (!m) return sendStatus(res, 405, 'MethodNotAllowed', `POST ${path} is not supported here`);
    const apiVersion = m[1] === 'api/v1' ? 'v1' : 'events.k8s.io/v1';
    const namespace = decodeURIComponent(m[2] ?? '');
    let body: unknown;
    try {
      body = JSON.parse(await readBody(req, 1 << 20));
    } catch (err) {
      return sendStatus(res, 400, 'BadRequest', `cannot decode the body: ${(err as Error).message}`);
    }
    if (!isRecord(body)) return sendStatus(res, 400, 'BadRequest', 'the body must be an object');
    const meta = isRecord(body['metadata']) ? body['metadata'] : {};
    body['metadata'] = meta;
    if (typeof meta['name'] !== 'string' || meta['name'] === '') {
      const prefix = typeof meta['generateName'] === 'string' ? meta['generateName'] : 'event.';
      meta['name'] = `${prefix}${randomUUID().slice(0, 8)}`;
    }
    if (meta['namespace'] !== undefined && meta['namespace'] !== namespace) {
      return sendStatus(
        res,
        400,
        'BadRequest',
        'the namespace of the object does not match the namespace on the request',
      );
    }
    meta['namespace'] = namespace;
    meta['uid'] = randomUUID();
    meta['resourceVersion'] = String(++this.#rv);
    meta['creationTimestamp'] = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    this.events.push({ apiVersion, namespace, object: structuredClone(body) });
    sendJson(res, 201, body);
  }

  /** Collection or single object of a served (not disabled) kind. */
  #route(path: string): { info: ResourceInfo; namespace?: string; name?: string } | undefined {
    for (const info of Object.values(RESOURCES)) {
      if (this.#disabled.has(info.kind) || !path.startsWith(`${info.prefix}/`)) continue;
      const rest = path
        .slice(info.prefix.length + 1)
        .split('/')
        .map(decodeURIComponent);
      if (rest[0] === info.plural && rest.length <= 2) {
        if (rest.length === 1) return { info };
        // A namespaced kind's single object lives under namespaces/NS/.
        return info.namespaced ? undefined : { info, name: rest[1] ?? '' };
      }
      if (info.namespaced && rest[0] === 'namespaces' && rest[2] === info.plural && rest.length <= 4) {
        const namespace = rest[1] ?? '';
        return rest.length === 3 ? { info, namespace } : { info, namespace, name: rest[3] ?? '' };
      }
    }
    return undefined;
  }

  #discovery(path: string): unknown {
    const served = KINDS.filter((k) => !this.#disabled.has(k)).map((k) => RESOURCES[k]);
    if (path === '/api') {
      return {
        kind: 'APIVersions',
        versions: ['v1'],
        serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `127.0.0.1:${this.port}` }],
      };
    }
    const groups = ['discovery.k8s.io', 'networking.k8s.io', 'events.k8s.io'];
    if (path === '/apis') {
      return {
        kind: 'APIGroupList',
        apiVersion: 'v1',
        groups: groups.map((name) => ({
          name,
          versions: [{ groupVersion: `${name}/v1`, version: 'v1' }],
          preferredVersion: { groupVersion: `${name}/v1`, version: 'v1' },
        })),
      };
    }
    const group = /^\/apis\/([^/]+)$/.exec(path);
    if (group && groups.includes(group[1] ?? '')) {
      const name = group[1] ?? '';
      return {
        kind: 'APIGroup',
        apiVersion: 'v1',
        name,
        versions: [{ groupVersion: `${name}/v1`, version: 'v1' }],
        preferredVersion: { groupVersion: `${name}/v1`, version: 'v1' },
      };
    }
    const extras = DISCOVERY_EXTRAS[path];
    if (extras === undefined) return undefined;
    const verbs = ['get', 'list', 'watch'];
    const resources = [
      ...served
        .filter((r) => r.prefix === path)
        .map((r) => ({ name: r.plural, singularName: '', namespaced: r.namespaced, kind: r.kind, verbs })),
      ...extras.map((e) => ({
        name: e.name,
        singularName: '',
        namespaced: e.namespaced,
        kind: e.kind,
        verbs: [...verbs, 'create'],
      })),
    ];
    return {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: path === '/api/v1' ? 'v1' : path.slice('/apis/'.length),
      resources,
    };
  }
}

/** A connection to the fake as kproxy makes one from a plain kubeconfig: plain HTTP, perhaps a bearer token. */
export function connectionFor(server: { readonly url: string }, token?: string): ApiConnection {
  return endpointConnection({
    server: server.url,
    rejectUnauthorized: false,
    ...(token !== undefined ? { token } : {}),
  });
}

/** A KubeConfig for the fake (client-node's path, for kubeconfigs with auth plugins): plain HTTP, no credentials (client-node requires skipTLSVerify for http://). */
export function kubeconfigFor(server: { readonly url: string }, token?: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: server.url, skipTLSVerify: true }],
    users: [{ name: 'fake', ...(token !== undefined ? { token } : {}) }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'fake' }],
    currentContext: 'fake',
  });
  return kc;
}

/** The same as a kubeconfig file's text (for `--kubeconfig FILE`). */
export function kubeconfigYaml(server: { readonly url: string }, token?: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: fake',
    '  cluster:',
    `    server: ${server.url}`,
    '    insecure-skip-tls-verify: true',
    'users:',
    '- name: fake',
    ...(token !== undefined ? ['  user:', `    token: ${token}`] : ['  user: {}']),
    'contexts:',
    '- name: fake',
    '  context:',
    '    cluster: fake',
    '    user: fake',
    'current-context: fake',
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Helpers

function isRecord(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function objectKey(o: Obj): string {
  const meta = o['metadata'] as Obj;
  const ns = typeof meta['namespace'] === 'string' ? meta['namespace'] : '';
  return ns ? `${ns}/${String(meta['name'])}` : String(meta['name']);
}

function writeEvent(res: ServerResponse, type: string, object: unknown): void {
  if (res.destroyed || res.writableEnded) return;
  res.write(`${JSON.stringify({ type, object })}\n`);
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function reasonFor(status: number): string {
  const reasons: Record<number, string> = {
    400: 'BadRequest',
    401: 'Unauthorized',
    403: 'Forbidden',
    404: 'NotFound',
    410: 'Expired',
    429: 'TooManyRequests',
    500: 'InternalError',
    503: 'ServiceUnavailable',
    504: 'Timeout',
  };
  return reasons[status] ?? 'Unknown';
}

function sendStatus(
  res: ServerResponse,
  code: number,
  reason: string,
  message: string,
  retryAfterSeconds?: number,
): void {
  const headers: Record<string, string> =
    retryAfterSeconds !== undefined ? { 'Retry-After': String(retryAfterSeconds) } : {};
  sendJson(
    res,
    code,
    { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code },
    headers,
  );
}

async function readBody(req: IncomingMessage, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > limit) throw new Error(`body over ${limit} bytes`);
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Field selectors on metadata.name / metadata.namespace and equality-based label selectors. */
function parseSelectors(fieldSelector: string, labelSelector: string, namespace: string | undefined): Selector {
  const tests: ((o: Obj) => boolean)[] = [];
  const meta = (o: Obj): Obj => (isRecord(o['metadata']) ? o['metadata'] : {});
  if (namespace !== undefined) tests.push((o) => meta(o)['namespace'] === namespace);
  for (const term of fieldSelector.split(',').filter((t) => t !== '')) {
    const m = /^([^!=]+)(==|=|!=)(.*)$/.exec(term);
    if (!m) throw new Error(`invalid field selector ${JSON.stringify(term)}`);
    const [, field, op, value] = m;
    if (field !== 'metadata.name' && field !== 'metadata.namespace') {
      throw new Error(`field label not supported: ${field}`);
    }
    const key = field === 'metadata.name' ? 'name' : 'namespace';
    tests.push((o) => (meta(o)[key] === value) === (op !== '!='));
  }
  for (const term of labelSelector.split(',').filter((t) => t !== '')) {
    const labels = (o: Obj): Obj => (isRecord(meta(o)['labels']) ? (meta(o)['labels'] as Obj) : {});
    const m = /^([^!=]+)(==|=|!=)(.*)$/.exec(term);
    if (m) {
      const [, key = '', op, value] = m;
      tests.push((o) => (labels(o)[key] === value) === (op !== '!='));
    } else if (term.startsWith('!')) {
      tests.push((o) => !Object.hasOwn(labels(o), term.slice(1)));
    } else {
      tests.push((o) => Object.hasOwn(labels(o), term));
    }
  }
  return { matches: (o) => tests.every((t) => t(o)) };
}
