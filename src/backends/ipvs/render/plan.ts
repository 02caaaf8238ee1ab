/**
 * @module backends/ipvs/render/plan
 * The difference between the desired virtual servers and what IPVS holds, as ONE `ipvsadm -R`
 * batch in an order that never leaves traffic without a destination, and the addresses kube-ipvs0
 * gains and loses around it (pure).
 *
 * IPVS has no transactions: `ipvsadm -R` applies its lines one by one (and goes on after one that
 * fails). So the batch is ordered: new and changed services first, then their new real servers
 * (and weights given back), then real servers that go (drained or deleted), and last the services
 * that go. Addresses are added to kube-ipvs0 only after the batch (a service exists before its
 * address attracts traffic) and removed only when no virtual server uses them any more.
 *
 * Ownership: kproxy deletes only virtual servers it owns (recorded in the kernel, in its helper
 * table's sets), never one inside excludeCIDRs; a desired virtual server someone else created is
 * taken over (reported). Graceful termination: a TCP real server that goes keeps its connections —
 * weight 0 first, deleted once it has no active or inactive connection, or after the drain
 * timeout; UDP and SCTP real servers go at once (as upstream); one that comes back while draining
 * gets its weight back.
 */
import type { DesiredVirtualServer } from './layout.ts';
import type { ConnectionCounts, ObservedIpvs, ObservedRealServer, ObservedVirtualServer } from './observed.ts';
import { hostPort, line, type VirtualServerKey } from './syntax.ts';

export interface IpvsPlanInput {
  /** Every family's desired virtual servers, by keyText, in render order. */
  readonly desired: ReadonlyMap<string, DesiredVirtualServer>;
  readonly observed: ObservedIpvs;
  /** keyTexts of the virtual servers kproxy owns (from its helper tables). */
  readonly owned: ReadonlySet<string>;
  /** excludeCIDRs: such virtual servers are never deleted. */
  readonly excluded: (key: VirtualServerKey) => boolean;
  /** Connection counts; undefined when not read (the plan says if it needs them). */
  readonly connections?: ConnectionCounts;
  /** Real servers draining (drainKey → since, ms), as the previous plan left them. */
  readonly draining: ReadonlyMap<string, number>;
  readonly now: number;
  readonly drainTimeoutMs: number;
}

export interface IpvsPlan {
  /** The `ipvsadm -R` batch, ordered; empty when IPVS already holds the desired state. */
  readonly lines: readonly string[];
  /** Desired virtual servers that existed without being kproxy's: now they are (report them). */
  readonly adopted: readonly string[];
  /** Virtual servers this batch deletes (their ownership record goes after it). */
  readonly deleted: readonly string[];
  /** Real servers draining after this batch: drainKey → since. */
  readonly draining: ReadonlyMap<string, number>;
  /** A TCP real server is to go and `connections` was not given: read them and plan again. */
  readonly needsConnections: boolean;
}

/** A real server of a virtual server, as the drain bookkeeping names it. */
export function drainKey(vs: string, rs: Pick<ObservedRealServer, 'ip' | 'port'>): string {
  return `${vs} ${hostPort(rs.ip, rs.port)}`;
}

export function planIpvs(input: IpvsPlanInput): IpvsPlan {
  const services: string[] = [];
  const serversIn: string[] = [];
  const serversOut: string[] = [];
  const servicesOut: string[] = [];
  const adopted: string[] = [];
  const deleted: string[] = [];
  const draining = new Map<string, number>();
  let needsConnections = false;

  for (const [k, d] of input.desired) {
    const seen = input.observed.virtualServers.get(k);
    if (!seen) {
      services.push(line.addService(d.vs));
      for (const rs of d.realServers) serversIn.push(line.addServer(d.vs.key, rs));
      continue;
    }
    if (!input.owned.has(k)) adopted.push(k);
    if (!sameService(d, seen)) services.push(line.editService(d.vs));
    const wanted = new Set<string>();
    for (const rs of d.realServers) {
      const hp = hostPort(rs.ip, rs.port);
      wanted.add(hp);
      const o = seen.realServers.get(hp);
      if (!o) serversIn.push(line.addServer(d.vs.key, rs));
      // Also an endpoint that came back while it drained: its weight returns, its connections stayed.
      else if (o.weight !== rs.weight || o.method !== 'm' || o.other.length > 0)
        serversIn.push(line.editServer(d.vs.key, rs));
    }
    for (const [hp, o] of seen.realServers) {
      if (wanted.has(hp)) continue;
      const dk = drainKey(k, o);
      if (d.protocol !== 'TCP') {
        serversOut.push(line.deleteServer(d.vs.key, o));
        continue;
      }
      const conns = input.connections?.get(k)?.get(hp);
      if (input.connections === undefined) {
        needsConnections = true;
        continue;
      }
      const since = input.draining.get(dk) ?? input.now;
      const idle = conns === undefined || conns.active + conns.inactive === 0;
      if (idle || input.now - since >= input.drainTimeoutMs) {
        serversOut.push(line.deleteServer(d.vs.key, o));
        continue;
      }
      draining.set(dk, since);
      if (o.weight !== 0) serversOut.push(line.editServer(d.vs.key, { ip: o.ip, port: o.port, weight: 0 }));
    }
  }

  for (const [k, seen] of input.observed.virtualServers) {
    if (input.desired.has(k) || !input.owned.has(k) || input.excluded(seen.key)) continue;
    servicesOut.push(line.deleteService(seen.key));
    deleted.push(k);
  }

  return {
    lines: [...services, ...serversIn, ...serversOut, ...servicesOut],
    adopted,
    deleted,
    draining,
    needsConnections,
  };
}

function sameService(d: DesiredVirtualServer, seen: ObservedVirtualServer): boolean {
  return (
    seen.scheduler === d.vs.scheduler &&
    seen.persistence === d.vs.persistence &&
    [...seen.flags].sort().join(',') === [...d.vs.flags].sort().join(',') &&
    seen.other.length === 0
  );
}

/**
 * kube-ipvs0's changes around the batch: `add` once the batch ran (the services exist), `remove`
 * the addresses no desired service has and no virtual server left after the batch uses.
 */
export function planAddresses(
  desired: ReadonlySet<string>,
  onDummy: ReadonlySet<string>,
  observed: ObservedIpvs,
  deleted: ReadonlySet<string>,
): { add: string[]; remove: string[] } {
  const stillUsed = new Set<string>();
  for (const [k, vs] of observed.virtualServers)
    if (!deleted.has(k) && vs.key.kind === 'address') stillUsed.add(vs.key.ip);
  return {
    add: [...desired].filter((a) => !onDummy.has(a)).sort(),
    remove: [...onDummy].filter((a) => !desired.has(a) && !stillUsed.has(a)).sort(),
  };
}
