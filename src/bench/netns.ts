/**
 * @module bench/netns
 * Fresh network namespaces for the bench, and the child processes started in them. Everything is
 * registered so it is removed on every way out: normal end, exception, SIGINT/SIGTERM/SIGHUP,
 * and (for a bench that was killed) at the next run, which sweeps `kpbench<pid>-…` namespaces
 * whose owner process is gone.
 */
import { pidAlive } from '../util/process.ts';
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export const NS_PREFIX = 'kpbench';
const NS_RE = /^kpbench(\d+)-/;

const liveNamespaces = new Set<string>();
const liveChildren = new Set<ChildProcess>();
let seq = 0;
let hooksInstalled = false;

function run(file: string, args: readonly string[], input?: string): { ok: boolean; stdout: string; stderr: string } {
  try {
    const stdout = execFileSync(file, args, {
      input: input ?? '',
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
      maxBuffer: 1 << 30,
    });
    return { ok: true, stdout, stderr: '' };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    return { ok: false, stdout: e.stdout ?? '', stderr: e.stderr ?? e.message };
  }
}

/** Runs `ip ARGS` (synchronously); throws with ip's message on failure. */
export function ip(args: readonly string[]): string {
  const r = run('ip', args);
  if (!r.ok) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** `ip [-n NETNS] -batch -` with one command per line. */
export function ipBatch(lines: readonly string[], netns?: string): void {
  if (lines.length === 0) return;
  const r = run('ip', [...(netns ? ['-n', netns] : []), '-batch', '-'], `${lines.join('\n')}\n`);
  if (!r.ok) throw new Error(`ip -batch: ${r.stderr.trim()}\n${lines.join('\n')}`);
}

function killChild(child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  try {
    // Children are started as their own process group (detached): take the whole group.
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    try {
      child.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
}

function deleteNamespaceSync(name: string): void {
  // Processes still inside (a server whose parent died, a killed nft's leftovers) go first.
  const pids = run('ip', ['netns', 'pids', name]).stdout.split(/\s+/).filter(Boolean).map(Number);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  run('ip', ['netns', 'del', name]);
  liveNamespaces.delete(name);
}

/** Kills every tracked child and deletes every namespace this process created. Idempotent. */
export function cleanupAll(): void {
  for (const c of liveChildren) killChild(c);
  liveChildren.clear();
  for (const ns of [...liveNamespaces]) deleteNamespaceSync(ns);
}

export function installCleanupHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', cleanupAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}, removing namespaces and child processes...\n`);
      cleanupAll();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
}

/** Deletes namespaces left by bench runs whose process is gone. Returns their names. */
export function sweepLeftovers(): string[] {
  const names = run('ip', ['netns', 'list'])
    .stdout.split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
  const stale = names.filter((n) => {
    const m = NS_RE.exec(n);
    return m !== null && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]));
  });
  for (const n of stale) deleteNamespaceSync(n);
  return stale;
}

/** Creates a fresh, empty network namespace (loopback up). Name: `kpbench<pid>-<seq>-<label>`. */
export function createNetns(label: string): string {
  installCleanupHooks();
  const name = `${NS_PREFIX}${process.pid}-${seq++}-${label}`.slice(0, 60);
  ip(['netns', 'add', name]);
  liveNamespaces.add(name);
  ip(['-n', name, 'link', 'set', 'lo', 'up']);
  return name;
}

export function deleteNetns(name: string): void {
  deleteNamespaceSync(name);
}

/** Spawns a tracked child in its own process group (so a timeout or Ctrl-C takes all of it). */
export function spawnTracked(file: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
  installCleanupHooks();
  const child = spawn(file, args, { ...options, detached: true });
  liveChildren.add(child);
  const forget = () => liveChildren.delete(child);
  child.once('exit', forget);
  child.once('error', forget);
  return child;
}

export function killTracked(child: ChildProcess): void {
  killChild(child);
  liveChildren.delete(child);
}

/** Runs a tracked child to completion and parses the last line of its stdout as JSON. */
export async function runForJson<T>(what: string, file: string, args: readonly string[]): Promise<T> {
  const child = spawnTracked(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (c) => resolve(c));
  });
  if (code !== 0) throw new Error(`${what} failed (exit ${code}): ${stderr.slice(0, 2000)}`);
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as T;
}

/** Runs fn with a fresh namespace that is deleted afterwards, whatever happens. */
export async function withNetns<T>(label: string, fn: (ns: string) => Promise<T>): Promise<T> {
  const ns = createNetns(label);
  try {
    return await fn(ns);
  } finally {
    deleteNetns(ns);
  }
}
