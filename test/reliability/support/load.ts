/**
 * Starts load-tool.ts inside a namespace and collects its JSON lines.
 */
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { collectJsonLines } from '../../support/daemon-harness.ts';

const TOOL = fileURLToPath(new URL('./load-tool.ts', import.meta.url));

export interface TcpRecord {
  /** Epoch ms the connection was opened. */
  readonly t: number;
  /** Index of the target. */
  readonly i: number;
  readonly k: 'ok' | 'timeout' | 'refused' | 'reset' | 'error';
  readonly ms: number;
  readonly pod?: string;
  /** The endpoint that answered (`IP:PORT` as the server saw it). */
  readonly ep?: string;
  readonly code?: string;
}

export interface UdpRecord {
  readonly seq: number;
  readonly t: number;
  readonly pod: string | null;
}

export interface LoadProcess<T> {
  /** Records so far (the `done` line excluded). */
  readonly records: T[];
  /** An echo server is listening. */
  readonly listening: boolean;
  /** Ends the load (in-flight connections finish) and returns every record. */
  stop(): Promise<T[]>;
}

export function startLoad<T>(ns: string, mode: 'tcp' | 'udp' | 'echo', opts: object): LoadProcess<T> {
  const proc = execa('ip', ['netns', 'exec', ns, process.execPath, TOOL, mode, JSON.stringify(opts)], {
    reject: false,
    buffer: false,
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'inherit',
  });
  const lines: Record<string, unknown>[] = [];
  collectJsonLines(proc.stdout, lines as never);
  const ours = (): T[] => lines.filter((l) => l['done'] === undefined && l['listening'] === undefined) as T[];
  let stopped: Promise<T[]> | undefined;
  return {
    get records() {
      return ours();
    },
    get listening() {
      return lines.some((l) => l['listening'] === true);
    },
    stop() {
      stopped ??= (async () => {
        proc.stdin?.end();
        const killer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
        await proc;
        clearTimeout(killer);
        return ours();
      })();
      return stopped;
    },
  };
}

/** A UDP echo server (answers with its name and the datagram's sequence number), once it listens. */
export async function echoServer(ns: string, name: string, port: number): Promise<LoadProcess<unknown>> {
  const p = startLoad<unknown>(ns, 'echo', { name, port });
  for (let i = 0; i < 200 && !p.listening; i++) await new Promise((r) => setTimeout(r, 25));
  if (!p.listening) throw new Error(`the echo server in ${ns} did not start`);
  return p;
}
