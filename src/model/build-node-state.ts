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
): ServicePortState {
  const candidates = collectEndpoints(slices, port, nodeName);
  const zone = node?.labels[ZONE_LABEL];
  const cluster = clusterEndpoints(candidates, nodeName, zone);
  const local = localEndpoints(candidates);
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
function collectEndpoints(slices: readonly EndpointSlice[], port: ServicePortSpec, nodeName: string): Candidate[] {
  const byKey = new Map<string, Candidate>();
  for (const slice of slices) {
    const slicePort = slice.ports.find((p) => p.name === port.name && p.protocol === port.protocol);
    if (!slicePort) continue;
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
  return [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, c]) => c);
}

export function endpointKey(t: EndpointTarget): string {
  return t.ip.includes(':') ? `[${t.ip}]:${t.port}` : `${t.ip}:${t.port}`;
}

const isReady = (c: Candidate) => c.endpoint.conditions.ready;
const isServingTerminating = (c: Candidate) => c.endpoint.conditions.serving && c.endpoint.conditions.terminating;

type TopologyMode = 'PreferSameNode' | 'PreferSameZone' | 'none';

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
  return chosen.map((c) => c.target);
}

/** Local ready endpoints; if none, local serving-terminating ones. */
function localEndpoints(candidates: readonly Candidate[]): EndpointTarget[] {
  const local = candidates.filter((c) => c.target.isLocal);
  const ready = local.filter(isReady);
  return (ready.length > 0 ? ready : local.filter(isServingTerminating)).map((c) => c.target);
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
