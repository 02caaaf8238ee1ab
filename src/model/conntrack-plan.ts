/**
 * @module model/conntrack-plan
 * Which conntrack entries are stale after a sync, decided from the desired state alone (no I/O).
 *
 * Netfilter evaluates NAT rules only for a flow's first packet; later packets follow the conntrack
 * entry. A UDP client that keeps its source port (DNS resolvers, statsd) therefore keeps sending to
 * whatever the entry says, refreshing its timeout with every datagram, even after the rules changed.
 * Like upstream kube-proxy's reconciler (`pkg/proxy/conntrack/cleanup.go`, with the fixes for
 * Services scaled to zero and deleted Services), an entry is stale when its original destination is
 * a Service frontend and:
 *
 *  - it was DNATed to an `ip:port` that is not one of the frontend's endpoints any more
 *    (`endpoint-gone`, or `no-endpoints` when the frontend has none left at all);
 *  - it was not DNATed (it was created while no rule matched) and the frontend now has endpoints
 *    (`not-dnated`), so the next datagram is DNATed;
 *  - it was DNATed, and its frontend belonged to a Service port of the previous state that no
 *    longer exists (`service-gone`).
 *
 * Frontends are `clusterIP:port`, every `externalIP:port` and `loadBalancerIP:port`, and the
 * NodePort on a local address. A non-DNATed entry for a frontend that has no endpoints is left
 * alone: there is nowhere better to send it (the reject/drop rule never confirms new entries).
 * Decisions depend only on (original dst, dport, reply src, reply sport), so stale entries are
 * grouped into one delete filter per such tuple, whatever the number of clients.
 */
import type { Family } from './cluster.ts';
import type { EndpointTarget, NodeState, ServicePortState } from './node-state.ts';

/** The protocols whose flows can go stale; upstream reconciles UDP only. */
export type ConntrackProtocol = 'UDP' | 'SCTP';

/** One direction of a flow; addresses in canonical text form (`model/ip.ts`). */
export interface ConntrackTuple {
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
}

export interface ConntrackEntry {
  readonly family: Family;
  readonly protocol: ConntrackProtocol;
  /** As the client sent it. */
  readonly original: ConntrackTuple;
  /** As the answer is expected: `reply.src` is where the flow was DNATed to. */
  readonly reply: ConntrackTuple;
  /**
   * The kernel's id of the entry (`CTA_ID`), when listed through ctnetlink: a deletion naming it
   * removes this entry only, never one created since with the same original tuple.
   */
  readonly id?: number;
  /** Conntrack zone, when not 0 (ctnetlink listings only). */
  readonly zone?: number;
}

export type StaleReason = 'endpoint-gone' | 'no-endpoints' | 'not-dnated' | 'service-gone';

export interface StaleEntry {
  readonly entry: ConntrackEntry;
  readonly reason: StaleReason;
  /** The frontend the entry was recognised by, `ip:port` or `*:nodePort`, for logs. */
  readonly frontend: string;
}

/**
 * A delete filter: every entry with this original destination and this reply source is stale
 * (the decision depends on nothing else), so one `conntrack -D` removes all clients' entries at once.
 */
export interface ConntrackDeletion {
  readonly family: Family;
  readonly protocol: ConntrackProtocol;
  readonly origDst: string;
  readonly origDport: number;
  readonly replySrc: string;
  readonly replySport: number;
  readonly reason: StaleReason;
  /** How many listed entries it covers. */
  readonly entries: number;
}

export interface ConntrackCleanupPlan {
  readonly stale: readonly StaleEntry[];
  /** Sorted, one per distinct (origDst, origDport, replySrc, replySport). */
  readonly deletions: readonly ConntrackDeletion[];
}

export interface ConntrackCleanupInput {
  /** The state the rules were just synced to. */
  readonly state: NodeState;
  /** The state of the previous successful sync (same family), to catch deleted Service ports. */
  readonly previous?: NodeState;
  /**
   * This node's addresses (canonical text, this family). When given, an entry is a NodePort
   * candidate only if its original destination is one of them; when absent, any destination with
   * the NodePort's port is (upstream's behaviour).
   */
  readonly localAddresses?: readonly string[];
  /** Default `['UDP']`, as upstream. */
  readonly protocols?: readonly ConntrackProtocol[];
  /** The endpoints a service port's flows may keep pointing at. Default: every serving endpoint (upstream). */
  readonly endpointsOf?: (sp: ServicePortState) => readonly Pick<EndpointTarget, 'ip' | 'port'>[];
}

function isConntrackProtocol(p: string): p is ConntrackProtocol {
  return p === 'UDP' || p === 'SCTP';
}

const ipPortKey = (ip: string, port: number): string => `${ip}|${port}`;

interface Frontends {
  /** `proto|ip|port` → allowed backends (`ip|port`); empty set: the frontend has no endpoints. */
  readonly byAddress: Map<string, Set<string>>;
  /** `proto|nodePort` → allowed backends. */
  readonly byNodePort: Map<string, Set<string>>;
}

function collectFrontends(
  state: NodeState,
  protocols: ReadonlySet<string>,
  endpointsOf: (sp: ServicePortState) => readonly Pick<EndpointTarget, 'ip' | 'port'>[],
): Frontends {
  const byAddress = new Map<string, Set<string>>();
  const byNodePort = new Map<string, Set<string>>();
  const add = (map: Map<string, Set<string>>, key: string, backends: readonly string[]): void => {
    let set = map.get(key);
    if (!set) {
      set = new Set();
      map.set(key, set);
    }
    for (const b of backends) set.add(b);
  };
  for (const sp of state.servicePorts) {
    const proto = sp.ref.protocol;
    if (!protocols.has(proto)) continue;
    const backends = endpointsOf(sp).map((e) => ipPortKey(e.ip, e.port));
    const ips = [sp.clusterIP, ...sp.externalIPs, ...sp.loadBalancerIPs];
    for (const ip of ips) add(byAddress, `${proto}|${ipPortKey(ip, sp.port)}`, backends);
    if (sp.nodePort !== undefined) add(byNodePort, `${proto}|${sp.nodePort}`, backends);
  }
  return { byAddress, byNodePort };
}

/** Decide which entries are stale. Entries of another family or protocol are ignored. */
export function planConntrackCleanup(
  entries: readonly ConntrackEntry[],
  input: ConntrackCleanupInput,
): ConntrackCleanupPlan {
  const { state, previous } = input;
  const protocols = new Set<string>(input.protocols ?? ['UDP']);
  const endpointsOf = input.endpointsOf ?? ((sp: ServicePortState) => sp.servingEndpoints);
  const current = collectFrontends(state, protocols, endpointsOf);
  const before =
    previous && previous.family === state.family
      ? collectFrontends(previous, protocols, () => [])
      : { byAddress: new Map<string, Set<string>>(), byNodePort: new Map<string, Set<string>>() };
  const local = input.localAddresses ? new Set(input.localAddresses) : undefined;

  const stale: StaleEntry[] = [];
  for (const entry of entries) {
    if (entry.family !== state.family || !isConntrackProtocol(entry.protocol)) continue;
    if (!protocols.has(entry.protocol)) continue;
    const { original: o, reply: r } = entry;
    const dnated = r.src !== o.dst || r.sport !== o.dport;
    const backend = ipPortKey(r.src, r.sport);

    /** `allowed` undefined: the frontend only existed in the previous state. */
    const judge = (allowed: Set<string> | undefined): StaleReason | undefined => {
      if (!allowed) return dnated ? 'service-gone' : undefined;
      if (allowed.size === 0) return dnated ? 'no-endpoints' : undefined;
      if (allowed.has(backend)) return undefined;
      return dnated ? 'endpoint-gone' : 'not-dnated';
    };

    const addressKey = `${entry.protocol}|${ipPortKey(o.dst, o.dport)}`;
    const allowedByAddress = current.byAddress.get(addressKey);
    if (allowedByAddress || before.byAddress.has(addressKey)) {
      const reason = judge(allowedByAddress);
      if (reason) stale.push({ entry, reason, frontend: `${o.dst}:${o.dport}` });
      continue;
    }
    if (local && !local.has(o.dst)) continue;
    const portKey = `${entry.protocol}|${o.dport}`;
    const allowedByPort = current.byNodePort.get(portKey);
    if (allowedByPort || before.byNodePort.has(portKey)) {
      const reason = judge(allowedByPort);
      if (reason) stale.push({ entry, reason, frontend: `*:${o.dport}` });
    }
  }
  return { stale, deletions: groupDeletions(stale) };
}

function groupDeletions(stale: readonly StaleEntry[]): ConntrackDeletion[] {
  const groups = new Map<string, ConntrackDeletion>();
  for (const { entry, reason } of stale) {
    const key = [entry.protocol, entry.original.dst, entry.original.dport, entry.reply.src, entry.reply.sport].join(
      '|',
    );
    const seen = groups.get(key);
    groups.set(
      key,
      seen
        ? { ...seen, entries: seen.entries + 1 }
        : {
            family: entry.family,
            protocol: entry.protocol,
            origDst: entry.original.dst,
            origDport: entry.original.dport,
            replySrc: entry.reply.src,
            replySport: entry.reply.sport,
            reason,
            entries: 1,
          },
    );
  }
  return [...groups.values()].sort(
    (a, b) =>
      cmp(a.protocol, b.protocol) ||
      cmp(a.origDst, b.origDst) ||
      a.origDport - b.origDport ||
      cmp(a.replySrc, b.replySrc) ||
      a.replySport - b.replySport,
  );
}

const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

export interface PredictInput {
  /** The state of the previous successful sync. */
  readonly previous: NodeState;
  /** The state about to be committed (same family). */
  readonly state: NodeState;
  /** Only these Services (`namespace/name`): the ones a partial sync touched. */
  readonly services: ReadonlySet<string>;
  /** Default `['UDP']`, as upstream. */
  readonly protocols?: readonly ConntrackProtocol[];
  /** As in {@link ConntrackCleanupInput}. Default: every serving endpoint. */
  readonly endpointsOf?: (sp: ServicePortState) => readonly Pick<EndpointTarget, 'ip' | 'port'>[];
}

/**
 * The deletion filters a change from `previous` to `state` calls for, predicted without listing
 * (upstream kube-proxy's own way before it listed): for each frontend address of a touched Service's
 * datagram port, every endpoint it may no longer send to. They can be computed before the commit
 * and run the moment it returns; a filter that matches nothing deletes nothing. NodePorts and
 * never-DNATed flows are left to the listing-based plan, which runs after.
 */
export function predictStaleDeletions(input: PredictInput): ConntrackDeletion[] {
  const { previous, state } = input;
  if (previous.family !== state.family) return [];
  const protocols = new Set<string>(input.protocols ?? ['UDP']);
  const endpointsOf = input.endpointsOf ?? ((sp: ServicePortState) => sp.servingEndpoints);
  const touched = (sp: ServicePortState) =>
    protocols.has(sp.ref.protocol) && input.services.has(`${sp.ref.namespace}/${sp.ref.name}`);
  const after = collectFrontends(
    { ...state, servicePorts: state.servicePorts.filter(touched) },
    protocols,
    endpointsOf,
  );
  const out = new Map<string, ConntrackDeletion>();
  for (const sp of previous.servicePorts) {
    if (!touched(sp) || !isConntrackProtocol(sp.ref.protocol)) continue;
    const protocol = sp.ref.protocol;
    const before = endpointsOf(sp);
    for (const ip of [sp.clusterIP, ...sp.externalIPs, ...sp.loadBalancerIPs]) {
      const allowed = after.byAddress.get(`${protocol}|${ipPortKey(ip, sp.port)}`);
      const reason: StaleReason = !allowed ? 'service-gone' : allowed.size === 0 ? 'no-endpoints' : 'endpoint-gone';
      for (const ep of before) {
        if (allowed?.has(ipPortKey(ep.ip, ep.port))) continue;
        const key = [protocol, ip, sp.port, ep.ip, ep.port].join('|');
        out.set(key, {
          family: state.family,
          protocol,
          origDst: ip,
          origDport: sp.port,
          replySrc: ep.ip,
          replySport: ep.port,
          reason,
          entries: 0,
        });
      }
    }
  }
  return [...out.values()];
}

/** The key a deletion filter is identified by (protocol, original destination, reply source). */
export function deletionKey(d: ConntrackDeletion): string {
  return [d.protocol, d.origDst, d.origDport, d.replySrc, d.replySport].join('|');
}
