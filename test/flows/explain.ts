/**
 * The packet-flow suite's cross-check of `kproxy explain`: every flow's packets are also explained,
 * and what explain says (verdict, the endpoints it may land on, masquerade) must be what the
 * packets did. Explain runs as the real CLI with the same manifests and flags the backend synced
 * (one `kproxy explain --packets -` process per synced state, answering one line per packet; in the
 * IPVS VM the same command in this process), so a mismatch between what kproxy programs and what it
 * explains fails the flow, in every mode.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { loadProxyConfig } from '../../src/config/load.ts';
import type { Explanation } from '../../src/explain/explain.ts';
import { canonical, unmapV4 } from '../../src/sandbox/addr.ts';
import type { Member, ProbeResult, ProbeSpec, Tally, Topology } from '../../src/sandbox/topology.ts';
import { createLogger } from '../../src/util/log.ts';

const KPROXY = fileURLToPath(new URL('../../bin/kproxy', import.meta.url));

/** A running `kproxy explain --packets -`: packet lines in, one JSON answer line out per packet. */
interface ExplainRun {
  readonly stdin: NodeJS.WritableStream;
  readonly stdout: NodeJS.ReadableStream;
  /** Settles when it ended, with how (`exit code 2`). */
  readonly ended: Promise<string>;
  /** The end of its error output, for messages. */
  tail(): string;
}

/** The real CLI, as a process. */
function cliRun(args: readonly string[]): ExplainRun {
  const child = spawn(KPROXY, ['explain', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return {
    stdin: child.stdin as NodeJS.WritableStream,
    stdout: child.stdout as NodeJS.ReadableStream,
    ended: new Promise((resolve) => child.on('exit', (code) => resolve(`exit code ${code}`))),
    tail: () => stderr.split('\n').slice(-5).join('\n'),
  };
}

/**
 * The CLI's own explain command (configuration parsed as `kproxy explain ARGS` parses it), run in
 * this process: inside the IPVS VM a Node start costs tens of seconds under emulation.
 */
function inProcessRun(args: readonly string[]): ExplainRun {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  let log = '';
  const ended = (async () => {
    const [{ explain }, { COMMAND_FLAGS }] = await Promise.all([
      import('../../src/cli/commands/explain.ts'),
      import('../../src/cli/main.ts'),
    ]);
    const loaded = loadProxyConfig({
      argv: args,
      hostname: hostname(),
      readFile: (path) => readFileSync(path, 'utf8'),
      commandFlags: COMMAND_FLAGS['explain'],
    });
    const logger = createLogger(0, {
      write: (line: string) => {
        log += line;
      },
    });
    return `exit code ${await explain(loaded, logger, stdout, stdin)}`;
  })()
    .catch((err: unknown) => `threw ${err instanceof Error ? err.message : String(err)}`)
    .finally(() => stdout.end());
  return { stdin, stdout, ended, tail: () => log.split('\n').slice(-5).join('\n') };
}

/** One explain run over one directory of manifests. */
class ExplainProcess {
  readonly #run: ExplainRun;
  readonly #dir: string;
  readonly #waiting: { resolve: (line: string) => void; reject: (e: Error) => void }[] = [];
  #exited = false;

  constructor(
    mode: string,
    objects: readonly object[],
    flags: readonly string[],
    localAddresses: readonly string[],
    inProcess: boolean,
  ) {
    this.#dir = mkdtempSync(join(tmpdir(), 'kproxy-explain-'));
    writeFileSync(join(this.#dir, 'cluster.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
    const args = [
      '--proxy-mode',
      mode,
      '--manifests',
      this.#dir,
      '--packets',
      '-',
      '--output',
      'json',
      `--local-addresses=${localAddresses.join(',')}`,
      ...flags,
    ];
    this.#run = inProcess ? inProcessRun(args) : cliRun(args);
    const lines = createInterface({ input: this.#run.stdout });
    lines.on('line', (line) => this.#waiting.shift()?.resolve(line));
    void this.#run.ended.then((how) => {
      this.#exited = true;
      for (const w of this.#waiting.splice(0))
        w.reject(new Error(`kproxy explain ended (${how}) without an answer: ${this.#run.tail()}`));
    });
  }

  ask(line: string): Promise<Explanation> {
    if (this.#exited) return Promise.reject(new Error(`kproxy explain is not running: ${this.#run.tail()}`));
    return new Promise<string>((resolve, reject) => {
      this.#waiting.push({ resolve, reject });
      this.#run.stdin.write(`${line}\n`);
    }).then((text) => {
      const parsed = JSON.parse(text) as Explanation | { error: string };
      if ('error' in parsed) throw new Error(`kproxy explain ${line}: ${parsed.error}`);
      return parsed;
    });
  }

  async close(): Promise<void> {
    this.#run.stdin.end();
    await this.#run.ended;
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

export interface ExplainChecker {
  /** The backend synced these objects with these flags: later questions are about this state. */
  synced(objects: readonly object[], flags: readonly string[]): Promise<void>;
  /** Explains `spec` sent by `from` and expects what `outcome` (one probe, or a tally) shows. */
  expectExplained(from: Member, spec: ProbeSpec, outcome: ProbeResult | Tally): Promise<Explanation>;
  close(): Promise<void>;
}

/** A checker for one backend's suite; `inProcess`: explain runs in this process (see inProcessRun). */
export function explainChecker(mode: string, topology: () => Topology, inProcess = false): ExplainChecker {
  let state: { objects: readonly object[]; flags: readonly string[] } | undefined;
  let proc: ExplainProcess | undefined;
  const routeSources = new Map<string, string>();

  /** The source address the prober's kernel picks: its own for pods and clients, a route lookup on the node. */
  const sourceOf = async (topo: Topology, from: Member, host: string): Promise<string> => {
    const fam = host.includes(':') ? 'v6' : 'v4';
    if (from.ns !== topo.node.ns) return from[fam];
    let src = routeSources.get(host);
    if (src === undefined) {
      const [route] = JSON.parse(await topo.ip(topo.node, ['-j', 'route', 'get', host])) as { prefsrc?: string }[];
      src = route?.prefsrc ?? topo.node[fam];
      routeSources.set(host, src);
    }
    return src;
  };

  return {
    async synced(objects, flags) {
      await proc?.close();
      proc = undefined;
      state = { objects, flags };
    },
    async expectExplained(from, spec, outcome) {
      const topo = topology();
      if (!state) throw new Error('expectExplained before any sync');
      proc ??= new ExplainProcess(mode, state.objects, state.flags, topo.nodeAddresses(), inProcess);
      const src = await sourceOf(topo, from, spec.host);
      const dst = spec.host.includes(':') ? `[${spec.host}]:${spec.port}` : `${spec.host}:${spec.port}`;
      const e = await proc.ask(`${src} ${dst} ${spec.proto}`);
      const results = 'results' in outcome ? outcome.results : [outcome];
      const what = `${from.name} → ${dst}/${spec.proto} (${mode}): explain says ${e.verdict} (${e.reason})`;
      for (const r of results) {
        const seen = `${what}; the packet: ${JSON.stringify(r)}`;
        switch (e.verdict) {
          case 'dnat': {
            expect(r.kind, seen).toBe('answered');
            if (r.kind !== 'answered') break;
            // A UDP server on a wildcard socket does not learn the local address: the pod's own, then.
            const local = r.local !== '' ? r.local : topo.pod(r.pod)[spec.host.includes(':') ? 'v6' : 'v4'];
            expect(e.endpoints.map(normalEndpoint), seen).toContain(normalEndpoint(`${local}:${r.localPort}`));
            const masqueraded = address(r.peer) !== address(src);
            expect(masqueraded, `${seen}; masquerade: ${e.masqueradeReason}`).toBe(e.masquerade);
            break;
          }
          case 'reject':
            expect(r.kind, seen).toBe('rejected');
            break;
          case 'drop':
            expect(r.kind, seen).toBe('timeout');
            break;
          case 'none':
            // Not intercepted: routed on (the sandbox's upstream answers admin-prohibited), or served by the node itself.
            expect(r.kind === 'error' || (r.kind === 'answered' && r.pod === 'node'), seen).toBe(true);
            break;
        }
      }
      return e;
    },
    async close() {
      await proc?.close();
      proc = undefined;
    },
  };
}

const address = (ip: string) => canonical(unmapV4(ip));

/** `IP:port` / `[IPv6]:port` / `IPv6:port` (as a server reports it) in one canonical form. */
function normalEndpoint(text: string): string {
  const m = /^\[?(.+?)\]?:(\d+)$/.exec(text);
  if (!m) return text;
  const ip = address(m[1] ?? '');
  return ip.includes(':') ? `[${ip}]:${m[2]}` : `${ip}:${m[2]}`;
}
