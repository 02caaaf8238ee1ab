/**
 * @module kernel/spawner
 * The daemon's way of running kernel tools: through a small, long-lived child process
 * (spawner-child.ts) instead of forking the daemon itself. Forking copies the parent's page
 * tables: measured from Node, 4 ms per spawn at 50 MiB, 26 ms at 466 MiB — the daemon's size at
 * 10,000 Services — paid on every sync (docs/adr/0008). Same contract as `execProgram` (an
 * argument vector, optional stdin, exit 127 for a tool that cannot be started, abort kills it).
 *
 * The child serves `nft` runs in-process through libnftables where it can (libnftables.ts): no
 * process and no cache rebuilt per commit.
 *
 * The child runs under `setpriv --pdeathsig KILL` and exits when its stdin closes, so it dies
 * with the daemon, and tools fed on stdin run under the same wrapper there, so they die with it. If
 * the child cannot be started or dies, runs in flight answer as failed (the next sync is full, as
 * after any failure) and later runs fork a new child.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import type { Exec, ExecResult } from './exec.ts';
import { diesWithKproxy } from './tool-command.ts';

const CHILD = fileURLToPath(new URL('./spawner-child.ts', import.meta.url));

/** The child's answer: a run's result, or a call's (`result`). */
type Reply = ExecResult & { readonly result?: unknown };

export interface Spawner {
  readonly exec: Exec;
  /** How the child serves `nft` runs: 'libnftables', or why not (then the `nft` tool); undefined until it has said. */
  readonly nftChannel: () => string | undefined;
  /** A kernel read served inside the child (its network namespace): `name` as spawner-child.ts lists them. */
  call<T>(name: string, args: unknown): Promise<T>;
  /** The child's process id while it runs (setpriv and `ip netns exec` exec it: the same process). */
  pid(): number | undefined;
  /** Ends the child (its tools in flight are killed). */
  stop(): void;
}

/**
 * `prefix`: a command the child runs under (tests: `ip netns exec NS`, so the tools run in NS).
 * `onNftChannel`: told once per child how it serves `nft` runs (for the log).
 */
export function startSpawner(prefix: readonly string[] = [], onNftChannel?: (channel: string) => void): Spawner {
  /** The child and the runs it has not answered yet (each child fails only its own runs). */
  let current: { readonly process: ChildProcess; readonly pending: Map<number, (r: Reply) => void> } | undefined;
  let nextId = 1;
  let nftChannel: string | undefined;

  const start = (): NonNullable<typeof current> => {
    if (current && current.process.exitCode === null && current.process.signalCode === null) return current;
    const [first = process.execPath, ...rest] = [...prefix, process.execPath, CHILD];
    const [cmd, argv] = diesWithKproxy(first, rest);
    const c = spawn(cmd, [...argv], { stdio: ['pipe', 'pipe', 'inherit'] });
    const pending = new Map<number, (r: Reply) => void>();
    const failAll = (why: string): void => {
      for (const resolve of pending.values()) resolve({ exitCode: 1, stdout: '', stderr: why });
      pending.clear();
    };
    c.on('error', (e) => failAll(`kproxy's tool spawner failed: ${e.message}`));
    c.on('exit', (code, signal) => {
      if (current?.process === c) current = undefined;
      failAll(`kproxy's tool spawner exited (${signal ?? code}); the run's outcome is unknown`);
    });
    c.stdin?.on('error', () => undefined);
    createInterface({ input: c.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      let r: Reply & { id: number; nft?: string };
      try {
        r = JSON.parse(line) as typeof r;
      } catch {
        return;
      }
      if (r.nft !== undefined) {
        if (r.nft !== nftChannel) onNftChannel?.(r.nft);
        nftChannel = r.nft;
        return;
      }
      const resolve = pending.get(r.id);
      pending.delete(r.id);
      resolve?.(r);
    });
    current = { process: c, pending };
    return current;
  };

  const exec: Exec = (file, args, stdin, options) => {
    const { process: c, pending } = start();
    const id = nextId++;
    return new Promise<ExecResult>((resolve) => {
      pending.set(id, ({ exitCode, stdout, stderr }) => resolve({ exitCode, stdout, stderr }));
      c.stdin?.write(`${JSON.stringify({ id, file, args, ...(stdin !== undefined ? { stdin } : {}) })}\n`);
      options?.signal?.addEventListener('abort', () => c.stdin?.write(`${JSON.stringify({ id, kill: true })}\n`), {
        once: true,
      });
    });
  };

  const call = async <T>(name: string, args: unknown): Promise<T> => {
    const { process: c, pending } = start();
    const id = nextId++;
    const r = await new Promise<Reply>((resolve) => {
      pending.set(id, resolve);
      c.stdin?.write(`${JSON.stringify({ id, call: name, args })}\n`);
    });
    if (r.exitCode !== 0) throw new Error(`${name} failed: ${r.stderr}`);
    return r.result as T;
  };

  // Forked now, while the caller is small (later forks copy a larger parent), and ready by the first run.
  start();
  return {
    exec,
    call,
    nftChannel: () => nftChannel,
    pid: () => current?.process.pid,
    stop() {
      current?.process.stdin?.end();
      current = undefined;
    },
  };
}
