/**
 * @module backends/nftables/trace/describe
 * One traced packet's lines mapped back to what kproxy knows: the Service port (from the names of
 * kproxy's per-port chains, render/names.ts), the frontend it was sent to, the endpoint it was
 * DNATed to (with its EndpointSlice and node), and the verdict in `kproxy explain`'s words, so the
 * two can be compared. `--output json` prints {@link TracedPacket} as a stable contract. Pure.
 */
import type { Explanation, Frontend, Verdict } from '../../../explain/explain.ts';
import type { ClusterSnapshot, Family, Protocol } from '../../../model/cluster.ts';
import type { ServicePortState } from '../../../model/node-state.ts';
import { servicePortNames, TABLE } from '../render/names.ts';
import type { TraceLine } from './events.ts';
import { TRACE_TABLE } from './table.ts';

export interface TraceStep {
  readonly table: string;
  readonly chain: string;
  readonly kind: 'rule' | 'verdict' | 'policy';
  readonly rule?: string;
  readonly verdict: string;
}

export interface TracedPacket {
  /** The kernel's trace id. */
  readonly id: string;
  readonly family: Family;
  readonly packet: {
    readonly src: string;
    readonly dst: string;
    readonly protocol: Protocol | null;
    readonly srcPort?: number;
    readonly dstPort?: number;
    /** The interface it came in on (absent: sent by the node itself). */
    readonly iif?: string;
  };
  /** As in `kproxy explain`: dnat, reject, drop, or none (kproxy's rules let it pass unchanged). */
  readonly verdict: Verdict;
  /** `namespace/name:port` of the Service port whose chains it went through; null when none. */
  readonly service: string | null;
  readonly frontend: Frontend | null;
  /** The endpoint it was DNATed to (`IP:port`, `[IPv6]:port`), with the EndpointSlice and node that list it. */
  readonly endpoint: string | null;
  readonly endpointSlice: string | null;
  readonly endpointNode: string | null;
  /** kproxy's masquerade rule matched it (postrouting). */
  readonly masquerade: boolean;
  /** Every rule, verdict and policy it met, in order (the trace table's own left out). */
  readonly steps: readonly TraceStep[];
}

const PROTOCOLS: Readonly<Record<string, Protocol>> = { tcp: 'TCP', udp: 'UDP', sctp: 'SCTP' };

/** `ports`: the traced Service's ports, every family. */
export function describeTrace(
  lines: readonly TraceLine[],
  ports: readonly ServicePortState[],
  snapshot: ClusterSnapshot,
): TracedPacket {
  const first = lines[0];
  if (!first) throw new Error('describeTrace: no lines');
  const packet = headersOf(lines.find((l) => l.kind === 'packet')?.packet ?? '');

  const steps: TraceStep[] = lines
    .filter((l) => l.table !== TRACE_TABLE && l.kind !== 'packet')
    .map((l) => ({
      table: l.table,
      chain: l.chain,
      kind: l.kind as TraceStep['kind'],
      ...(l.rule !== undefined ? { rule: l.rule } : {}),
      verdict: l.verdict ?? '',
    }));
  const ours = steps.filter((s) => s.table === TABLE);

  const byChain = new Map<string, ServicePortState>();
  for (const sp of ports) for (const name of Object.values(servicePortNames(sp))) byChain.set(name, sp);
  const viaChain = ours.map((s) => byChain.get(s.chain)).find((sp) => sp !== undefined);
  const frontend = frontendOf(packet, ports);
  const owner = viaChain ?? frontend?.sp;

  // A DNAT rule may name the endpoint (a ladder) or pick it from a map: the packet's headers in the
  // next base chain it meets (nft prints them once per base chain) show where it went either way.
  const dnatAt = lines.findIndex(
    (l) => l.table === TABLE && l.kind === 'rule' && l.verdict === 'accept' && /(^|\s)dnat /.test(l.rule ?? ''),
  );
  const rewritten = dnatAt < 0 ? undefined : lines.slice(dnatAt + 1).find((l) => l.kind === 'packet')?.packet;
  const after = rewritten === undefined ? undefined : headersOf(rewritten);
  const endpoint = after?.dstPort === undefined ? null : hostPort(after.dst, after.dstPort);
  const dropped = steps.find((s) => s.verdict === 'drop');
  const verdict: Verdict =
    dnatAt >= 0 ? 'dnat' : dropped ? (/(^|\s)reject(\s|$)/.test(dropped.rule ?? '') ? 'reject' : 'drop') : 'none';
  const listed = endpoint && owner ? sliceOf(endpoint, owner, snapshot) : undefined;
  return {
    id: first.id,
    family: first.family === 'ip6' ? 'ipv6' : 'ipv4',
    packet,
    verdict,
    service: owner?.key ?? null,
    frontend: frontend?.frontend ?? null,
    endpoint,
    endpointSlice: listed?.slice ?? null,
    endpointNode: listed?.node ?? null,
    masquerade: ours.some((s) => s.chain === 'masquerading' && /^masquerade\b/.test(s.rule ?? '')),
    steps,
  };
}

/** A `packet:` line's headers (`iif "eth0" ip saddr … ip daddr … tcp sport … tcp dport …`). */
function headersOf(text: string): TracedPacket['packet'] {
  const field = (re: RegExp) => re.exec(text)?.[1];
  const l4 = field(/\b(tcp|udp|sctp) dport \d+/);
  const srcPort = field(/\b(?:tcp|udp|sctp) sport (\d+)/);
  const dstPort = field(/\b(?:tcp|udp|sctp) dport (\d+)/);
  const iif = field(/\biif "([^"]*)"/);
  return {
    src: field(/\bip6? saddr (\S+)/) ?? '',
    dst: field(/\bip6? daddr (\S+)/) ?? '',
    protocol: (l4 === undefined ? undefined : PROTOCOLS[l4]) ?? null,
    ...(srcPort !== undefined ? { srcPort: Number(srcPort) } : {}),
    ...(dstPort !== undefined ? { dstPort: Number(dstPort) } : {}),
    ...(iif !== undefined ? { iif } : {}),
  };
}

function frontendOf(
  p: TracedPacket['packet'],
  ports: readonly ServicePortState[],
): { sp: ServicePortState; frontend: Frontend } | undefined {
  if (p.protocol === null || p.dstPort === undefined) return undefined;
  const base = { address: p.dst, port: p.dstPort, protocol: p.protocol };
  for (const sp of ports) {
    if (sp.ref.protocol !== p.protocol) continue;
    const kind: Frontend['kind'] | undefined =
      sp.port === p.dstPort && sp.clusterIP === p.dst
        ? 'ClusterIP'
        : sp.port === p.dstPort && sp.externalIPs.includes(p.dst)
          ? 'ExternalIP'
          : sp.port === p.dstPort && sp.loadBalancerIPs.includes(p.dst)
            ? 'LoadBalancerIP'
            : sp.nodePort === p.dstPort
              ? 'NodePort'
              : undefined;
    if (kind) return { sp, frontend: { kind, ...base } };
  }
  return undefined;
}

/** The EndpointSlice (and node) that lists `endpoint` for the service port. */
function sliceOf(
  endpoint: string,
  sp: ServicePortState,
  snapshot: ClusterSnapshot,
): { slice: string; node: string | null } | undefined {
  const m = /^\[?(.+?)\]?:(\d+)$/.exec(endpoint);
  if (!m) return undefined;
  const [, ip, port] = m;
  for (const s of snapshot.endpointSlices) {
    if (s.namespace !== sp.ref.namespace || s.serviceName !== sp.ref.name) continue;
    if (!s.ports.some((p) => p.port === Number(port) && p.protocol === sp.ref.protocol)) continue;
    const e = s.endpoints.find((x) => x.address.text === ip);
    if (e) return { slice: `${s.namespace}/${s.name}`, node: e.nodeName ?? null };
  }
  return undefined;
}

/** Whether a trace and an explanation of the same packet agree (verdict, and the endpoint among explain's). */
export function agreesWith(t: TracedPacket, e: Pick<Explanation, 'verdict' | 'endpoints'>): boolean {
  return t.verdict === e.verdict && (t.verdict !== 'dnat' || (t.endpoint !== null && e.endpoints.includes(t.endpoint)));
}

/** For a person: the packet, what kproxy made of it, and the rules it met. */
export function tracedPacketText(t: TracedPacket): string {
  const p = t.packet;
  const hp = hostPort;
  const out = [
    `packet     ${hp(p.src, p.srcPort)} → ${hp(p.dst, p.dstPort)}/${p.protocol ?? '?'}${p.iif ? ` in on ${p.iif}` : ' from this node'} (trace ${t.id})`,
    `service    ${t.service ?? '(none)'}${t.frontend ? `, ${t.frontend.kind} ${hp(t.frontend.address, t.frontend.port)}` : ''}`,
  ];
  const where = [t.endpointSlice && `EndpointSlice ${t.endpointSlice}`, t.endpointNode && `node ${t.endpointNode}`]
    .filter(Boolean)
    .join(', ');
  out.push(
    `verdict    ${t.verdict.toUpperCase()}${t.endpoint ? ` to ${t.endpoint}${where ? ` (${where})` : ''}` : ''}`,
  );
  out.push(`masquerade ${t.masquerade ? 'yes' : 'no'}`);
  out.push('rules:');
  for (const s of t.steps) {
    // The chain fingerprints kproxy keeps in first rules' comments say nothing to a person.
    const rule = s.rule?.replace(/ comment "sum:[^"]*"$/, '');
    out.push(`  ${s.table} ${s.chain}: ${s.kind === 'rule' ? `${rule} → ` : `${s.kind} `}${s.verdict}`);
  }
  return `${out.join('\n')}\n`;
}

/** The frontends a trace of `ports` covers, for a person: `10.96.0.10:80, [fd00::a]:80, NodePort 30080`. */
export function frontendsText(ports: readonly ServicePortState[]): string {
  const addresses = ports.flatMap((sp) =>
    [sp.clusterIP, ...sp.externalIPs, ...sp.loadBalancerIPs].map((ip) => hostPort(ip, sp.port)),
  );
  const nodePorts = ports.flatMap((sp) => (sp.nodePort === undefined ? [] : [`NodePort ${sp.nodePort}`]));
  return [...new Set([...addresses, ...nodePorts])].join(', ');
}

function hostPort(ip: string, port?: number): string {
  return port === undefined ? ip : ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}
