/**
 * @module source/reflector
 * One cache's list and watch, done by kproxy itself (docs/adr/0013), with client-go's reflector
 * semantics:
 * - The first list may come from the API server's watch cache (`resourceVersion=0`); later lists
 *   (after a 410) read through. A list body is decoded as it arrives (`ListDecoder`): each item is
 *   handed on and dropped, so the body, its text and its parsed tree are never held whole. After a
 *   complete list, objects the reflector knew and the list lacks are deleted, so a relist
 *   converges, deletions missed while disconnected included.
 * - The watch resumes from the last resourceVersion seen (object, list or BOOKMARK; bookmarks are
 *   asked for), with a server-side timeout spread over 5-10 minutes as client-go does. A watch the
 *   server ends is reopened at once; an ERROR event with code 410 makes the next step a relist.
 * - Any failure (a failed list, a non-200 answer, a dropped or silent connection, an undecodable
 *   event) restarts with jittered exponential backoff (a Retry-After honoured up to its ceiling),
 *   keeping what is known, resuming from the last resourceVersion. A 401/403 says which
 *   credentials or RBAC grant is missing, once per status.
 * What it keeps per object is its identity and resourceVersion: the objects themselves go to the
 * caller (`onObject`) as the server sent them, and are not retained here.
 */
import type { IncomingMessage } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../util/log.ts';
import { type ApiConnection, ApiError, errorText, isRecord, openStream, readAnswer, safeText } from './api-http.ts';
import { ListDecoder } from './list-decoder.ts';

export interface ReflectorOptions {
  /** The cache's name in logs. */
  readonly name: string;
  /** The collection's URL path (`/api/v1/services`). */
  readonly path: string;
  readonly fieldSelector?: string;
  readonly connection: ApiConnection;
  readonly log: Logger;
  /** Aborting it stops the reflector and its requests. */
  readonly signal: AbortSignal;
  /** A list with nothing received for this long fails. */
  readonly requestTimeoutMs: number;
  /** A watch with no traffic (not even a bookmark) for this long is reopened. */
  readonly watchIdleTimeoutMs: number;
  /** Jittered backoff for the n-th consecutive failure (1-based), and its ceiling. */
  readonly backoffDelay: (failures: number) => number;
  readonly maxBackoffMs: number;
  /** The log line for a 401 or 403, naming what is missing; undefined for other statuses. */
  readonly permissionProblem: (status: number) => string | undefined;
  /** An object added or changed (as the server sent it), or deleted (`raw` undefined). */
  readonly onObject: (id: string, raw: Record<string, unknown> | undefined) => void;
  /** The first complete list has been handed on. */
  readonly onSynced: () => void;
  /** The first list request is written out (the caller then blocks on module loading). */
  readonly onSent?: () => void;
  /** The first list answered 404 (the API does not serve the resource): the reflector stops. */
  readonly onNotServed?: () => void;
}

/** A watch line longer than this fails the watch (the API server caps objects at ~1.5 MiB). */
const MAX_WATCH_LINE_BYTES = 64 * 1024 * 1024;

type WatchOutcome = 'ended' | 'expired';

export class Reflector {
  readonly #o: ReflectorOptions;
  /** Identity (`namespace/name`) → resourceVersion of every object handed on and not deleted. */
  readonly #known = new Map<string, string | undefined>();
  #resourceVersion = '';
  #needList = true;
  #listedOnce = false;
  #synced = false;
  #failures = 0;
  /** The 401/403 last reported (reported again only after it changed or cleared). */
  #denied: number | undefined;
  #running: Promise<void> | undefined;

  constructor(options: ReflectorOptions) {
    this.#o = options;
  }

  start(): void {
    this.#running ??= this.#run();
  }

  /** Resolves once the loop has ended (after the signal aborted). */
  async stopped(): Promise<void> {
    await this.#running;
  }

  async #run(): Promise<void> {
    const { signal } = this.#o;
    while (!signal.aborted) {
      try {
        if (this.#needList) {
          if (!(await this.#list())) return;
          this.#needList = false;
          if (!this.#synced) {
            this.#synced = true;
            this.#o.onSynced();
          }
        }
        if ((await this.#watch()) === 'expired') this.#needList = true;
      } catch (err) {
        if (signal.aborted) return;
        await this.#failed(err);
      }
    }
  }

  /** One LIST, items handed on as they are decoded; false: not served (the reflector ends). */
  async #list(): Promise<boolean> {
    const o = this.#o;
    const query: Record<string, string> = {};
    if (o.fieldSelector !== undefined) query['fieldSelector'] = o.fieldSelector;
    if (!this.#listedOnce) query['resourceVersion'] = '0';
    const res = await openStream(o.connection, {
      method: 'GET',
      path: o.path,
      query,
      signal: o.signal,
      timeoutMs: o.requestTimeoutMs,
      ...(o.onSent && !this.#listedOnce ? { onSent: o.onSent } : {}),
    });
    if (res.statusCode === 404 && !this.#listedOnce && o.onNotServed) {
      res.resume();
      o.onNotServed();
      return false;
    }
    if (res.statusCode !== 200) throw await failure(`list ${o.path}`, res);
    const seen = new Set<string>();
    let malformed = 0;
    const decoder = new ListDecoder((item) => {
      if (!isNamedObject(item)) {
        malformed += 1;
        return;
      }
      const id = identity(item);
      seen.add(id);
      this.#handOn(id, item);
    });
    for await (const chunk of res) decoder.write(chunk as Buffer);
    const top = decoder.end();
    const meta = isRecord(top['metadata']) ? top['metadata'] : {};
    const resourceVersion = typeof meta['resourceVersion'] === 'string' ? meta['resourceVersion'] : '';
    for (const id of [...this.#known.keys()]) {
      if (seen.has(id)) continue;
      this.#known.delete(id);
      o.onObject(id, undefined);
    }
    if (malformed > 0) o.log.warn({ cache: o.name, count: malformed }, 'list items without metadata.name skipped');
    o.log.debug({ cache: o.name, objects: seen.size, resourceVersion }, 'listed');
    this.#resourceVersion = resourceVersion;
    this.#listedOnce = true;
    this.#healthy();
    return true;
  }

  /** One WATCH from the last resourceVersion, until the server ends it or it expires. */
  async #watch(): Promise<WatchOutcome> {
    const o = this.#o;
    o.log.debug({ cache: o.name, resourceVersion: this.#resourceVersion }, 'watch (re)connecting');
    const query: Record<string, string> = {
      watch: 'true',
      allowWatchBookmarks: 'true',
      // Spread like client-go's (5 to 10 minutes) so reconnections do not align.
      timeoutSeconds: String(300 + Math.floor(Math.random() * 300)),
    };
    if (this.#resourceVersion !== '') query['resourceVersion'] = this.#resourceVersion;
    if (o.fieldSelector !== undefined) query['fieldSelector'] = o.fieldSelector;
    const openedAt = Date.now();
    const res = await openStream(o.connection, {
      method: 'GET',
      path: o.path,
      query,
      signal: o.signal,
      timeoutMs: o.watchIdleTimeoutMs,
    });
    if (res.statusCode !== 200) throw await failure(`watch ${o.path}`, res);
    let events = 0;
    const splitter = new LineSplitter();
    const handle = (texts: string[]): boolean => {
      for (const text of texts) {
        events += 1;
        if (this.#event(text) === 'expired') return true;
      }
      return false;
    };
    for await (const chunk of res) {
      if (handle(splitter.push(chunk as Buffer))) {
        res.destroy();
        return 'expired';
      }
    }
    if (handle(splitter.end())) return 'expired';
    // A server that ends every watch at once would otherwise be asked again in a tight loop.
    if (events === 0 && Date.now() - openedAt < 1000) throw new Error(`watch ${o.path}: ended at once, with no event`);
    return 'ended';
  }

  /** One watch event line; 'expired' on a 410. Throws on anything that is not a watch event. */
  #event(text: string): 'expired' | undefined {
    const o = this.#o;
    let ev: unknown;
    try {
      ev = JSON.parse(text);
    } catch {
      throw new Error(`watch ${o.path}: an event that is not JSON`);
    }
    const type = isRecord(ev) ? ev['type'] : undefined;
    const obj = isRecord(ev) ? ev['object'] : undefined;
    switch (type) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        this.#healthy();
        if (!isNamedObject(obj)) {
          o.log.warn({ cache: o.name, event: type }, 'watch event without an object with metadata.name skipped');
          return undefined;
        }
        const id = identity(obj);
        if (type === 'DELETED') {
          if (this.#known.delete(id)) o.onObject(id, undefined);
        } else this.#handOn(id, obj);
        this.#noteVersion(obj);
        return undefined;
      }
      case 'BOOKMARK':
        this.#healthy();
        if (isRecord(obj)) this.#noteVersion(obj);
        return undefined;
      case 'ERROR': {
        const code = isRecord(obj) ? obj['code'] : undefined;
        const message = isRecord(obj) && typeof obj['message'] === 'string' ? safeText(obj['message']) : '';
        if (code === 410) {
          o.log.info({ cache: o.name, message }, 'resource version expired; listing again');
          return 'expired';
        }
        throw new ApiError(`watch ${o.path}: ERROR event`, typeof code === 'number' ? code : 0, obj);
      }
      default:
        o.log.debug({ cache: o.name, event: safeText(String(type)) }, 'unknown watch event type ignored');
        return undefined;
    }
  }

  /** Hands an added or changed object on, unless it is the version already handed on. */
  #handOn(id: string, obj: NamedObject): void {
    const version = obj.metadata.resourceVersion;
    const known = this.#known.get(id);
    if (known !== undefined && known === version) return;
    this.#known.set(id, typeof version === 'string' ? version : undefined);
    this.#o.onObject(id, obj);
  }

  #noteVersion(obj: Record<string, unknown>): void {
    const meta = obj['metadata'];
    if (isRecord(meta) && typeof meta['resourceVersion'] === 'string') this.#resourceVersion = meta['resourceVersion'];
  }

  /** Something came through: the connection works. */
  #healthy(): void {
    this.#failures = 0;
    this.#denied = undefined;
  }

  async #failed(err: unknown): Promise<void> {
    const o = this.#o;
    this.#failures += 1;
    const retryAfter = err instanceof ApiError ? err.retryAfterMs : undefined;
    const backoff = o.backoffDelay(this.#failures);
    const delayMs = retryAfter === undefined ? backoff : Math.max(backoff, Math.min(retryAfter, o.maxBackoffMs));
    const status = err instanceof ApiError ? err.statusCode : undefined;
    const denied = status === undefined ? undefined : o.permissionProblem(status);
    if (denied && this.#denied !== status) {
      // Said once per cache and status, at error level: retrying will not fix it until someone acts.
      o.log.error({ cache: o.name, status, retryInMs: delayMs }, denied);
    }
    this.#denied = denied ? status : undefined;
    o.log.warn(
      { cache: o.name, err: errorText(err), failures: this.#failures, retryInMs: delayMs },
      'list/watch failed; keeping the cache as it is and restarting',
    );
    try {
      await sleep(delayMs, undefined, { signal: o.signal });
    } catch {
      // stopped
    }
  }
}

/** An object with the identity the caches key by (metadata.namespace and metadata.name). */
type NamedObject = Record<string, unknown> & {
  metadata: { name: string; namespace?: string; resourceVersion?: unknown };
};

function isNamedObject(v: unknown): v is NamedObject {
  if (!isRecord(v) || !isRecord(v['metadata'])) return false;
  const { name, namespace } = v['metadata'];
  return typeof name === 'string' && name !== '' && (namespace === undefined || typeof namespace === 'string');
}

/** `namespace/name`, or `name` when cluster-scoped. */
function identity(obj: NamedObject): string {
  const ns = obj.metadata.namespace ?? '';
  return ns === '' ? obj.metadata.name : `${ns}/${obj.metadata.name}`;
}

/** The ApiError for a non-200 answer, with the server's Status message (a body of at most 64 KiB read). */
async function failure(what: string, res: IncomingMessage): Promise<ApiError> {
  const answer = await readAnswer(res, 64 * 1024);
  return new ApiError(what, answer.status, answer.body, answer.retryAfterMs);
}

/** Splits a stream into newline-delimited lines, keeping only the bytes of the line in progress. */
class LineSplitter {
  #carry: Buffer[] = [];
  #carried = 0;

  /** The lines `chunk` completes. */
  push(chunk: Buffer): string[] {
    const out: string[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      const part = chunk.subarray(start, nl);
      const line = this.#carried > 0 ? Buffer.concat([...this.#carry, part]) : part;
      this.#carry = [];
      this.#carried = 0;
      start = nl + 1;
      if (line.length > 0) out.push(line.toString('utf8'));
    }
    if (start < chunk.length) {
      this.#carry.push(chunk.subarray(start));
      this.#carried += chunk.length - start;
      if (this.#carried > MAX_WATCH_LINE_BYTES)
        throw new Error(`a watch event longer than ${MAX_WATCH_LINE_BYTES} bytes`);
    }
    return out;
  }

  /** The last line, when the stream did not end with a newline. */
  end(): string[] {
    const rest = this.#carried > 0 ? [Buffer.concat(this.#carry).toString('utf8')] : [];
    this.#carry = [];
    this.#carried = 0;
    return rest;
  }
}
