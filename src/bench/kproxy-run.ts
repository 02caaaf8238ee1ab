/**
 * @module bench/kproxy-run
 * The real `bin/kproxy run` as a user starts it, as a child process of the caller (which is
 * already in the network namespace the daemon should program): its JSON log lines collected with
 * their arrival times, its peak RSS, and the small waits every whole-process measurement needs.
 * Shared by the bench's `run` scenario (`run-worker.ts`) and `test/startup/measure.ts`.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { KPROXY_BIN } from './kproxy-cli.ts';

type Obj = Record<string, unknown>;

/** Wall-clock milliseconds (epoch) with sub-millisecond resolution. */
export const now = (): number => performance.timeOrigin + performance.now();
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface LogLine {
  /** When the line reached us (epoch ms). */
  readonly at: number;
  readonly line: Obj;
}

export interface KproxyProcess {
  readonly pid: number;
  /** Epoch ms just before the exec. */
  readonly spawnedAt: number;
  /** kproxy's log (stderr), one parsed JSON object per line, in order. */
  readonly lines: LogLine[];
  readonly exited: Promise<void>;
  kill(signal: NodeJS.Signals): void;
}

/** Starts `bin/kproxy run ARGS` (stdout ignored, the JSON log on stderr collected). */
export function startKproxyRun(args: readonly string[]): KproxyProcess {
  const spawnedAt = now();
  const proc = spawn(KPROXY_BIN, ['run', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  const lines: LogLine[] = [];
  let buf = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (chunk: string) => {
    const at = now();
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const text = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        lines.push({ at, line: JSON.parse(text) as Obj });
      } catch {
        lines.push({ at, line: { msg: text } });
      }
    }
  });
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
  return { pid: proc.pid ?? 0, spawnedAt, lines, exited, kill: (s) => proc.kill(s) };
}

/** The first `sync` log line that did something (kind other than `none`) and satisfies `pred`. */
export function syncLogged(c: KproxyProcess, pred: (l: Obj) => boolean = () => true): LogLine | undefined {
  return c.lines.find((l) => l.line['msg'] === 'sync' && l.line['kind'] !== 'none' && pred(l.line));
}

/**
 * Polls until `check` holds; returns the time (epoch ms) the successful check returned. Throws
 * after `timeoutMs`. Waits `everyMs` between checks, or four times as long as the last check took
 * if that is longer, so a costly check (a tool reading a large ruleset) takes at most a fifth of
 * a core from what it watches.
 */
export async function whenTrue(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  everyMs = 1,
): Promise<number> {
  const started = now();
  for (;;) {
    const t = now();
    if (await check()) return now();
    if (now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(Math.max(everyMs, 4 * (now() - t)));
  }
}

/** The arrival time (epoch ms) of the first list request for Services, EndpointSlices or Nodes among `requests[since..]`. */
export function firstListAt(
  requests: readonly { readonly at: number; readonly path: string; readonly watch: boolean }[],
  since: number,
): number | undefined {
  for (let i = since; i < requests.length; i++) {
    const q = requests[i];
    if (q && !q.watch && /\/(services|endpointslices|nodes)$/.test(q.path)) return q.at;
  }
  return undefined;
}

/** The process's peak RSS so far (VmHWM), KiB; undefined once it is gone. */
export function peakRssKiB(pid: number): number | undefined {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Every live descendant of a process (children listed in /proc/PID/task/TID/children, recursively). */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8');
    } catch {
      continue;
    }
    for (const child of text.split(' ').filter(Boolean).map(Number)) out.push(child, ...descendants(child));
  }
  return out;
}
