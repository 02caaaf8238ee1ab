// Thin wrappers around `ip`, `nft`, `sysctl`, `conntrack` run inside a network namespace.
// Always argument arrays, never a shell string.
import { execa } from 'execa';

export interface RunOptions {
  /** Text written to the command's stdin. */
  input?: string;
  /** Resolve instead of throwing on a non-zero exit. */
  allowFailure?: boolean;
  timeoutMs?: number;
}

export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Run a command; throws (with stderr in the message) unless it exits 0 or allowFailure is set. */
export async function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await execa(cmd, args, {
    reject: false,
    stripFinalNewline: false,
    timeout: opts.timeoutMs ?? 30_000,
    ...(opts.input !== undefined ? { input: opts.input } : { stdin: 'ignore' as const }),
  });
  const exitCode = r.exitCode ?? -1;
  const out: RunResult = { exitCode, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
  if (exitCode !== 0 && !opts.allowFailure) {
    const why = r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit ${exitCode}`;
    throw new Error(
      `${cmd} ${args.join(' ')}: ${why}\n${out.stderr || out.stdout}${opts.input !== undefined ? `\n--- stdin ---\n${opts.input}` : ''}`,
    );
  }
  return out;
}

/** `ip netns exec NS cmd args...` */
export function execIn(
  ns: string,
  cmd: string,
  args: readonly string[] = [],
  opts: RunOptions = {},
): Promise<RunResult> {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

/** `ip -n NS args...` */
export async function ip(ns: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  return (await run('ip', ['-n', ns, ...args], opts)).stdout;
}

/** `ip [-n NS] -batch -` with one command per line; ns=null runs in the caller's namespace (only for `netns ...`). */
export async function ipBatch(ns: string | null, lines: readonly string[]): Promise<void> {
  if (lines.length === 0) return;
  await run('ip', [...(ns === null ? [] : ['-n', ns]), '-batch', '-'], { input: `${lines.join('\n')}\n` });
}

/**
 * `nft ARGS` inside NS. With `stdin` and no `-f` in args, `-f -` is appended, so
 * `nft(ns, [], rulesetText)` loads a ruleset atomically.
 */
export async function nft(ns: string, args: readonly string[], stdin?: string): Promise<string> {
  const full = stdin !== undefined && !args.includes('-f') ? [...args, '-f', '-'] : [...args];
  return (await execIn(ns, 'nft', full, stdin !== undefined ? { input: stdin } : {})).stdout;
}

/** `sysctl -q -w k=v ...` inside NS. */
export async function sysctl(ns: string, values: Record<string, string | number>): Promise<void> {
  const args = Object.entries(values).map(([k, v]) => `${k}=${v}`);
  if (args.length === 0) return;
  await execIn(ns, 'sysctl', ['-q', '-w', ...args]);
}

/** `conntrack ARGS` inside NS (exit 1 with "0 flow entries" is not an error for -D/-F). */
export async function conntrack(ns: string, args: readonly string[]): Promise<string> {
  const r = await execIn(ns, 'conntrack', args, { allowFailure: true });
  if (r.exitCode !== 0 && !/0 flow entries/.test(r.stderr)) {
    throw new Error(`conntrack ${args.join(' ')} in ${ns}: exit ${r.exitCode}\n${r.stderr}`);
  }
  return r.stdout;
}

/** Names of all network namespaces (`ip netns list`). */
export async function listNamespaces(): Promise<string[]> {
  const out = (await run('ip', ['netns', 'list'])).stdout;
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}
