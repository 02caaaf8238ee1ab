// Flow-test topology: a node namespace (where kproxy's rules go), pod namespaces and external
// client namespaces, each joined to the node by a veth pair, dual stack. Real TCP/UDP traffic is
// sent by agent processes (agent.ts) and classified as answered / rejected / timeout / error.
//
//   client0 (192.0.2.2) ──veth── node (192.0.2.1 = node IP, 10.244.0.1 = pod gateway) ──veth── pod0 (10.244.0.2)
//                                   │                                                 └─veth── pod1 (10.244.0.3) ...
//                                   └──veth── upstream (default route of the node; rejects what it would forward)
//
// The node's default route points at the "upstream" namespace, so ClusterIP/externalIP/LB
// destinations are routable from the node (locally generated traffic needs a route before the
// output hook can DNAT it) while anything that is *not* DNATed comes back at once as ICMP
// admin-prohibited (classified 'error', EHOSTUNREACH for IPv4 / EACCES for IPv6) instead of looping.
import { execaSync } from 'execa';
import { pidAlive } from '../util/process.ts';
import { existsSync, readFileSync } from 'node:fs';
import { cidrContains, nthHost, parseCidr, unmapV4, canonical, familyOf } from './addr.ts';
import { Agent } from './agent-client.ts';
import {
  conntrack,
  execIn,
  ip,
  ipBatch,
  listNamespaces,
  nft,
  run,
  sysctl,
  type RunOptions,
  type RunResult,
} from './exec.ts';
import type { ProbeResult, ProbeSpec } from './protocol.ts';

export type { ProbeResult, ProbeSpec, ServerReply, Proto } from './protocol.ts';
export { execIn, ip, ipBatch, nft, sysctl, conntrack, run } from './exec.ts';
export { canonical, cidrContains, nthHost, familyOf } from './addr.ts';

/** Prefix of every namespace the harness creates: `kpt<pid>s<seq><rand>-<member>`. */
export const NS_PREFIX = 'kpt';
const NS_RE = /^kpt(\d+)s[0-9a-z]+-/;

export interface DualAddr {
  v4: string;
  v6: string;
}

export interface PodSpec {
  /** Pod name; also what its servers answer with. Lower-case letters, digits, '-'. Default `pod<i>`. */
  name?: string;
  /** Label only: is this endpoint on this node (for EndpointSlice nodeName)? Default true. */
  local?: boolean;
  /** Explicit addresses (default: host i+2 of the pod CIDRs). */
  v4?: string;
  v6?: string;
  /** Ports served by this pod (default: TopologyOptions.tcpPorts/udpPorts). */
  tcpPorts?: number[];
  udpPorts?: number[];
}

export interface ClientSpec {
  name?: string;
  v4?: string;
  v6?: string;
}

export interface TopologyOptions {
  /** Number of pods or their specs. Default 3. */
  pods?: number | PodSpec[];
  /** Number of external clients or their specs. Default 1. */
  clients?: number | ClientSpec[];
  /** Pod CIDRs; host 1 is the node's pod gateway, pods start at host 2. */
  podCidr?: DualAddr;
  /** Outside subnet; host 1 is the node IP, clients start at host 2. */
  outsideCidr?: DualAddr;
  /** Node ↔ upstream link (node = host 1, upstream = host 2). */
  upstreamCidr?: DualAddr;
  /** Ports every pod serves unless its spec says otherwise. Default tcp [80, 8080], udp [53]. */
  tcpPorts?: number[];
  udpPorts?: number[];
  /** Default probe timeout (drop detection). Default 400 ms. */
  probeTimeoutMs?: number;
  /** Default probeMany concurrency. Default 4. */
  probeConcurrency?: number;
  /** Extra sysctls for the node namespace, applied before links exist. */
  nodeSysctls?: Record<string, string | number>;
  /** Start of every namespace name (default `kpt`), so a suite's namespaces are recognisable. */
  namePrefix?: string;
}

export interface Member {
  readonly name: string;
  /** Network namespace name. */
  readonly ns: string;
  /** Primary addresses. */
  readonly v4: string;
  readonly v6: string;
}

export interface PodInfo extends Member {
  readonly index: number;
  readonly local: boolean;
  /** Node-side veth name. */
  readonly nodeIface: string;
  readonly tcpPorts: readonly number[];
  readonly udpPorts: readonly number[];
}

export interface ClientInfo extends Member {
  readonly index: number;
  readonly nodeIface: string;
}

export interface NodeInfo extends Member {
  /** Node address on every pod veth (pods' default gateway; what masquerade towards pods yields). */
  readonly podGateway: DualAddr;
  /** Node address on the upstream link. */
  readonly upstreamAddr: DualAddr;
  /** Upstream namespace's address (the node's default gateway). */
  readonly upstreamGateway: DualAddr;
  readonly upstreamIface: string;
  readonly upstreamNs: string;
  /** First client veth: where addNodeAddress() puts extra node IPs by default. */
  readonly outsideIface: string;
}

export type NsRef = string | { readonly ns: string };

export interface Tally {
  total: number;
  answered: number;
  /** pod name → answers */
  byPod: Map<string, number>;
  /** peer address seen by the server → answers */
  byPeer: Map<string, number>;
  rejected: number;
  timeout: number;
  /** error code → count */
  errors: Map<string, number>;
  results: ProbeResult[];
}

export interface ProbeManyOptions {
  /** Parallel probes inside the agent (forced to 1 when sourcePort is set). */
  concurrency?: number;
}

const COMMON_SYSCTLS: Record<string, number> = {
  'net.ipv4.icmp_ratelimit': 0,
  'net.ipv6.icmp.ratelimit': 0,
  'net.ipv4.icmp_msgs_per_sec': 1_000_000,
  'net.ipv4.icmp_msgs_burst': 1_000_000,
  'net.ipv6.conf.all.accept_dad': 0,
  'net.ipv6.conf.default.accept_dad': 0,
  'net.ipv6.conf.all.accept_ra': 0,
  'net.ipv6.conf.default.accept_ra': 0,
};
const ROUTER_SYSCTLS: Record<string, number> = {
  'net.ipv4.ip_forward': 1,
  'net.ipv6.conf.all.forwarding': 1,
};

/**
 * Why CPUs matter: a TCP connect() holds the socket lock while the SYN is sent, and with veths the
 * whole round trip (node rules, a REJECT's ICMPv6 error, the way back) runs synchronously in the
 * softirq of that same syscall. Linux drops ICMPv6 errors that reach a SYN_SENT socket while its
 * owner holds the lock (TcpExtLockDroppedIcmps; only a "soft" error is kept), so an IPv6 TCP
 * REJECT would look like a drop until the 1 s SYN retransmit. (IPv4 is not affected.) Fix: pin
 * agents to one CPU and steer (RPS) every packet the node namespace receives to the other CPUs,
 * so the round trip runs elsewhere while the connecting CPU releases the lock.
 */
export interface CpuPlan {
  agentCpu: number;
  /** Hex CPU mask for rps_cpus / net.core.rps_default_mask in the node namespace. */
  rpsMask: string;
}

export function cpuPlan(): CpuPlan | undefined {
  let list: number[] = [];
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    const m = /^Cpus_allowed_list:\s*(.+)$/m.exec(status);
    for (const part of (m?.[1] ?? '').split(',')) {
      const [a, b] = part.trim().split('-').map(Number);
      if (a === undefined || Number.isNaN(a)) continue;
      for (let c = a; c <= (b ?? a); c++) list.push(c);
    }
  } catch {
    list = [];
  }
  const [agentCpu, ...others] = list;
  if (agentCpu === undefined || others.length === 0) return undefined;
  if (!existsSync('/usr/bin/taskset') && !existsSync('/bin/taskset')) return undefined;
  let mask = 0n;
  for (const c of others) mask |= 1n << BigInt(c);
  return { agentCpu, rpsMask: mask.toString(16) };
}

function sysctlArgs(values: Record<string, string | number>): string {
  return Object.entries(values)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
}

function nsOf(ref: NsRef): string {
  return typeof ref === 'string' ? ref : ref.ns;
}

function hostOnly(addr: string): string {
  return familyOf(addr) === 4 ? `${addr}/32` : `${addr}/128`;
}

export function emptyTally(): Tally {
  return {
    total: 0,
    answered: 0,
    byPod: new Map(),
    byPeer: new Map(),
    rejected: 0,
    timeout: 0,
    errors: new Map(),
    results: [],
  };
}

export function tallyOf(results: readonly ProbeResult[]): Tally {
  const t = emptyTally();
  for (const r of results) {
    t.total++;
    t.results.push(r);
    switch (r.kind) {
      case 'answered':
        t.answered++;
        t.byPod.set(r.pod, (t.byPod.get(r.pod) ?? 0) + 1);
        t.byPeer.set(r.peer, (t.byPeer.get(r.peer) ?? 0) + 1);
        break;
      case 'rejected':
        t.rejected++;
        break;
      case 'timeout':
        t.timeout++;
        break;
      case 'error':
        t.errors.set(r.code, (t.errors.get(r.code) ?? 0) + 1);
        break;
    }
  }
  return t;
}

/** Compact one-line rendering of a tally, for assertion messages. */
export function formatTally(t: Tally): string {
  const pods = [...t.byPod.entries()]
    .sort()
    .map(([p, n]) => `${p}=${n}`)
    .join(' ');
  const errs = [...t.errors.entries()].map(([c, n]) => `${c}=${n}`).join(' ');
  return `total=${t.total} answered=${t.answered} [${pods}] rejected=${t.rejected} timeout=${t.timeout}${errs ? ` errors[${errs}]` : ''}`;
}

// ---------------------------------------------------------------- lifetime bookkeeping

const live = new Set<Topology>();
// Process-wide counter (survives re-imports of this module within one process).
const SEQ_KEY = Symbol.for('kproxy.flowHarness.seq');
function nextSeq(): number {
  const g = globalThis as unknown as Record<symbol, number | undefined>;
  const n = g[SEQ_KEY] ?? 0;
  g[SEQ_KEY] = n + 1;
  return n;
}
let exitHookInstalled = false;
let sweepDone: Promise<string[]> | undefined;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort when a test process exits without destroy(): kill agents, delete namespaces (sync).
  process.on('exit', () => {
    for (const t of live) t.destroySync();
  });
}

/**
 * Delete namespaces left behind by earlier harness runs: those named `kpt<pid>s<n>-…` whose
 * owning process is gone. Agents still inside them (they exit on their own once their parent dies)
 * are killed by pid first. Namespaces of live processes (parallel runs, this process) are kept.
 */
export async function sweepLeftovers(): Promise<string[]> {
  const names = await listNamespaces();
  const stale = names.filter((n) => {
    const m = NS_RE.exec(n);
    if (m === null) return false;
    const pid = Number(m[1]);
    return pid !== process.pid && !pidAlive(pid);
  });
  if (stale.length === 0) return [];
  await Promise.all(
    stale.map(async (n) => {
      const r = await run('ip', ['netns', 'pids', n], { allowFailure: true });
      for (const p of r.stdout.split(/\s+/).filter(Boolean).map(Number)) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }),
  );
  await run('ip', ['-force', '-batch', '-'], {
    input: stale.map((n) => `netns del ${n}\n`).join(''),
    allowFailure: true,
  });
  return stale;
}

// ---------------------------------------------------------------- topology

export class Topology {
  /** `kpt<pid>s<seq><rand>` (`kpt` or namePrefix): every namespace name starts with `${prefix}-`. */
  readonly prefix: string;
  /** Short id used in interface names (`kp<id>p<i>`, `kp<id>c<j>`, `kp<id>u`). */
  readonly id: string;
  readonly node: NodeInfo;
  readonly pods: readonly PodInfo[];
  readonly clients: readonly ClientInfo[];
  readonly podCidr: DualAddr;
  readonly outsideCidr: DualAddr;
  /** Node ↔ upstream link subnet. */
  readonly upstreamCidr: DualAddr;
  readonly probeTimeoutMs: number;
  readonly probeConcurrency: number;
  /** CPU pinning / packet steering in use (undefined on a single-CPU machine). */
  readonly cpus: CpuPlan | undefined;
  /** Extra node IPs added with addNodeAddress(). */
  readonly extraNodeAddresses: string[] = [];
  readonly #agents = new Map<string, Agent>();
  readonly #opts: TopologyOptions;
  #destroyed: Promise<void> | undefined;

  /** Use createTopology(). */
  constructor(opts: TopologyOptions) {
    this.#opts = opts;
    const n = nextSeq();
    const rand = Math.floor(Math.random() * 36 * 36)
      .toString(36)
      .padStart(2, '0');
    this.prefix = `${opts.namePrefix ?? NS_PREFIX}${process.pid}s${n.toString(36)}${rand}`;
    this.id = `${process.pid % 1000}${n.toString(36)}`;
    this.podCidr = opts.podCidr ?? { v4: '10.244.0.0/24', v6: 'fd00:244::/64' };
    this.outsideCidr = opts.outsideCidr ?? { v4: '192.0.2.0/24', v6: '2001:db8:1::/64' };
    const up = opts.upstreamCidr ?? { v4: '198.18.255.0/30', v6: '2001:db8:ffff:ffff::/64' };
    this.upstreamCidr = up;
    this.probeTimeoutMs = opts.probeTimeoutMs ?? 400;
    this.probeConcurrency = opts.probeConcurrency ?? 4;
    this.cpus = cpuPlan();
    for (const c of [this.podCidr, this.outsideCidr, up]) {
      if (parseCidr(c.v4).family !== 4 || parseCidr(c.v6).family !== 6)
        throw new Error(`bad dual CIDR ${JSON.stringify(c)}`);
    }
    const iface = (s: string): string => {
      const name = `kp${this.id}${s}`;
      if (name.length > 15) throw new Error(`interface name too long: ${name}`);
      return name;
    };
    const taken = new Set<string>(['node', 'upstream']);
    const checkName = (name: string): string => {
      if (!/^[a-z0-9][a-z0-9-]{0,30}$/.test(name)) throw new Error(`bad member name ${JSON.stringify(name)}`);
      if (taken.has(name)) throw new Error(`duplicate/reserved member name ${name}`);
      taken.add(name);
      return name;
    };

    const defaultTcp = opts.tcpPorts ?? [80, 8080];
    const defaultUdp = opts.udpPorts ?? [53];
    const podSpecs: PodSpec[] =
      typeof opts.pods === 'number' || opts.pods === undefined
        ? Array.from({ length: typeof opts.pods === 'number' ? opts.pods : 3 }, () => ({}))
        : opts.pods;
    this.pods = podSpecs.map((s, i) => {
      const name = checkName(s.name ?? `pod${i}`);
      return {
        name,
        index: i,
        ns: `${this.prefix}-${name}`,
        local: s.local ?? true,
        v4: s.v4 ?? nthHost(this.podCidr.v4, i + 2),
        v6: s.v6 ?? nthHost(this.podCidr.v6, i + 2),
        nodeIface: iface(`p${i}`),
        tcpPorts: s.tcpPorts ?? defaultTcp,
        udpPorts: s.udpPorts ?? defaultUdp,
      };
    });
    const clientSpecs: ClientSpec[] =
      typeof opts.clients === 'number' || opts.clients === undefined
        ? Array.from({ length: typeof opts.clients === 'number' ? opts.clients : 1 }, () => ({}))
        : opts.clients;
    this.clients = clientSpecs.map((s, j) => {
      const name = checkName(s.name ?? `client${j}`);
      return {
        name,
        index: j,
        ns: `${this.prefix}-${name}`,
        v4: s.v4 ?? nthHost(this.outsideCidr.v4, j + 2),
        v6: s.v6 ?? nthHost(this.outsideCidr.v6, j + 2),
        nodeIface: iface(`c${j}`),
      };
    });
    if (this.clients.length === 0) throw new Error('need at least one client (it carries the node IP)');
    this.node = {
      name: 'node',
      ns: `${this.prefix}-node`,
      v4: nthHost(this.outsideCidr.v4, 1),
      v6: nthHost(this.outsideCidr.v6, 1),
      podGateway: { v4: nthHost(this.podCidr.v4, 1), v6: nthHost(this.podCidr.v6, 1) },
      upstreamAddr: { v4: nthHost(up.v4, 1), v6: nthHost(up.v6, 1) },
      upstreamGateway: { v4: nthHost(up.v4, 2), v6: nthHost(up.v6, 2) },
      upstreamIface: iface('u'),
      upstreamNs: `${this.prefix}-upstream`,
      outsideIface: this.clients[0]?.nodeIface ?? '',
    };
  }

  /** All namespaces of this topology. */
  get namespaces(): string[] {
    return [this.node.ns, this.node.upstreamNs, ...this.pods.map((p) => p.ns), ...this.clients.map((c) => c.ns)];
  }

  /** Build namespaces, links, addresses, routes; start pod servers and client agents. */
  async build(): Promise<void> {
    const node = this.node;
    const up = { ns: node.upstreamNs };
    // Phase 1 (one `ip -batch` in our own namespace, only `netns` commands): namespaces + sysctls.
    const root: string[] = [];
    for (const ns of this.namespaces) root.push(`netns add ${ns}`);
    for (const ns of this.namespaces) {
      const steer: Record<string, string | number> = this.cpus
        ? { 'net.core.rps_default_mask': this.cpus.rpsMask }
        : {};
      const extra: Record<string, string | number> =
        ns === node.ns
          ? { ...ROUTER_SYSCTLS, ...steer, ...this.#opts.nodeSysctls }
          : ns === up.ns
            ? ROUTER_SYSCTLS
            : {};
      // -e: a kernel without some key (e.g. rps_default_mask) is not an error.
      root.push(`netns exec ${ns} sysctl -q -e -w ${sysctlArgs({ ...COMMON_SYSCTLS, ...extra })}`);
    }
    await ipBatch(null, root);

    // Agents only bind wildcard sockets: start them now, in parallel with the link setup.
    const agentsReady = Promise.all([
      ...this.pods.map(async (p) => {
        const a = this.#agent(p.ns, p.name);
        await a.listen(p.tcpPorts, p.udpPorts);
      }),
      ...this.clients.map((c) => this.#agent(c.ns, c.name).ready()),
    ]);
    agentsReady.catch(() => {});

    // Phase 2: node side (creates every veth pair with its peer directly in the member namespace).
    const n: string[] = ['link set lo up'];
    const attach = (ifname: string, peerNs: string, local: DualAddr, remote: DualAddr): void => {
      n.push(
        `link add ${ifname} type veth peer name eth0 netns ${peerNs}`,
        `link set ${ifname} up`,
        `addr add ${hostOnly(local.v4)} dev ${ifname}`,
        `addr add ${hostOnly(local.v6)} dev ${ifname} nodad`,
        `route add ${hostOnly(remote.v4)} dev ${ifname}`,
        `route add ${hostOnly(remote.v6)} dev ${ifname}`,
      );
    };
    for (const p of this.pods) attach(p.nodeIface, p.ns, node.podGateway, p);
    for (const c of this.clients) attach(c.nodeIface, c.ns, node, c);
    const upLen = { v4: parseCidr(this.upstreamCidr.v4).prefix, v6: parseCidr(this.upstreamCidr.v6).prefix };
    n.push(
      `link add ${node.upstreamIface} type veth peer name eth0 netns ${up.ns}`,
      `link set ${node.upstreamIface} up`,
      `addr add ${node.upstreamAddr.v4}/${upLen.v4} dev ${node.upstreamIface}`,
      `addr add ${node.upstreamAddr.v6}/${upLen.v6} dev ${node.upstreamIface} nodad`,
      // src = node IP: locally generated traffic to service IPs leaves from the node IP, as on a real node.
      `route add default via ${node.upstreamGateway.v4} dev ${node.upstreamIface} src ${node.v4}`,
      `route add default via ${node.upstreamGateway.v6} dev ${node.upstreamIface} src ${node.v6}`,
    );
    await ipBatch(node.ns, n);

    // Phase 3: member sides, in parallel.
    const member = (ns: string, addr: DualAddr, gw: DualAddr): Promise<void> =>
      ipBatch(ns, [
        'link set lo up',
        'link set eth0 up',
        `addr add ${hostOnly(addr.v4)} dev eth0`,
        `addr add ${hostOnly(addr.v6)} dev eth0 nodad`,
        `route add ${hostOnly(gw.v4)} dev eth0`,
        `route add default via ${gw.v4} dev eth0`,
        `route add ${hostOnly(gw.v6)} dev eth0`,
        `route add default via ${gw.v6} dev eth0`,
      ]);
    await Promise.all([
      ...this.pods.map((p) => member(p.ns, p, node.podGateway)),
      ...this.clients.map((c) => member(c.ns, c, node)),
      ipBatch(up.ns, [
        'link set lo up',
        'link set eth0 up',
        `addr add ${node.upstreamGateway.v4}/${upLen.v4} dev eth0`,
        `addr add ${node.upstreamGateway.v6}/${upLen.v6} dev eth0 nodad`,
        `route add default via ${node.upstreamAddr.v4} dev eth0`,
        `route add default via ${node.upstreamAddr.v6} dev eth0`,
      ]),
      // The upstream answers everything it would forward (i.e. traffic the node did not DNAT)
      // with an ICMP error, so such probes fail fast instead of looping or timing out.
      nft(
        up.ns,
        [],
        'table inet upstream {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    reject with icmpx type admin-prohibited\n  }\n}\n',
      ),
      agentsReady,
      // lo existed before rps_default_mask was set: steer node-local traffic too.
      this.cpus
        ? execIn(node.ns, 'tee', ['/sys/class/net/lo/queues/rx-0/rps_cpus'], {
            input: `${this.cpus.rpsMask}\n`,
            allowFailure: true,
          })
        : undefined,
    ]);
  }

  #agent(ns: string, name: string): Agent {
    let a = this.#agents.get(ns);
    if (a === undefined || a.exited) {
      if (this.#destroyed) throw new Error(`topology ${this.prefix} is destroyed`);
      a = new Agent(ns, name, this.cpus?.agentCpu);
      this.#agents.set(ns, a);
    }
    return a;
  }

  #nameOf(ns: string): string {
    if (ns === this.node.ns) return 'node';
    const m = [...this.pods, ...this.clients].find((x) => x.ns === ns);
    return m?.name ?? ns;
  }

  /** The agent of a namespace (started on first use; pods' agents run from the start). */
  agent(ref: NsRef): Agent {
    const ns = nsOf(ref);
    return this.#agent(ns, this.#nameOf(ns));
  }

  /** Pod by name or index. */
  pod(nameOrIndex: string | number): PodInfo {
    const p = typeof nameOrIndex === 'number' ? this.pods[nameOrIndex] : this.pods.find((x) => x.name === nameOrIndex);
    if (p === undefined) throw new Error(`no pod ${nameOrIndex}`);
    return p;
  }

  client(nameOrIndex: string | number = 0): ClientInfo {
    const c =
      typeof nameOrIndex === 'number' ? this.clients[nameOrIndex] : this.clients.find((x) => x.name === nameOrIndex);
    if (c === undefined) throw new Error(`no client ${nameOrIndex}`);
    return c;
  }

  // ------------------------------------------------------------ traffic

  /** One probe from a namespace. */
  async probe(from: NsRef, target: ProbeSpec): Promise<ProbeResult> {
    const [r] = await this.agent(from).probe({ timeoutMs: this.probeTimeoutMs, ...target }, 1, 1);
    if (r === undefined) throw new Error('agent returned no result');
    return r;
  }

  /** `count` probes from one agent (no process per probe); returns a tally. */
  async probeMany(from: NsRef, target: ProbeSpec, count: number, opts: ProbeManyOptions = {}): Promise<Tally> {
    const results = await this.agent(from).probe(
      { timeoutMs: this.probeTimeoutMs, ...target },
      count,
      opts.concurrency ?? this.probeConcurrency,
    );
    return tallyOf(results);
  }

  /**
   * Probes in rounds of `round` until every pod in `pods` has answered or `max` probes were sent.
   * For "reaches every endpoint" checks: a fixed 20 probes miss one of three random endpoints
   * about once in a thousand runs; 90 at most, once in 10^15.
   */
  async probeCovering(from: NsRef, target: ProbeSpec, pods: readonly string[], round = 15, max = 90): Promise<Tally> {
    const results: ProbeResult[] = [];
    let tally = emptyTally();
    while (results.length < max && !pods.every((p) => tally.byPod.has(p))) {
      results.push(...(await this.probeMany(from, target, Math.min(round, max - results.length))).results);
      tally = tallyOf(results);
    }
    return tally;
  }

  /** Run servers in any namespace (e.g. the node itself); the answers name `name` (default: member name). */
  async serve(ref: NsRef, ports: { tcp?: number[]; udp?: number[] }): Promise<void> {
    await this.agent(ref).listen(ports.tcp ?? [], ports.udp ?? []);
  }

  /** Stop some listeners (e.g. to get RST/port-unreachable from a pod). */
  async unserve(ref: NsRef, ports: { tcp?: number[]; udp?: number[] }): Promise<void> {
    await this.agent(ref).unlisten(ports.tcp ?? [], ports.udp ?? []);
  }

  // ------------------------------------------------------------ addresses

  /** Known (configured) addresses of a member: primary v4/v6 (for the node: its node IPs). */
  addressesOf(ref: NsRef): string[] {
    const ns = nsOf(ref);
    if (ns === this.node.ns) return this.nodeAddresses();
    if (ns === this.node.upstreamNs) return [this.node.upstreamGateway.v4, this.node.upstreamGateway.v6];
    const m = [...this.pods, ...this.clients].find((x) => x.ns === ns);
    if (m === undefined) throw new Error(`namespace ${ns} is not part of ${this.prefix}`);
    return [m.v4, m.v6];
  }

  /** Every address the node holds (node IPs, pod gateway, upstream side, extras). */
  nodeAddresses(): string[] {
    const n = this.node;
    return [
      n.v4,
      n.v6,
      n.podGateway.v4,
      n.podGateway.v6,
      n.upstreamAddr.v4,
      n.upstreamAddr.v6,
      ...this.extraNodeAddresses,
    ];
  }

  /** Addresses really present in a namespace (`ip -j addr`), global scope, lo excluded unless asked. */
  async liveAddresses(ref: NsRef, opts: { includeLo?: boolean } = {}): Promise<string[]> {
    const out = await ip(nsOf(ref), ['-j', 'addr', 'show']);
    const links = JSON.parse(out) as Array<{ ifname: string; addr_info?: Array<{ local: string; scope: string }> }>;
    return links
      .filter((l) => opts.includeLo || l.ifname !== 'lo')
      .flatMap((l) =>
        (l.addr_info ?? [])
          .filter((a) => a.scope === 'global' || (opts.includeLo && a.scope === 'host'))
          .map((a) => a.local),
      );
  }

  /** True when an answer's peer is not one of `from`'s own addresses (i.e. the source was NATed). */
  wasMasqueraded(result: ProbeResult, from: NsRef): boolean {
    if (result.kind !== 'answered') throw new Error(`probe was not answered: ${JSON.stringify(result)}`);
    const own = new Set(this.addressesOf(from).map(canonical));
    return !own.has(canonical(unmapV4(result.peer)));
  }

  /** True when an answer's peer is one of the node's addresses. */
  peerIsNode(result: ProbeResult): boolean {
    if (result.kind !== 'answered') return false;
    return this.nodeAddresses()
      .map(canonical)
      .includes(canonical(unmapV4(result.peer)));
  }

  // ------------------------------------------------------------ configuration helpers

  /** `nft ARGS` in the node namespace; with stdin, loads it as a ruleset file (`-f -`). */
  nft(args: readonly string[], stdin?: string): Promise<string> {
    return nft(this.node.ns, args, stdin);
  }

  /** Replace everything in the node's nftables with `ruleset` (flush + load, atomically). */
  loadRuleset(ruleset: string): Promise<string> {
    return nft(this.node.ns, [], `flush ruleset\n${ruleset}`);
  }

  execIn(ref: NsRef, cmd: string, args: readonly string[] = [], opts: RunOptions = {}): Promise<RunResult> {
    return execIn(nsOf(ref), cmd, args, opts);
  }

  ip(ref: NsRef, args: readonly string[]): Promise<string> {
    return ip(nsOf(ref), args);
  }

  ipBatch(ref: NsRef, lines: readonly string[]): Promise<void> {
    return ipBatch(nsOf(ref), lines);
  }

  sysctl(ref: NsRef, values: Record<string, string | number>): Promise<void> {
    return sysctl(nsOf(ref), values);
  }

  /** `conntrack -F` in the node namespace (or another). */
  async flushConntrack(ref: NsRef = this.node): Promise<void> {
    await conntrack(nsOf(ref), ['-F']);
  }

  conntrack(args: readonly string[], ref: NsRef = this.node): Promise<string> {
    return conntrack(nsOf(ref), args);
  }

  /**
   * Give the node another address (a node IP / LB IP held by the node). Goes on the outside link
   * (first client's veth) as a host address; clients reach it through their default route.
   */
  async addNodeAddress(addr: string, iface: string = this.node.outsideIface): Promise<void> {
    const a = addr.includes('/') ? addr : hostOnly(addr);
    await ip(this.node.ns, [
      'addr',
      'add',
      a,
      'dev',
      iface,
      ...(familyOf(a.split('/')[0] ?? '') === 6 ? ['nodad'] : []),
    ]);
    this.extraNodeAddresses.push(a.split('/')[0] ?? a);
  }

  /** `ip route add DEST [via GW] [dev DEV] ...extra` in a namespace (default: node). */
  async addRoute(dest: string, opts: { via?: string; dev?: string; extra?: string[]; ns?: NsRef } = {}): Promise<void> {
    await ip(nsOf(opts.ns ?? this.node), [
      'route',
      'add',
      dest,
      ...(opts.via !== undefined ? ['via', opts.via] : []),
      ...(opts.dev !== undefined ? ['dev', opts.dev] : []),
      ...(opts.extra ?? []),
    ]);
  }

  /** Which pod owns an address (pod addresses only). */
  podByAddress(addr: string): PodInfo | undefined {
    const c = canonical(unmapV4(addr));
    return this.pods.find((p) => canonical(p.v4) === c || canonical(p.v6) === c);
  }

  isPodAddress(addr: string): boolean {
    return cidrContains(this.podCidr.v4, addr) || cidrContains(this.podCidr.v6, addr);
  }

  // ------------------------------------------------------------ teardown

  get destroyed(): boolean {
    return this.#destroyed !== undefined;
  }

  /** Stop agents and delete every namespace (veths go with them). Idempotent. */
  destroy(): Promise<void> {
    this.#destroyed ??= (async () => {
      await Promise.all([...this.#agents.values()].map((a) => a.stop()));
      await run('ip', ['-force', '-batch', '-'], {
        input: this.namespaces.map((ns) => `netns del ${ns}\n`).join(''),
        allowFailure: true,
      });
      const left = (await listNamespaces()).filter((n) => n.startsWith(`${this.prefix}-`));
      live.delete(this);
      if (left.length > 0) throw new Error(`namespaces left after destroy: ${left.join(' ')}`);
    })();
    return this.#destroyed;
  }

  /** Synchronous teardown for process-exit hooks. */
  destroySync(): void {
    for (const a of this.#agents.values()) a.killNow();
    execaSync('ip', ['-force', '-batch', '-'], {
      input: this.namespaces.map((ns) => `netns del ${ns}\n`).join(''),
      reject: false,
    });
    live.delete(this);
  }
}

/** Build a topology (sweeps leftovers of dead runs first, once per process). */
export async function createTopology(opts: TopologyOptions = {}): Promise<Topology> {
  if (process.getuid?.() !== 0) throw new Error('flow-test topology needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)');
  sweepDone ??= sweepLeftovers();
  await sweepDone;
  installExitHook();
  const topo = new Topology(opts);
  live.add(topo);
  try {
    await topo.build();
  } catch (e) {
    await topo.destroy().catch(() => {});
    throw e;
  }
  return topo;
}

/** Namespaces (any run) with the harness prefix. */
export async function harnessNamespaces(): Promise<string[]> {
  return (await listNamespaces()).filter((n) => NS_RE.test(n));
}
