/**
 * @module kernel/spawner
 * The daemon's way of running kernel tools: through a small, long-lived child process
 * (spawner-child.ts) instead of forking the daemon itself. Forking copies the parent's page
 * tables: measured from Node, 4 ms per spawn at 50 MiB, 26 ms at 466 MiB — the daemon's size at
 * 10,000 Services — paid on every sync (docs/adr/0008). Same contract as `execProgram` (an
 * argument vector, optional stdin, exit 127 for a tool that cannot be started, abort kills it).
 *
 * The child runs under `setpriv --pdeathsig KILL` and exits when its stdin closes, so it dies
 * with the daemon, and tools fed on stdin run under the same wrapper there, so they die with it. If
 * the child cannot be started or dies, runs in flight answer as failed (the next sync is full, as
 * after any failure) and later runs fork a new child.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { diesWithKproxy, toolCommand, type Exec, type ExecResult } from './exec.ts';

const CHILD = fileURLToPath(new URL('./spawner-child.ts', import.meta.url));

export interface Spawner {
  readonly exec: Exec;
  /** Ends the child (its tools in flight are killed). */
  stop(): void;
}

/** `prefix`: a command the child runs under (tests: `ip netns exec NS`, so the tools run in NS). */
export function startSpawner(prefix: readonly string[] = []): Spawner {
  /** The child and the runs it has not answered yet (each child fails only its own runs). */
  let current: { readonly process: ChildProcess; readonly pending: Map<number, (r: ExecResult) => void> } | undefined;
  let nextId = 1;

  const start = (): NonNullable<typeof current> => {
    if (current && current.process.exitCode === null && current.process.signalCode === null) return current;
    const [first = process.execPath, ...rest] = [...prefix, process.execPath, CHILD];
    const [cmd, argv] = diesWithKproxy(first, rest);
    const c = spawn(cmd, [...argv], { stdio: ['pipe', 'pipe', 'inherit'] });
    const pending = new Map<number, (r: ExecResult) => void>();
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
      let r: ExecResult & { id: number };
      try {
        r = JSON.parse(line) as ExecResult & { id: number };
      } catch {
        return;
      }
      const resolve = pending.get(r.id);
      pending.delete(r.id);
      resolve?.({ exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr });
    });
    current = { process: c, pending };
    return current;
  };

  const exec: Exec = (file, args, stdin, options) => {
    const { process: c, pending } = start();
    const id = nextId++;
    const [cmd, argv] = toolCommand(file, args, stdin);
    return new Promise<ExecResult>((resolve) => {
      pending.set(id, resolve);
      c.stdin?.write(`${JSON.stringify({ id, file: cmd, args: argv, ...(stdin !== undefined ? { stdin } : {}) })}\n`);
      options?.signal?.addEventListener('abort', () => c.stdin?.write(`${JSON.stringify({ id, kill: true })}\n`), {
        once: true,
      });
    });
  };

  return {
    exec,
    stop() {
      current?.process.stdin?.end();
      current = undefined;
    },
  };
}
