/**
 * @module kernel/spawner-child
 * The small process that starts kernel tools for the daemon (see spawner.ts): forking a small
 * process costs a few ms, forking the daemon's ~400 MiB one ~25 ms, on every sync.
 *
 * One JSON object per line each way, on stdin and stdout:
 *   out: {"nft":"libnftables"} or {"nft":"WHY NOT"}            first, once: how `nft` runs are served
 *   in:  {"id":1,"file":"nft","args":["-f","-"],"stdin":"…"}   run a program (never a shell)
 *        {"id":1,"kill":true}                                  stop it (SIGTERM, SIGKILL 2 s later)
 *        {"id":1,"call":"readNftTable","args":{…}}             a kernel read done here (kernel-calls.ts)
 *   out: {"id":1,"exitCode":0,"stdout":"…","stderr":"…"}       127 when it could not be started
 *        {"id":1,"exitCode":0,"stdout":"","stderr":"","result":…} a call's answer, as JSON in the line
 *                                                              (not a string of JSON: a table's
 *                                                              elements are megabytes, once is enough)
 * A request is acted on only once its whole line has arrived, so a daemon killed while writing a
 * transaction leaves nothing half-sent. When stdin closes (the daemon is gone) the tools still
 * running are killed and this process exits.
 *
 * `nft` runs are served in-process through libnftables where it loads (libnftables.ts). Such a run
 * cannot be killed on its own: a kill request for it ends this process (its runs answer as failed
 * and the next run starts a fresh child, as after any crash).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { loadNftLibrary, parseNftArgv, type NftRun } from './libnftables.ts';
import { runKernelCall } from './kernel-calls.ts';
import { toolCommand } from './tool-command.ts';

interface Run {
  readonly id: number;
  readonly file: string;
  readonly args: readonly string[];
  readonly stdin?: string;
}

async function call(id: number, name: string, args: unknown): Promise<void> {
  try {
    reply({ id, exitCode: 0, stdout: '', stderr: '', result: await runKernelCall(name, args) });
  } catch (e) {
    reply({ id, exitCode: 1, stdout: '', stderr: e instanceof Error ? e.message : String(e) });
  }
}

const running = new Map<number, ChildProcess>();
/** Runs served by libnftables: not killable, see the module comment. */
const inProcess = new Set<number>();
const nftLibrary = loadNftLibrary();
process.stdout.write(`${JSON.stringify({ nft: typeof nftLibrary === 'string' ? nftLibrary : 'libnftables' })}\n`);

interface ToolResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

function reply(o: ToolResult & { id: number; result?: unknown }): void {
  process.stdout.write(`${JSON.stringify(o)}\n`);
}

function run(req: Run): void {
  const served = req.file === 'nft' && typeof nftLibrary !== 'string' ? parseNftArgv(req.args, req.stdin) : undefined;
  if (served) void runInProcess(req, served);
  else spawnTool(req, (r) => reply({ id: req.id, ...r }));
}

async function runInProcess(req: Run, nft: NftRun): Promise<void> {
  if (typeof nftLibrary === 'string') return;
  inProcess.add(req.id);
  let r = await nftLibrary.run(nft);
  // libnftables does not say which line of a buffer it refused (its context line is the first
  // one): a refused transaction is checked again by the nft tool, whose message names the line.
  if (r.exitCode !== 0 && !nft.listing && req.stdin !== undefined) {
    const check = await new Promise<ToolResult>((resolve) =>
      spawnTool({ ...req, args: ['--check', ...req.args] }, resolve),
    );
    if (check.exitCode !== 0 && check.exitCode !== 127) r = { ...r, stderr: check.stderr };
  }
  inProcess.delete(req.id);
  reply({ id: req.id, ...r });
}

function spawnTool(req: Run, done: (r: ToolResult) => void): void {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let finished = false;
  const finish = (exitCode: number, extra = ''): void => {
    if (finished) return;
    finished = true;
    running.delete(req.id);
    done({
      exitCode,
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(err).toString('utf8') + extra,
    });
  };
  const [file, args] = toolCommand(req.file, req.args, req.stdin);
  const child = spawn(file, [...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  running.set(req.id, child);
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  // ENOENT, EACCES: reported as a missing tool, as the direct runner does.
  child.on('error', (e) => finish(127, e.message));
  child.on('close', (code, signal) => finish(code ?? 128 + signalNumber(signal)));
  // A tool that exits without reading all of its input must not crash this process (EPIPE).
  child.stdin.on('error', () => undefined);
  child.stdin.end(req.stdin ?? '');
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal === 'SIGKILL' ? 9 : signal === 'SIGTERM' ? 15 : 1;
}

function kill(id: number): void {
  if (inProcess.has(id)) process.exit(1);
  const child = running.get(id);
  if (!child) return;
  child.kill('SIGTERM');
  setTimeout(() => child.kill('SIGKILL'), 2000).unref();
}

const lines = createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY });
lines.on('line', (line) => {
  let req: Run & { kill?: boolean; call?: string; args?: unknown };
  try {
    req = JSON.parse(line) as typeof req;
  } catch {
    return;
  }
  if (req.kill) kill(req.id);
  else if (req.call !== undefined) void call(req.id, req.call, req.args);
  else run(req);
});
lines.on('close', () => {
  for (const child of running.values()) child.kill('SIGKILL');
  process.exit(0);
});
