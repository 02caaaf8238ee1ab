/**
 * The packet-flow suite's cross-check of `kproxy explain`: every flow's packets are also explained,
 * and what explain says (verdict, the endpoints it may land on, masquerade) must be what the
 * packets did. Explain runs as the real CLI with the same manifests and flags the backend synced
 * (one `kproxy explain --packets -` process per synced state, answering one line per packet), so
 * a mismatch between what kproxy programs and what it explains fails the flow.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { Explanation } from '../../src/explain/explain.ts';
import { canonical, unmapV4 } from '../../src/sandbox/addr.ts';
import type { Member, ProbeResult, ProbeSpec, Tally, Topology } from '../../src/sandbox/topology.ts';

const KPROXY = fileURLToPath(new URL('../../bin/kproxy', import.meta.url));

/** One `kproxy explain --packets -` process over one directory of manifests. */
class ExplainProcess {
  readonly #child: ChildProcess;
  readonly #dir: string;
  readonly #waiting: { resolve: (line: string) => void; reject: (e: Error) => void }[] = [];
  #stderr = '';
  #exited = false;

  constructor(mode: string, objects: readonly object[], flags: readonly string[], localAddresses: readonly string[]) {
    this.#dir = mkdtempSync(join(tmpdir(), 'kproxy-explain-'));
    writeFileSync(join(this.#dir, 'cluster.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
    this.#child = spawn(
      KPROXY,
      [
        'explain',
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
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    this.#child.stderr?.on('data', (d: Buffer) => {
      this.#stderr += d.toString();
    });
    const lines = createInterface({ input: this.#child.stdout as NodeJS.ReadableStream });
    lines.on('line', (line) => this.#waiting.shift()?.resolve(line));
    this.#child.on('exit', (code) => {
      this.#exited = true;
      for (const w of this.#waiting.splice(0))
        w.reject(new Error(`kproxy explain exited (${code}) without an answer: ${this.#tail()}`));
    });
  }

  ask(line: string): Promise<Explanation> {
    if (this.#exited) return Promise.reject(new Error(`kproxy explain is not running: ${this.#tail()}`));
    return new Promise<string>((resolve, reject) => {
      this.#waiting.push({ resolve, reject });
      this.#child.stdin?.write(`${line}\n`);
    }).then((text) => {
      const parsed = JSON.parse(text) as Explanation | { error: string };
      if ('error' in parsed) throw new Error(`kproxy explain ${line}: ${parsed.error}`);
      return parsed;
    });
  }

  async close(): Promise<void> {
    if (!this.#exited) {
      const exited = new Promise((resolve) => this.#child.once('exit', resolve));
      this.#child.stdin?.end();
      await exited;
    }
    rmSync(this.#dir, { recursive: true, force: true });
  }

  #tail(): string {
    return this.#stderr.split('\n').slice(-5).join('\n');
  }
}

export interface ExplainChecker {
  /** The backend synced these objects with these flags: later questions are about this state. */
  synced(objects: readonly object[], flags: readonly string[]): Promise<void>;
  /** Explains `spec` sent by `from` and expects what `outcome` (one probe, or a tally) shows. */
  expectExplained(from: Member, spec: ProbeSpec, outcome: ProbeResult | Tally): Promise<Explanation | undefined>;
  close(): Promise<void>;
}

/** A checker for one backend's suite; `enabled` false makes every call a no-op. */
export function explainChecker(mode: string, topology: () => Topology, enabled = true): ExplainChecker {
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
      if (!enabled) return undefined;
      const topo = topology();
      if (!state) throw new Error('expectExplained before any sync');
      proc ??= new ExplainProcess(mode, state.objects, state.flags, topo.nodeAddresses());
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
