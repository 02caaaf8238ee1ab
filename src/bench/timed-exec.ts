/**
 * @module bench/timed-exec
 * Runs a command inside a network namespace and measures it: wall time (here, around the whole
 * `ip netns exec` call), and the child's own user and system CPU time — for `nft -f` that is
 * nft's parsing and evaluation (user) and the kernel committing the netlink batch, which happens
 * in nft's `sendmsg` (sys). CPU times come from GNU time (`/usr/bin/time -f "%e %U %S %M"`, which
 * reads the child's rusage from wait4); without it, from bash's `times` builtin (no peak RSS).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnTracked } from './netns.ts';

export interface TimedResult {
  readonly wallS: number;
  readonly userS: number | null;
  readonly sysS: number | null;
  /** Peak RSS of the child, KiB (GNU time only). */
  readonly maxRssKiB: number | null;
  readonly exitCode: number | null;
  readonly timedOut: boolean;
  /** The first lines of the child's stderr (nft's errors). */
  readonly stderr: string;
  /** The last 64 KiB of the child's stderr (kproxy's closing log lines). */
  readonly stderrTail: string;
}

const TAIL = 1 << 16;

const GNU_TIME = '/usr/bin/time';

export function timingMethod(): 'gnu-time' | 'bash-times' {
  return existsSync(GNU_TIME) ? 'gnu-time' : 'bash-times';
}

/** `m1.234s`-style durations of bash's `times`: "0m1.234s". */
function parseBashDuration(s: string): number | null {
  const m = /^(\d+)m([\d.]+)s$/.exec(s);
  return m ? Number(m[1]) * 60 + Number(m[2]) : null;
}

export async function timedInNetns(
  ns: string,
  argv: readonly string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<TimedResult> {
  const dir = mkdtempSync(join(tmpdir(), 'kpbench-time-'));
  const out = join(dir, 'time');
  const method = timingMethod();
  const [file, ...args] = argv;
  if (file === undefined) throw new Error('empty command');
  const wrapped =
    method === 'gnu-time'
      ? [GNU_TIME, '-o', out, '-f', '%e %U %S %M', ...argv]
      : ['bash', '-c', '"$@"; rc=$?; times > "$0"; exit $rc', out, file, ...args];
  const started = performance.now();
  const child = spawnTracked('ip', ['netns', 'exec', ns, ...wrapped], {
    stdio: ['ignore', 'ignore', 'pipe'],
    ...(options.env ? { env: options.env } : {}),
  });
  let stderr = '';
  let tail = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => {
    if (stderr.length < 8192) stderr += d;
    tail = (tail + d).slice(-TAIL);
  });
  let timedOut = false;
  const timer =
    options.timeoutMs !== undefined
      ? setTimeout(() => {
          timedOut = true;
          if (child.pid !== undefined) {
            try {
              process.kill(-child.pid, 'SIGKILL');
            } catch {
              /* already gone */
            }
          }
        }, options.timeoutMs)
      : undefined;
  const exitCode = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => resolve(code));
  });
  if (timer) clearTimeout(timer);
  const wallS = (performance.now() - started) / 1000;

  let userS: number | null = null;
  let sysS: number | null = null;
  let maxRssKiB: number | null = null;
  try {
    const text = readFileSync(out, 'utf8').trim();
    if (method === 'gnu-time') {
      // "Command exited with non-zero status N" may precede the figures.
      const last = text.split('\n').at(-1) ?? '';
      const [, u, s, m] = last.trim().split(/\s+/).map(Number);
      userS = Number.isFinite(u) ? (u as number) : null;
      sysS = Number.isFinite(s) ? (s as number) : null;
      maxRssKiB = Number.isFinite(m) ? (m as number) : null;
    } else {
      // Second line: the children's user and system time.
      const [u, s] = (text.split('\n')[1] ?? '').trim().split(/\s+/);
      userS = parseBashDuration(u ?? '');
      sysS = parseBashDuration(s ?? '');
    }
  } catch {
    /* killed before the figures were written */
  }
  rmSync(dir, { recursive: true, force: true });
  return {
    wallS,
    userS,
    sysS,
    maxRssKiB,
    exitCode,
    timedOut,
    stderr: stderr.split('\n').slice(0, 8).join('\n'),
    stderrTail: tail,
  };
}
