/**
 * @module bench/kernel-probe
 * Seeing a change in the kernel of the current network namespace, from outside kproxy:
 *  - `localEndpointInKernel`: one look for an endpoint on this node — nftables mode lists
 *    kproxy's `hairpin` set alone (nft then reads that set's elements only: the local endpoints,
 *    ~2% of all in the bench's clusters; at 2000 × 10, 0.01 s where listing the table takes
 *    1.2 s), once its base chain `nat-prerouting` exists (a new table is hooked last, ADR
 *    0012); iptables mode lists the endpoint's own KUBE-SEP chain (`iptables -t nat -S CHAIN`,
 *    the name computed as kproxy does);
 *  - `serviceHasEndpoint`: any endpoint of a Service, by key from kproxy's `endpoint-addresses`
 *    map or the shard of it that holds the Service (`nft get element`; nft 1.0.6 still reads every
 *    element of the table first: ~0.5 s at 2000 × 10);
 *  - `NftMonitor`: `nft monitor` running beside the daemon, so an element's (nftables mode) or a
 *    rule's (iptables-nft, which writes through nf_tables too) arrival is seen when the kernel
 *    announces the commit, without polling.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { endpointChainName } from '../backends/iptables/render/names.ts';
import { ENDPOINT_MAP, endpointAddressMap, shardOf } from '../backends/nftables/render/names.ts';
import type { IptablesFlavor } from '../config/proxy-config.ts';
import { TARGET_PORT, type EndpointRef } from './cluster-gen.ts';
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

/** `iptables-nft[-save]` or `iptables-legacy[-save]` (auto: kproxy picks nft in a fresh namespace). */
const iptablesTool = (flavor: IptablesFlavor, suffix = '') =>
  `iptables-${flavor === 'legacy' ? 'legacy' : 'nft'}${suffix}`;

/** Whether `ep`, an endpoint on this node, is in the kernel's rules. */
export async function localEndpointInKernel(
  mode: BenchMode,
  flavor: IptablesFlavor,
  ep: EndpointRef,
): Promise<boolean> {
  if (mode === 'nftables') {
    // A new table gets its elements before its base chains (ADR 0012): hooked first, then the
    // endpoint (`list chains` reads no rules or elements; `list chain` would read them all).
    const chains = await output('nft', ['list', 'chains', 'ip']);
    // (The bench's namespaces hold no other IPv4 table.)
    if (!chains?.includes('table ip kproxy {') || !/chain nat-prerouting \{\s*type nat hook/.test(chains)) return false;
    const text = await output('nft', ['list', 'set', 'ip', 'kproxy', 'hairpin']);
    return text !== undefined && mentions(text, ep.ip);
  }
  const chain = endpointChainName(
    { namespace: ep.namespace, name: ep.service, portName: 'http', protocol: 'TCP' },
    { ip: ep.ip, port: TARGET_PORT },
  );
  // A restore commits its table at once: the endpoint's chain exists once its rules are in.
  return (await output(iptablesTool(flavor), ['-w', '-t', 'nat', '-S', chain])) !== undefined;
}

/** Whether the kernel sends `svc`'s TCP traffic to `ip` (IPv4). */
export async function serviceHasEndpoint(
  mode: BenchMode,
  flavor: IptablesFlavor,
  svc: ServicePortRef,
  ip: string,
): Promise<boolean> {
  const frontend = `${svc.clusterIp} . tcp . ${svc.port}`;
  const keys = Array.from({ length: svc.endpoints }, (_, k) => `${frontend} . ${k}`);
  let text: string | undefined;
  if (mode === 'nftables') {
    const map = await endpointAddressMapOf(frontend);
    text = map && (await output('nft', ['get', 'element', 'ip', 'kproxy', map, `{ ${keys.join(', ')} }`]));
  } else text = await output(iptablesTool(flavor, '-save'), ['-t', 'nat']);
  return text !== undefined && mentions(text, ip);
}

/** The address map `frontend` is in, as kproxy shards them: from the maps the table declares (`nft -t`, no elements). */
async function endpointAddressMapOf(frontend: string): Promise<string | undefined> {
  const maps = await output('nft', ['-t', 'list', 'maps', 'ip']);
  if (maps === undefined) return undefined;
  const shards = maps.match(new RegExp(`map ${ENDPOINT_MAP.addresses}-\\d+ `, 'g'))?.length ?? 1;
  return endpointAddressMap(false, shardOf(frontend, shards), shards);
}

/**
 * `nft monitor` in the current namespace. `ready()` resolves once it demonstrably receives events
 * (a probe table added and deleted); `seen(ip)` with the arrival time of the first event line
 * that mentions `ip` after the call.
 */
export class NftMonitor {
  readonly #proc: ChildProcess;
  #waiters: { test: (line: string) => boolean; resolve: (at: number) => void; fail: (why: string) => void }[] = [];
  /** Why nft monitor ended (its exit status and the end of its stderr), once it has. */
  #exited: string | undefined;

  constructor() {
    this.#proc = spawn('nft', ['monitor'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    this.#proc.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-2000);
    });
    this.#proc.on('exit', (code, signal) => {
      this.#exited = `nft monitor exited (${signal ?? code}): ${stderr.trim()}`;
      for (const w of this.#waiters) w.fail(this.#exited);
      this.#waiters = [];
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
      if (this.#exited) return reject(new Error(this.#exited));
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done);
        reject(new Error(`nft monitor: no event for ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (at: number) => {
        clearTimeout(timer);
        resolve(at);
      };
      const fail = (why: string) => {
        clearTimeout(timer);
        reject(new Error(why));
      };
      this.#waiters.push({ test, resolve: done, fail });
    });
  }

  async ready(timeoutMs: number): Promise<void> {
    const table = `kpbench-probe-${process.pid}`;
    const deadline = now() + timeoutMs;
    // nft monitor reads the ruleset before it listens, and starts that read over whenever the
    // ruleset changes under it — as each probe does: wait twice as long after every unseen probe
    // (250 ms at first; at 2000 × 10 a fixed 250 ms kept it re-reading for minutes), so the read
    // finishes between two probes whatever the size.
    for (
      let windowMs = 250;
      now() < deadline && this.#exited === undefined;
      windowMs = Math.min(2 * windowMs, 60_000)
    ) {
      const seen = this.#next('the probe table', (l) => l.includes(table), windowMs).then(
        () => true,
        () => false,
      );
      spawnSync('nft', ['add', 'table', 'ip', table]);
      spawnSync('nft', ['delete', 'table', 'ip', table]);
      if (await seen) return;
    }
    throw new Error(this.#exited ?? `nft monitor did not report events within ${timeoutMs} ms`);
  }

  seen(ip: string, timeoutMs: number): Promise<number> {
    return this.#next(ip, (l) => /^add (element|rule) /.test(l) && mentions(l, ip), timeoutMs);
  }

  stop(): void {
    this.#proc.kill('SIGTERM');
  }
}
