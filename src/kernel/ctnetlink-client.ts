/**
 * @module kernel/ctnetlink-client
 * The daemon's persistent channel to the kernel's conntrack table: one long-lived child process
 * (`ctnetlink-child.ts`) in the node's network namespace holding ctnetlink sockets, spoken to in
 * JSON lines. It lists a family's entries (with the kernel's ids) and deletes entries by exact
 * tuple and id, each an O(1) hash lookup in the kernel (~0.1–0.5 ms) instead of a `conntrack -D`
 * process that walks the whole conntrack table. Started the way the spawner starts its child
 * (`spawner.ts`): under the prefix that enters the namespace, under `setpriv --pdeathsig KILL`,
 * exiting when its stdin closes.
 *
 * `ready` says whether the child could load the library; when it could not (no
 * libmnl.so.0, which the conntrack package brings), every request fails with `CtnetlinkUnavailable`
 * and the caller keeps using the `conntrack` tool. A child that dies is restarted on the next
 * request (requests in flight fail, so their callers fall back); after 3 deaths within a second of
 * starting, the channel gives up for good.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Family } from '../model/cluster.ts';
import type { ConntrackEntry, ConntrackProtocol } from '../model/conntrack-plan.ts';
import type { ConntrackTable, ParsedEntries } from './conntrack.ts';
import { diesWithKproxy } from './tool-command.ts';

const CHILD = fileURLToPath(new URL('./ctnetlink-child.ts', import.meta.url));

export class CtnetlinkUnavailable extends Error {
  override readonly name = 'CtnetlinkUnavailable';
}

export interface CtnetlinkClientOptions {
  /** Command prefix that enters the node's network namespace (`['ip', 'netns', 'exec', NS]`); default none. */
  readonly prefix?: readonly string[];
  /** A request not answered within this long fails (and the child is restarted). Default 10 s. */
  readonly timeoutMs?: number;
}

export interface CtnetlinkClient extends ConntrackTable {
  /** Resolves once the first child has started: undefined when ctnetlink works, else why not. */
  readonly ready: Promise<string | undefined>;
  /** Whether requests can be served now (the library loaded, the channel has not given up). */
  available(): boolean;
  /** Ends the child; later requests fail with CtnetlinkUnavailable. */
  close(): void;
}

interface Pending {
  readonly resolve: (v: Record<string, unknown>) => void;
  readonly reject: (e: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

interface Child {
  readonly process: ChildProcess;
  readonly pending: Map<number, Pending>;
  /** Resolves with undefined once the child said it is ready, else with the reason. */
  readonly ready: Promise<string | undefined>;
  readonly started: number;
}

export function startCtnetlink(options: CtnetlinkClientOptions = {}): CtnetlinkClient {
  const prefix = options.prefix ?? [];
  const timeoutMs = options.timeoutMs ?? 10_000;
  let current: Child | undefined;
  let nextId = 1;
  let unavailable: string | undefined;
  let closed = false;
  let earlyDeaths = 0;

  const hold = (c: Child, on: boolean): void => {
    const s = c.process.stdout as { ref?: () => void; unref?: () => void } | null;
    if (on) s?.ref?.();
    else s?.unref?.();
  };

  const start = (): Child => {
    if (current && current.process.exitCode === null && current.process.signalCode === null) return current;
    const [first = process.execPath, ...rest] = [...prefix, process.execPath, CHILD];
    const [cmd, argv] = diesWithKproxy(first, rest);
    const proc = spawn(cmd, [...argv], { stdio: ['pipe', 'pipe', 'inherit'] });
    const pending = new Map<number, Pending>();
    let answerReady: (why: string | undefined) => void = () => undefined;
    const ready = new Promise<string | undefined>((resolve) => {
      answerReady = resolve;
    });
    const child: Child = { process: proc, pending, ready, started: performance.now() };
    const gone = (why: string): void => {
      if (current === child) current = undefined;
      answerReady(why);
      if (performance.now() - child.started < 1000) earlyDeaths++;
      for (const p of pending.values()) {
        clearTimeout(p.timer);
        p.reject(new CtnetlinkUnavailable(why));
      }
      pending.clear();
    };
    proc.on('error', (e) => gone(`ctnetlink helper failed: ${e.message}`));
    proc.on('exit', (code, signal) => gone(`ctnetlink helper exited (${signal ?? code})`));
    proc.stdin?.on('error', () => undefined);
    createInterface({ input: proc.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      let m: Record<string, unknown>;
      try {
        m = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if ('ready' in m) {
        if (pending.size === 0) hold(child, false);
        if (m['ready'] === true) answerReady(undefined);
        else {
          // The library is missing: that does not mend itself; the caller falls back for good.
          unavailable = String(m['error'] ?? 'ctnetlink unavailable');
          answerReady(unavailable);
        }
        return;
      }
      const id = Number(m['id']);
      const p = pending.get(id);
      if (!p) return;
      pending.delete(id);
      clearTimeout(p.timer);
      if (pending.size === 0) hold(child, false);
      if (typeof m['error'] === 'string') p.reject(new Error(m['error']));
      else p.resolve(m);
    });
    // An idle channel must not keep an otherwise finished process alive; a request in flight (or
    // the wait for the child's first line) does.
    proc.unref();
    (proc.stdin as { unref?: () => void } | null)?.unref?.();
    current = child;
    return child;
  };

  const usable = (): boolean => !closed && unavailable === undefined && earlyDeaths < 3;

  const request = async (body: Record<string, unknown>): Promise<Record<string, unknown>> => {
    if (!usable()) throw new CtnetlinkUnavailable(unavailable ?? 'ctnetlink channel closed');
    const child = start();
    const why = await child.ready;
    if (why !== undefined) throw new CtnetlinkUnavailable(why);
    const id = nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!child.pending.delete(id)) return;
        reject(new Error(`ctnetlink request did not finish within ${timeoutMs} ms`));
        // A helper stuck in the kernel is replaced (its other requests fail and fall back).
        child.process.kill('SIGKILL');
      }, timeoutMs);
      timer.unref();
      child.pending.set(id, { resolve, reject, timer });
      if (child.pending.size === 1) hold(child, true);
      child.process.stdin?.write(`${JSON.stringify({ id, ...body })}\n`);
    });
  };

  const first = start();

  return {
    ready: first.ready,
    available: usable,
    async list(family: Family, protocol: ConntrackProtocol): Promise<ParsedEntries> {
      const r = await request({ op: 'list', family, protocol });
      return { entries: r['entries'] as ConntrackEntry[], unparsed: 0 };
    },
    async destroy(entries: readonly ConntrackEntry[]) {
      if (entries.length === 0) return { deleted: 0, missing: 0, errors: [] };
      const r = await request({ op: 'destroy', entries });
      return {
        deleted: Number(r['deleted'] ?? 0),
        missing: Number(r['missing'] ?? 0),
        errors: (r['errors'] as string[] | undefined) ?? [],
      };
    },
    close() {
      closed = true;
      current?.process.stdin?.end();
      current = undefined;
    },
  };
}
