/**
 * @module backends/ipvs/render/layout
 * One family's NodeState → what IPVS mode programs (pure): the IPVS virtual servers with their
 * real servers, the addresses kube-ipvs0 must hold, and the helper table `kproxy-ipvs` (nftables)
 * that does everything IPVS cannot: masquerade, hairpin, loadBalancerSourceRanges, REJECT for
 * no endpoints and for unused ports, DROP for a Local policy without an endpoint here, and the
 * externalTrafficPolicy Local short-circuit.
 *
 * Every decision about where a packet goes comes from the model (ServicePortState); this module
 * only maps it onto IPVS objects:
 *  - the ClusterIP's virtual server gets the internal route's endpoints;
 *  - each externalIP, LB IP and NodePort address gets one virtual server with the external
 *    route's endpoints (policy Local: the local ones, possibly none);
 *  - policy Local's short-circuit (pods to all cluster endpoints unmasqueraded, the node
 *    masqueraded) cannot live on the same virtual server: pods' and the node's packets to the
 *    port's external frontends get a firewall mark in nat prerouting/output, and a fwmark virtual
 *    server of that mark holds the cluster endpoints (IPVS looks fwmark services up first);
 *  - a route without endpoints keeps its virtual server (no real servers, as upstream) and the
 *    helper table rejects or drops before IPVS sees the packet.
 */
import type { Cidr, Family, Protocol } from '../../../model/cluster.ts';
import { cidrContains, hostCidr } from '../../../model/ip.ts';
import type { IpvsScheduler } from '../../../model/ipvs-schedulers.ts';
import type { EndpointTarget, NodeState, ServicePortState } from '../../../model/node-state.ts';
import type { Problem } from '../../../util/problems.ts';
import { outermostCidrs } from '../../nftables/render/cidrs.ts';
import type { Ruleset } from '../../nftables/render/ruleset.ts';
import {
  element,
  elementKey,
  nftFamily,
  sortByKey,
  value,
  type Element,
  type Value,
  type Verdict,
} from '../../nftables/render/syntax.ts';
import { helperChains, helperSets, shortCircuitChainOf } from './helper-rules.ts';
import { CHAIN, SET, shortCircuitChain, TABLE, type SetName } from './names.ts';
import { keyText, type RealServer, type SchedulerFlag, type VirtualServer, type VirtualServerKey } from './syntax.ts';

export interface IpvsRenderContext {
  /**
   * This family's local addresses outside kube-ipvs0 (no loopback, no IPv6 link-local): NodePorts
   * answer on those nodePortAddresses allows, and an externalIP or LB IP among them is not put on
   * kube-ipvs0. `kproxy dump` uses the Node object's addresses.
   */
  readonly localAddresses: readonly string[];
  readonly defaultScheduler: IpvsScheduler;
  /** The schedulers the kernel offers; undefined: unknown (dump), every name is taken as offered. */
  readonly availableSchedulers?: ReadonlySet<IpvsScheduler>;
  /** The firewall mark of each externalTrafficPolicy Local service port (by key): see fwmarks.ts. */
  readonly fwmarks: ReadonlyMap<string, number>;
}

export interface DesiredVirtualServer {
  readonly vs: VirtualServer;
  readonly realServers: readonly RealServer[];
  /** The service port it serves (its key), for logs. */
  readonly servicePort: string;
  /** Its traffic's protocol (a fwmark service's is its port's): UDP and SCTP real servers go without draining. */
  readonly protocol: Protocol;
}

export interface IpvsFamilyState {
  readonly family: Family;
  /** By keyText. */
  readonly virtualServers: ReadonlyMap<string, DesiredVirtualServer>;
  /** What kube-ipvs0 holds of this family, sorted. */
  readonly addresses: readonly string[];
  readonly ruleset: Ruleset;
  readonly problems: readonly Problem[];
}

/** A virtual server a service port asks for, with the helper-set elements that exist only with it. */
interface Frontend {
  readonly dvs: DesiredVirtualServer;
  /** Put on kube-ipvs0 (ClusterIPs; externalIPs and LB IPs that are not local already). */
  readonly dummyAddress?: string;
  readonly elements: readonly { readonly set: SetName; readonly element: Element }[];
}

export function renderIpvs(state: NodeState, ctx: IpvsRenderContext): IpvsFamilyState {
  const family = state.family;
  const f = nftFamily(family);
  const problems: Problem[] = [];
  const virtualServers = new Map<string, DesiredVirtualServer>();
  const owners = new Map<string, string>();
  const addresses = new Set<string>();
  const bySet = new Map<SetName, Map<string, Element>>();
  const add = (set: SetName, e: Element) => {
    let m = bySet.get(set);
    if (!m) bySet.set(set, (m = new Map()));
    const key = elementKey(e);
    if (!m.has(key)) m.set(key, e);
  };
  const local = new Set(ctx.localAddresses);
  const nodePortAddresses = nodePortAddressesOf(state, ctx.localAddresses);
  const marks: number[] = [];

  for (const sp of state.servicePorts) {
    const scheduler = schedulerOf(sp, ctx, problems);
    const frontends = servicePortFrontends(sp, {
      family,
      scheduler,
      local,
      nodePortAddresses,
      fwmark: ctx.fwmarks.get(sp.key),
      nodeIPs: state.nodeIPs,
    });
    let claimedAny = false;
    for (const fe of frontends) {
      const k = keyText(fe.dvs.vs.key);
      const owner = owners.get(k);
      if (owner === sp.key) continue;
      if (owner !== undefined) {
        problems.push({
          kind: 'Service',
          object: `${sp.ref.namespace}/${sp.ref.name}`,
          path: '',
          message: `virtual server ${k} is already used by Service port ${owner}; this port does not get it`,
        });
        continue;
      }
      owners.set(k, sp.key);
      claimedAny = true;
      virtualServers.set(k, fe.dvs);
      if (fe.dummyAddress !== undefined) addresses.add(fe.dummyAddress);
      for (const e of fe.elements) add(e.set, e.element);
      if (fe.dvs.vs.key.kind === 'fwmark') marks.push(fe.dvs.vs.key.mark);
      for (const rs of fe.dvs.realServers) {
        // Only a pod on this node can send a packet that this node sends back to the same pod.
        if (isLocalEndpoint(sp, rs)) add(SET.hairpin, element.set(value.concat([value.ip(rs.ip), value.ip(rs.ip)])));
      }
    }
    if (claimedAny) add(SET.clusterIps, element.set(value.ip(sp.clusterIP)));
  }
  for (const a of addresses) add(SET.ipvsAddresses, element.set(value.ip(a)));

  const sorted = (set: SetName): Element[] => sortByKey([...(bySet.get(set)?.values() ?? [])]);
  const chains = helperChains(state);
  for (const mark of [...new Set(marks)].sort((a, b) => a - b)) chains.push(shortCircuitChainOf(mark));
  const ruleset: Ruleset = {
    family: f,
    table: TABLE,
    chains,
    sets: helperSets(state, sorted),
  };
  return {
    family,
    virtualServers,
    addresses: [...addresses].sort(),
    ruleset,
    problems,
  };
}

/** A port's external frontends as nft writes their keys (`192.0.2.10 . tcp . 80`), for fwmarks.ts. */
export function externalFrontendTexts(
  sp: ServicePortState,
  state: NodeState,
  localAddresses: readonly string[],
): string[] {
  const proto = sp.ref.protocol.toLowerCase();
  return [
    ...[...sp.externalIPs, ...sp.loadBalancerIPs].map((ip) => `${ip} . ${proto} . ${sp.port}`),
    ...(sp.nodePort !== undefined
      ? nodePortAddressesOf(state, localAddresses).map((ip) => `${ip} . ${proto} . ${sp.nodePort}`)
      : []),
  ];
}

/** The local addresses NodePorts answer on: all of them, or those in nodePortAddresses. */
export function nodePortAddressesOf(state: NodeState, localAddresses: readonly string[]): string[] {
  const d = state.nodePortDestinations;
  // An address may sit on several interfaces (a pod gateway on every pod's veth): one virtual server.
  const unique = [...new Set(localAddresses)];
  if (d.kind === 'allLocal') return unique;
  return unique.filter((a) => d.cidrs.some((c) => cidrContains(c, { family: state.family, text: a })));
}

function schedulerOf(sp: ServicePortState, ctx: IpvsRenderContext, problems: Problem[]): IpvsScheduler {
  const wanted = sp.ipvsScheduler;
  if (wanted === undefined) return ctx.defaultScheduler;
  if (ctx.availableSchedulers && !ctx.availableSchedulers.has(wanted)) {
    problems.push({
      kind: 'Service',
      object: `${sp.ref.namespace}/${sp.ref.name}`,
      path: 'metadata.annotations["kproxy.io/ipvs-scheduler"]',
      message: `the kernel offers no IPVS scheduler ${JSON.stringify(wanted)} (module ip_vs_${wanted}); the Service uses ${ctx.defaultScheduler}`,
    });
    return ctx.defaultScheduler;
  }
  return wanted;
}

function isLocalEndpoint(sp: ServicePortState, rs: RealServer): boolean {
  return sp.servingEndpoints.some((e) => e.isLocal && e.ip === rs.ip && e.port === rs.port);
}

interface PortContext {
  readonly family: Family;
  readonly scheduler: IpvsScheduler;
  readonly local: ReadonlySet<string>;
  readonly nodePortAddresses: readonly string[];
  readonly fwmark: number | undefined;
  readonly nodeIPs: readonly string[];
}

const REJECT: Verdict = { kind: 'goto', chain: CHAIN.reject };
const DROP: Verdict = { kind: 'drop' };

/** Every virtual server one service port asks for, ClusterIP first. */
function servicePortFrontends(sp: ServicePortState, pc: PortContext): Frontend[] {
  const protocol = sp.ref.protocol;
  const proto = value.protocol(protocol);
  const flags: SchedulerFlag[] = pc.scheduler === 'mh' ? ['mh-port'] : [];
  const virtualServer = (key: VirtualServerKey): VirtualServer => ({
    key,
    scheduler: pc.scheduler,
    ...(sp.affinityTimeoutSeconds !== undefined ? { persistence: sp.affinityTimeoutSeconds } : {}),
    flags,
  });
  const servers = (eps: readonly EndpointTarget[]): RealServer[] =>
    eps.map((e) => ({ ip: e.ip, port: e.port, weight: 1 }));
  const frontendKey = (ip: string, port: number): Value => value.concat([value.ip(ip), proto, value.port(port)]);
  const out: Frontend[] = [];

  // The ClusterIP.
  const internal = sp.internal;
  const cipKey = frontendKey(sp.clusterIP, sp.port);
  const cipElements: Frontend['elements'][number][] = [{ set: SET.virtualServers, element: element.set(cipKey) }];
  if (internal.kind === 'reject' || internal.kind === 'drop') {
    cipElements.push({
      set: SET.noEndpointServices,
      element: element.vmap(cipKey, internal.kind === 'reject' ? REJECT : DROP),
    });
  }
  out.push({
    dvs: {
      vs: virtualServer({ kind: 'address', protocol, ip: sp.clusterIP, port: sp.port }),
      realServers: internal.kind === 'cluster' || internal.kind === 'local' ? servers(internal.endpoints) : [],
      servicePort: sp.key,
      protocol,
    },
    dummyAddress: sp.clusterIP,
    elements: cipElements,
  });

  const external = sp.external;
  if (!external) return out;
  const nodePort = sp.nodePort;
  const outside: { ip: string; port: number; dummy: boolean }[] = [
    ...sp.externalIPs.map((ip) => ({ ip, port: sp.port, dummy: !pc.local.has(ip) })),
    ...sp.loadBalancerIPs.map((ip) => ({ ip, port: sp.port, dummy: !pc.local.has(ip) })),
    ...(nodePort !== undefined ? pc.nodePortAddresses.map((ip) => ({ ip, port: nodePort, dummy: false })) : []),
  ];
  const realServers =
    external.kind === 'cluster'
      ? servers(external.endpoints)
      : external.kind === 'local'
        ? servers(external.local)
        : [];
  const shortCircuit =
    external.kind === 'local' && pc.fwmark !== undefined && outside.length > 0 ? pc.fwmark : undefined;

  for (const o of outside) {
    const key = frontendKey(o.ip, o.port);
    const elements: Frontend['elements'][number][] = [{ set: SET.virtualServers, element: element.set(key) }];
    if (external.kind === 'reject') elements.push({ set: SET.noEndpointServices, element: element.vmap(key, REJECT) });
    else if (external.kind === 'cluster') elements.push({ set: SET.externalCluster, element: element.set(key) });
    else {
      if (external.local.length === 0) elements.push({ set: SET.noLocalEndpoints, element: element.set(key) });
      if (shortCircuit !== undefined)
        elements.push({
          set: SET.shortCircuit,
          element: element.vmap(key, { kind: 'goto', chain: shortCircuitChain(shortCircuit) }),
        });
    }
    out.push({
      dvs: {
        vs: virtualServer({ kind: 'address', protocol, ip: o.ip, port: o.port }),
        realServers,
        servicePort: sp.key,
        protocol,
      },
      ...(o.dummy ? { dummyAddress: o.ip } : {}),
      elements: [...elements, ...firewallElements(sp, o, pc, proto)],
    });
  }

  if (shortCircuit !== undefined && external.kind === 'local') {
    out.push({
      dvs: {
        vs: virtualServer({ kind: 'fwmark', family: pc.family, mark: shortCircuit }),
        realServers: servers(external.cluster),
        servicePort: sp.key,
        protocol,
      },
      elements: [{ set: SET.shortCircuitMarks, element: element.set(value.number(shortCircuit)) }],
    });
  }
  return out;
}

/** loadBalancerSourceRanges of one LB IP frontend (none for externalIPs and NodePorts). */
function firewallElements(
  sp: ServicePortState,
  o: { ip: string; port: number },
  pc: PortContext,
  proto: Value,
): { set: SetName; element: Element }[] {
  const ranges = sp.loadBalancerSourceRanges;
  if (ranges.length === 0 || !sp.loadBalancerIPs.includes(o.ip) || o.port !== sp.port) return [];
  // Upstream's allowFromNode: when a range holds this node's IP, traffic the node sends from an
  // LB IP (its source, since kube-ipvs0 holds it) is allowed too.
  const allowFromNode = pc.nodeIPs.some((ip) => ranges.some((r) => cidrContains(r, { family: r.family, text: ip })));
  const sources: Cidr[] = [
    ...ranges,
    ...(allowFromNode ? sp.loadBalancerIPs.map((ip) => hostCidr({ family: pc.family, text: ip })) : []),
  ];
  const key = value.concat([value.ip(o.ip), proto, value.port(o.port)]);
  return [
    { set: SET.firewallIps, element: element.set(key) },
    ...outermostCidrs(sources).map((src) => ({
      set: SET.firewallAllow,
      element: element.set(value.concat([value.ip(o.ip), proto, value.port(o.port), value.cidr(src)])),
    })),
  ];
}
