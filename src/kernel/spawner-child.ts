/**
 * @module kernel/spawner-child
 * The small process that starts kernel tools for the daemon (see spawner.ts): forking a small
 * process costs a few ms, forking the daemon's ~400 MiB one ~25 ms, on every sync.
 *
 * One JSON object per line each way, on stdin and stdout:
 *   in:  {"id":1,"file":"nft","args":["-f","-"],"stdin":"…"}   run a program (never a shell)
 *        {"id":1,"kill":true}                                  stop it (SIGTERM, SIGKILL 2 s later)
 *   out: {"id":1,"exitCode":0,"stdout":"…","stderr":"…"}       127 when it could not be started
 * A request is acted on only once its whole line has arrived, so a daemon killed while writing a
 * transaction leaves nothing half-sent. When stdin closes (the daemon is gone) the tools still
 * running are killed and this process exits.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

interface Run {
  readonly id: number;
  readonly file: string;
  readonly args: readonly string[];
  readonly stdin?: string;
}

const running = new Map<number, ChildProcess>();

function reply(o: { id: number; exitCode: number; stdout: string; stderr: string }): void {
  process.stdout.write(`${JSON.stringify(o)}\n`);
}

function run(req: Run): void {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let done = false;
  const finish = (exitCode: number, extra = ''): void => {
    if (done) return;
    done = true;
    running.delete(req.id);
    reply({
      id: req.id,
      exitCode,
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(err).toString('utf8') + extra,
    });
  };
  const child = spawn(req.file, req.args, { stdio: ['pipe', 'pipe', 'pipe'] });
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
  const child = running.get(id);
  if (!child) return;
  child.kill('SIGTERM');
  setTimeout(() => child.kill('SIGKILL'), 2000).unref();
}

const lines = createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY });
lines.on('line', (line) => {
  let req: Run & { kill?: boolean };
  try {
    req = JSON.parse(line) as Run & { kill?: boolean };
  } catch {
    return;
  }
  if (req.kill) kill(req.id);
  else run(req);
});
lines.on('close', () => {
  for (const child of running.values()) child.kill('SIGKILL');
  process.exit(0);
});
