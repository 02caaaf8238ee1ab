/**
 * @module model/build-node-state
 * Turns a cluster snapshot into one family's node-local state, taking every per-port decision
 * upstream kube-proxy takes (pkg/proxy: servicechangetracker, endpointslicecache, topology.go and
 * the proxiers' shared logic). Pure: same snapshot and options, same result.
 */
import type {
  Cidr,
  ClusterSnapshot,
  Endpoint,
  EndpointSlice,
  Family,
  IpAddress,
  Node,
  Service,
  ServicePortSpec,
} from './cluster.ts';
import { ZONE_LABEL } from './cluster.ts';
import type { ProxyConfig } from '../config/proxy-config.ts';
import { hostCidr } from './ip.ts';
import type {
  EndpointTarget,
  ExternalRoute,
  InternalRoute,
  LocalTrafficDetector,
  NodePortDestinations,
  NodeState,
  ServicePortState,
} from './node-state.ts';

export type NodeStateOptions = Pick<
  ProxyConfig,
  'nodeName' | 'clusterCIDRs' | 'detectLocal' | 'nodePortAddresses' | 'masqueradeAll' | 'masqueradeBit'
>;

export function buildNodeState(snapshot: ClusterSnapshot, family: Family, options: NodeStateOptions): NodeState {
  const slicesByService = groupSlices(snapshot.endpointSlices, family);
  const servicePorts = snapshot.services.flatMap((service) =>
    servicePortsOf(service, slicesByService.get(serviceKey(service)) ?? [], family, options.nodeName, snapshot.node),
  );
  servicePorts.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { ...nodeContext(snapshot, family, options), servicePorts };
}

/** Everything of a NodeState but its service ports: what every port's rules depend on. */
export function nodeContext(
  snapshot: ClusterSnapshot,
  family: Family,
  options: NodeStateOptions,
): Omit<NodeState, 'servicePorts'> {
  const node = snapshot.node;
  return {
    family,
    nodeName: options.nodeName,
    nodeIPs: (node?.addresses ?? []).filter((a) => a.family === family).map((a) => a.text),
    serviceCIDRs: snapshot.serviceCIDRs.flatMap((sc) => sc.cidrs.filter((c) => c.family === family)),
    localDetector: localDetector(options, family, node),
    nodePortDestinations: nodePortDestinations(options, family, node),
    masqueradeAll: options.masqueradeAll,
    masqueradeMark: 2 ** options.masqueradeBit,
  };
}

export function serviceKey(s: { readonly namespace: string; readonly name: string }): string {
  return `${s.namespace}/${s.name}`;
}

/**
 * One Service's ports for a family, given the EndpointSlices of that Service (any family; others
 * are ignored). Empty when the Service has no ClusterIP of the family.
 */
export function servicePortsOf(
  service: Service,
  slices: readonly EndpointSlice[],
  family: Family,
  nodeName: string,
  node: Node | undefined,
): ServicePortState[] {
  const clusterIP = service.clusterIPs.find((ip) => ip.family === family);
  if (!clusterIP) return []; // not served by this family's proxier
  const addressType = family === 'ipv4' ? 'IPv4' : 'IPv6';
  const ofFamily = slices.filter((s) => s.addressType === addressType);
  return service.ports.map((port) => buildServicePort(service, port, clusterIP, ofFamily, family, nodeName, node));
}

/**
 * Why an endpoint is not among those a route sends traffic to. Recorded by the same selection code
 * that takes the decision (`kproxy explain` reads it), never read by the decision itself.
 */
export type ExclusionReason =
  /** Not ready and not serving. */
  | 'not-serving'
  /** Not ready, and not the serving-terminating fallback kind either. */
  | 'not-ready'
  /** Serving but terminating: used only while no endpoint is ready, and some are. */
  | 'terminating'
  /** Topology hints (PreferSameZone) send it to other zones. */
  | 'other-zone'
  /** Topology hints (PreferSameNode) send it to other nodes. */
  | 'other-node'
  /** On another node, under a Local traffic policy. */
  | 'remote'
  /** Its EndpointSlice is of the other IP family. */
  | 'wrong-family'
  /** Its EndpointSlice has no port of this name and protocol. */
  | 'no-such-port';

export interface Exclusion {
  /** `IP:port` (`[IPv6]:port`), or the bare IP when its slice has no port for this service port. */
  readonly endpoint: string;
  readonly reason: ExclusionReason;
  /** The same, for a person: the facts that made the decision. */
  readonly detail: string;
}

/** One service port's decision with the endpoints each endpoint list left out, and why. */
export interface ServicePortTrace {
  readonly state: ServicePortState;
  /** The topology mode upstream derives from the hints (topologyModeFromHints). */
  readonly topology: TopologyMode;
  /** Left out of the cluster-wide list (policy Cluster; what pods and the node get under external Local). */
  readonly clusterExcluded: readonly Exclusion[];
  /** Left out of the node-local list (policy Local). */
  readonly localExcluded: readonly Exclusion[];
}

/**
 * {@link servicePortsOf} with the reasons recorded: the very same decision (the same functions,
 * called with a recorder), for `kproxy explain`. `slices` may hold both families' slices.
 */
export function traceServicePortsOf(
  service: Service,
  slices: readonly EndpointSlice[],
  family: Family,
  nodeName: string,
  node: Node | undefined,
): ServicePortTrace[] {
  const clusterIP = service.clusterIPs.find((ip) => ip.family === family);
  if (!clusterIP) return [];
  const addressType = family === 'ipv4' ? 'IPv4' : 'IPv6';
  const ofFamily = slices.filter((s) => s.addressType === addressType);
  const otherFamily = slices.filter((s) => s.addressType !== addressType);
  return service.ports.map((port) => {
    const trace: TraceSink = { topology: 'none', cluster: [], local: [], common: [] };
    const wrongFamily: Exclusion[] = [];
    for (const slice of otherFamily) {
      const slicePort = slice.ports.find((p) => p.name === port.name && p.protocol === port.protocol);
      for (const e of slice.endpoints) {
        wrongFamily.push({
          endpoint: slicePort
            ? endpointKey({ ip: e.address.text, port: slicePort.port, isLocal: false })
            : e.address.text,
          reason: 'wrong-family',
          detail: `in the ${slice.addressType} EndpointSlice ${slice.namespace}/${slice.name}; this packet is ${addressType}`,
        });
      }
    }
    const state = buildServicePort(service, port, clusterIP, ofFamily, family, nodeName, node, trace);
    return {
      state,
      topology: trace.topology,
      clusterExcluded: [...trace.common, ...trace.cluster, ...wrongFamily],
      localExcluded: [...trace.common, ...trace.local, ...wrongFamily],
    };
  });
}

/** Where the selection functions record what they leave out (only when explaining). */
interface TraceSink {
  topology: TopologyMode;
  readonly cluster: Exclusion[];
  readonly local: Exclusion[];
  /** Left out before any list is built (no such port in the slice). */
  readonly common: Exclusion[];
}

/** EndpointSlices by the `namespace/name` of their Service (only `family`'s, when given). */
export function groupSlices(slices: readonly EndpointSlice[], family?: Family): Map<string, EndpointSlice[]> {
  const addressType = family === 'ipv4' ? 'IPv4' : family === 'ipv6' ? 'IPv6' : undefined;
  const bySvc = new Map<string, EndpointSlice[]>();
  for (const slice of slices) {
    if (addressType && slice.addressType !== addressType) continue;
    const key = `${slice.namespace}/${slice.serviceName}`;
    const list = bySvc.get(key);
    if (list) list.push(slice);
    else bySvc.set(key, [slice]);
  }
  return bySvc;
}

/** One endpoint of one service port, with what topology and policy need to know of it. */
interface Candidate {
  readonly target: EndpointTarget;
  readonly endpoint: Endpoint;
}

function buildServicePort(
  service: Service,
  port: ServicePortSpec,
  clusterIP: IpAddress,
  slices: readonly EndpointSlice[],
  family: Family,
  nodeName: string,
  node: Node | undefined,
  trace?: TraceSink,
): ServicePortState {
  const candidates = collectEndpoints(slices, port, nodeName, trace);
  const zone = node?.labels[ZONE_LABEL];
  const cluster = clusterEndpoints(candidates, nodeName, zone, trace);
  const local = localEndpoints(candidates, trace, nodeName);
  const ofFamily = (ips: readonly IpAddress[]) => ips.filter((ip) => ip.family === family).map((ip) => ip.text);
  const externalIPs = ofFamily(service.externalIPs);
  const loadBalancerIPs = ofFamily(service.loadBalancerIPs);
  const externallyAccessible = port.nodePort !== undefined || externalIPs.length > 0 || loadBalancerIPs.length > 0;
  return {
    ref: { namespace: service.namespace, name: service.name, portName: port.name, protocol: port.protocol },
    key: `${service.namespace}/${service.name}:${port.name}`,
    clusterIP: clusterIP.text,
    port: port.port,
    ...(port.nodePort !== undefined ? { nodePort: port.nodePort } : {}),
    externalIPs,
    loadBalancerIPs,
    loadBalancerSourceRanges:
      loadBalancerIPs.length > 0 ? service.loadBalancerSourceRanges.filter((c) => c.family === family) : [],
    ...(service.sessionAffinityTimeoutSeconds !== undefined
      ? { affinityTimeoutSeconds: service.sessionAffinityTimeoutSeconds }
      : {}),
    internal: internalRoute(service, cluster, local),
    ...(externallyAccessible ? { external: externalRoute(service, cluster, local) } : {}),
    ...(service.healthCheckNodePort !== undefined ? { healthCheckNodePort: service.healthCheckNodePort } : {}),
    servingEndpoints: candidates.filter((c) => c.endpoint.conditions.serving).map((c) => c.target),
    localEndpointCount: candidates.filter((c) => c.target.isLocal && isReady(c)).length,
    ...(service.ipvsScheduler !== undefined ? { ipvsScheduler: service.ipvsScheduler } : {}),
  };
}

/**
 * The endpoints of every slice for this port, one per "IP:port", ordered by that string as
 * upstream orders them. A duplicate is merged; the local copy wins.
 */
function collectEndpoints(
  slices: readonly EndpointSlice[],
  port: ServicePortSpec,
  nodeName: string,
  trace?: TraceSink,
): Candidate[] {
  const byKey = new Map<string, Candidate>();
  for (const slice of slices) {
    const slicePort = slice.ports.find((p) => p.name === port.name && p.protocol === port.protocol);
    if (!slicePort) {
      if (trace)
        for (const e of slice.endpoints)
          trace.common.push({
            endpoint: e.address.text,
            reason: 'no-such-port',
            detail: `its EndpointSlice ${slice.namespace}/${slice.name} has no port ${JSON.stringify(port.name)}/${port.protocol}`,
          });
      continue;
    }
    for (const endpoint of slice.endpoints) {
      const target: EndpointTarget = {
        ip: endpoint.address.text,
        port: slicePort.port,
        isLocal: endpoint.nodeName === nodeName,
      };
      const key = endpointKey(target);
      const existing = byKey.get(key);
      // Upstream merges duplicates with the local copy winning (the last local one, if several).
      if (!existing || target.isLocal) byKey.set(key, { target, endpoint });
    }
  }
  const entries = [...byKey];
  entries.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  return entries.map((e) => e[1]);
}

export function endpointKey(t: EndpointTarget): string {
  return t.ip.includes(':') ? `[${t.ip}]:${t.port}` : `${t.ip}:${t.port}`;
}

const isReady = (c: Candidate) => c.endpoint.conditions.ready;
const isServingTerminating = (c: Candidate) => c.endpoint.conditions.serving && c.endpoint.conditions.terminating;

export type TopologyMode = 'PreferSameNode' | 'PreferSameZone' | 'none';

/** Upstream topologyModeFromHints: hints count only when every ready endpoint carries them. */
function topologyMode(candidates: readonly Candidate[], nodeName: string, zone: string | undefined): TopologyMode {
  const ready = candidates.filter(isReady);
  if (ready.length === 0) return 'none';
  const forNodes = (c: Candidate) => c.endpoint.hints?.forNodes ?? [];
  const forZones = (c: Candidate) => c.endpoint.hints?.forZones ?? [];
  if (ready.every((c) => forNodes(c).length > 0) && ready.some((c) => forNodes(c).includes(nodeName))) {
    return 'PreferSameNode';
  }
  if (zone && ready.every((c) => forZones(c).length > 0) && ready.some((c) => forZones(c).includes(zone))) {
    return 'PreferSameZone';
  }
  return 'none';
}

/** Ready endpoints filtered by topology; if none is ready, serving-terminating ones anywhere. */
function clusterEndpoints(
  candidates: readonly Candidate[],
  nodeName: string,
  zone: string | undefined,
  trace?: TraceSink,
): EndpointTarget[] {
  const mode = topologyMode(candidates, nodeName, zone);
  const inTopology = (c: Candidate) =>
    mode === 'PreferSameNode'
      ? (c.endpoint.hints?.forNodes ?? []).includes(nodeName)
      : mode === 'PreferSameZone'
        ? zone !== undefined && (c.endpoint.hints?.forZones ?? []).includes(zone)
        : true;
  const ready = candidates.filter((c) => isReady(c) && inTopology(c));
  const chosen = ready.length > 0 ? ready : candidates.filter(isServingTerminating);
  if (trace) {
    trace.topology = mode;
    recordLeftOut(trace.cluster, candidates, chosen, ready.length, (c) =>
      !isReady(c)
        ? undefined
        : mode === 'PreferSameNode'
          ? {
              reason: 'other-node',
              detail: `topology hints send it to ${list(c.endpoint.hints?.forNodes)} (PreferSameNode); this is ${nodeName}`,
            }
          : {
              reason: 'other-zone',
              detail: `topology hints send it to ${list(c.endpoint.hints?.forZones)} (PreferSameZone); this node is in ${zone ?? '(no zone)'}`,
            },
    );
  }
  return chosen.map((c) => c.target);
}

/** Local ready endpoints; if none, local serving-terminating ones. */
function localEndpoints(candidates: readonly Candidate[], trace?: TraceSink, nodeName?: string): EndpointTarget[] {
  const local = candidates.filter((c) => c.target.isLocal);
  const ready = local.filter(isReady);
  const chosen = ready.length > 0 ? ready : local.filter(isServingTerminating);
  if (trace)
    recordLeftOut(trace.local, candidates, chosen, ready.length, (c) =>
      c.target.isLocal
        ? undefined
        : {
            reason: 'remote',
            detail: `on ${c.endpoint.nodeName === undefined ? 'no node' : `node ${c.endpoint.nodeName}`}; a Local policy uses this node's (${nodeName}) endpoints only`,
          },
    );
  return chosen.map((c) => c.target);
}

/**
 * Records why each candidate not in `chosen` was left out: `other` names a reason specific to the
 * list (topology, locality) or returns undefined; then the endpoint's own conditions explain it.
 */
function recordLeftOut(
  into: Exclusion[],
  candidates: readonly Candidate[],
  chosen: readonly Candidate[],
  readyChosen: number,
  other: (c: Candidate) => Pick<Exclusion, 'reason' | 'detail'> | undefined,
): void {
  const picked = new Set(chosen);
  for (const c of candidates) {
    if (picked.has(c)) continue;
    const why: Pick<Exclusion, 'reason' | 'detail'> =
      other(c) ??
      (isServingTerminating(c)
        ? { reason: 'terminating', detail: `terminating (serving); ${readyChosen} ready endpoint(s) serve instead` }
        : !c.endpoint.conditions.serving
          ? { reason: 'not-serving', detail: 'not ready and not serving' }
          : { reason: 'not-ready', detail: 'not ready (and not terminating: no fallback to it)' });
    into.push({ endpoint: endpointKey(c.target), ...why });
  }
}

function list(items: readonly string[] | undefined): string {
  return items && items.length > 0 ? items.join(', ') : '(no hint)';
}

function nonEmpty<T>(list: readonly T[]): readonly [T, ...T[]] | undefined {
  return list.length > 0 ? (list as readonly [T, ...T[]]) : undefined;
}

/*
 * `cluster` is empty exactly when no endpoint anywhere is ready or serving-terminating (topology
 * never filters to nothing: a mode applies only when some ready endpoint matches it), so an empty
 * `cluster` means "no endpoints at all" and gets REJECT; an empty `local` beside a non-empty
 * `cluster` means "none here" and gets DROP.
 */
function internalRoute(service: Service, cluster: EndpointTarget[], local: EndpointTarget[]): InternalRoute {
  const all = nonEmpty(cluster);
  if (!all) return { kind: 'reject' };
  if (service.internalTrafficPolicy === 'Cluster') return { kind: 'cluster', endpoints: all };
  const mine = nonEmpty(local);
  return mine ? { kind: 'local', endpoints: mine } : { kind: 'drop' };
}

function externalRoute(service: Service, cluster: EndpointTarget[], local: EndpointTarget[]): ExternalRoute {
  const all = nonEmpty(cluster);
  if (!all) return { kind: 'reject' };
  if (service.externalTrafficPolicy === 'Cluster') return { kind: 'cluster', endpoints: all };
  return { kind: 'local', local, cluster: all };
}

function localDetector(options: NodeStateOptions, family: Family, node: Node | undefined): LocalTrafficDetector {
  const cidrsOf = (list: readonly Cidr[]): LocalTrafficDetector => {
    const cidrs = nonEmpty(list.filter((c) => c.family === family));
    return cidrs ? { kind: 'cidrs', cidrs } : { kind: 'none' };
  };
  const d = options.detectLocal;
  switch (d.mode) {
    case 'ClusterCIDR':
      return cidrsOf(options.clusterCIDRs);
    case 'NodeCIDR':
      return cidrsOf(node?.podCIDRs ?? []);
    case 'BridgeInterface':
      return { kind: 'bridgeInterface', interfaceName: d.bridgeInterface };
    case 'InterfaceNamePrefix':
      return { kind: 'interfacePrefix', prefix: d.interfaceNamePrefix };
    case 'None':
      return { kind: 'none' };
  }
}

function nodePortDestinations(options: NodeStateOptions, family: Family, node: Node | undefined): NodePortDestinations {
  const n = options.nodePortAddresses;
  switch (n.kind) {
    case 'all':
      return { kind: 'allLocal' };
    case 'cidrs':
      return { kind: 'cidrs', cidrs: n.cidrs.filter((c) => c.family === family) };
    case 'primary': {
      // The node's primary IP of this family: the first address the Node object lists.
      const primary = node?.addresses.find((a) => a.family === family);
      return { kind: 'cidrs', cidrs: primary ? [hostCidr(primary)] : [] };
    }
  }
}
