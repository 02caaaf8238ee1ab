/**
 * @module bench/kernel-probe
 * Seeing a change in the kernel of the current network namespace, from outside kproxy:
 *  - `serviceHasEndpoint`: one look — nftables mode asks for the Service's elements of
 *    kproxy's `endpoint-addresses` map by key (`nft get element`: a lookup, whatever the size of
 *    the ruleset); iptables mode reads `iptables-save -t nat` (the whole nat table: cheap only at
 *    the sizes iptables mode reaches);
 *  - `NftMonitor`: `nft monitor` running beside the daemon, so an element's arrival is seen when
 *    the kernel announces the commit, without polling.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { IptablesFlavor } from '../config/proxy-config.ts';
import { now } from './kproxy-run.ts';
import type { BenchMode } from './pipeline.ts';

export interface ServicePortRef {
  readonly clusterIp: string;
  readonly port: number;
  /** Endpoints the Service has (the map's indexes 0 … endpoints-1). */
  readonly endpoints: number;
}

/** `ip` as a whole address in `text` (10.250.0.5 does not match 10.250.0.50). */
export function mentions(text: string, ip: string): boolean {
  return new RegExp(`(?<![\\d.])${ip.replace(/\./g, '\\.')}(?![\\d])`).test(text);
}

/** Runs a command; its stdout, or undefined when it failed. Asynchronous: a caller that also serves the API keeps serving. */
function output(file: string, args: readonly string[]): Promise<string | undefined> {
  return new Promise((resolve) =>
    execFile(file, args, { encoding: 'utf8', maxBuffer: 1 << 30 }, (err, stdout) => resolve(err ? undefined : stdout)),
  );
}

/** Whether the kernel sends `svc`'s TCP traffic to `ip` (IPv4). */
export async function serviceHasEndpoint(
  mode: BenchMode,
  flavor: IptablesFlavor,
  svc: ServicePortRef,
  ip: string,
): Promise<boolean> {
  const keys = Array.from({ length: svc.endpoints }, (_, k) => `${svc.clusterIp} . tcp . ${svc.port} . ${k}`);
  const text =
    mode === 'nftables'
      ? await output('nft', ['get', 'element', 'ip', 'kproxy', 'endpoint-addresses', `{ ${keys.join(', ')} }`])
      : await output(`iptables-${flavor === 'legacy' ? 'legacy' : 'nft'}-save`, ['-t', 'nat']);
  return text !== undefined && mentions(text, ip);
}

/**
 * `nft monitor` in the current namespace. `ready()` resolves once it demonstrably receives events
 * (a probe table added and deleted); `seen(ip)` with the arrival time of the first event line
 * that mentions `ip` after the call.
 */
export class NftMonitor {
  readonly #proc: ChildProcess;
  #waiters: { test: (line: string) => boolean; resolve: (at: number) => void }[] = [];
  #exited = false;

  constructor() {
    this.#proc = spawn('nft', ['monitor'], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.#proc.on('exit', () => {
      this.#exited = true;
    });
    if (!this.#proc.stdout) throw new Error('nft monitor: no stdout');
    createInterface({ input: this.#proc.stdout }).on('line', (line) => {
      const at = now();
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.test(line)) return true;
        w.resolve(at);
        return false;
      });
    });
  }

  #next(what: string, test: (line: string) => boolean, timeoutMs: number): Promise<number> {
    return new Promise((resolve, reject) => {
      if (this.#exited) return reject(new Error('nft monitor exited'));
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done);
        reject(new Error(`nft monitor: no event for ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (at: number) => {
        clearTimeout(timer);
        resolve(at);
      };
      this.#waiters.push({ test, resolve: done });
    });
  }

  async ready(timeoutMs: number): Promise<void> {
    const table = `kpbench-probe-${process.pid}`;
    const deadline = now() + timeoutMs;
    // nft monitor reads the ruleset before it listens: repeat the probe until one is seen.
    while (now() < deadline) {
      const seen = this.#next('the probe table', (l) => l.includes(table), 1000).then(
        () => true,
        () => false,
      );
      spawnSync('nft', ['add', 'table', 'ip', table]);
      spawnSync('nft', ['delete', 'table', 'ip', table]);
      if (await seen) return;
    }
    throw new Error(`nft monitor did not report events within ${timeoutMs} ms`);
  }

  seen(ip: string, timeoutMs: number): Promise<number> {
    return this.#next(ip, (l) => l.startsWith('add element') && mentions(l, ip), timeoutMs);
  }

  stop(): void {
    this.#proc.kill('SIGTERM');
  }
}
