/**
 * @module kernel/exec
 * How every kernel tool (nft, iptables-restore, ipvsadm, conntrack, ip) is run: an argument
 * vector, never a shell, with optional standard input. Injectable, so tests run the same code in
 * a network namespace or against a fake.
 *
 * Every run is bounded: `withTimeout` (which the daemon wraps around whatever it is given) answers
 * a tool that has not finished within its time as exit code 124 with a clear message, and aborts it
 * (the real runner kills the process, SIGTERM then SIGKILL), so a hung nft or iptables-restore can
 * never hang the daemon; the next sync is full, as after any failure.
 *
 * A tool fed on stdin dies with kproxy (tool-command.ts).
 */
import { execa } from 'execa';
import { toolCommand } from './tool-command.ts';

export interface ExecResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ExecOptions {
  /** Aborting it kills the process (the runner answers as for a timeout). */
  readonly signal?: AbortSignal;
}

/** Runs a program with an argument vector (never a shell); injectable for tests and netns use. */
export type Exec = (
  file: string,
  args: readonly string[],
  stdin?: string,
  options?: ExecOptions,
) => Promise<ExecResult>;

/** Exit code of a run that did not finish in time (as coreutils' `timeout`). */
export const EXIT_TIMED_OUT = 124;

/** Default bound of one kernel tool run (`--kernel-tool-timeout`): far above a 10k-Service transaction's seconds. */
export const DEFAULT_KERNEL_TOOL_TIMEOUT_MS = 60_000;

export const execProgram: Exec = async (file, args, stdin, options) => {
  const [cmd, argv] = toolCommand(file, args, stdin);
  try {
    const r = await execa(cmd, argv, {
      input: stdin ?? '',
      reject: false,
      stripFinalNewline: false,
      maxBuffer: 1 << 30,
      ...(options?.signal ? { cancelSignal: options.signal, forceKillAfterDelay: 2000 } : {}),
    });
    if (r.isCanceled) return timedOut(file, args, String(options?.signal?.reason ?? 'aborted'));
    return { exitCode: r.exitCode ?? 1, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    // Spawning failed (ENOENT, EACCES): report as nft's absence.
    return { exitCode: 127, stdout: '', stderr: err instanceof Error ? err.message : String(err) };
  }
};

/** Runs nft inside another network namespace, through `ip netns exec`. */
export function inNetns(netns: string, exec: Exec = execProgram): Exec {
  return (file, args, stdin, options) => exec('ip', ['netns', 'exec', netns, file, ...args], stdin, options);
}

/**
 * `exec` with every run bounded by `timeoutMs`: past it the run is aborted (through the options'
 * signal) and answered with exit code 124 and `FILE did not finish within N ms; killed`, whether or
 * not the inner runner honours the signal. 0 or less: unbounded.
 */
export function withTimeout(exec: Exec, timeoutMs: number): Exec {
  if (!(timeoutMs > 0)) return exec;
  return (file, args, stdin, options) => {
    const abort = new AbortController();
    const onOuterAbort = (): void => abort.abort(options?.signal?.reason);
    options?.signal?.addEventListener('abort', onOuterAbort, { once: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<ExecResult>((resolve) => {
      timer = setTimeout(() => {
        const why = `did not finish within ${timeoutMs} ms; killed`;
        abort.abort(why);
        resolve(timedOut(file, args, why));
      }, timeoutMs);
    });
    const run = exec(file, args, stdin, { signal: abort.signal });
    // A late rejection of the abandoned run must not go unhandled.
    run.catch(() => undefined);
    return Promise.race([run, expired]).finally(() => {
      clearTimeout(timer);
      options?.signal?.removeEventListener('abort', onOuterAbort);
    });
  };
}

function timedOut(file: string, args: readonly string[], why: string): ExecResult {
  // The tool's own name, not `ip netns exec NS`'s.
  const tool = file === 'ip' && args[0] === 'netns' && args[1] === 'exec' ? (args[3] ?? file) : file;
  return { exitCode: EXIT_TIMED_OUT, stdout: '', stderr: `${tool} ${why}` };
}
