/**
 * Compact builders for already-validated `model/cluster.ts` objects (what `source/normalize.ts`
 * produces), for tests of the pure core that should not go through YAML. Addresses are given as
 * text and parsed with `model/ip.ts`; a bad literal throws, since it is a mistake in the test.
 */
import type {
  Cidr,
  ClusterSnapshot,
  Endpoint,
  EndpointPort,
  EndpointSlice,
  IpAddress,
  Node,
  Service,
  ServiceCIDR,
} from '../../src/model/cluster.ts';
import { ZONE_LABEL } from '../../src/model/cluster.ts';
import { parseCidr, parseIp } from '../../src/model/ip.ts';
import type { NodeStateOptions } from '../../src/model/build-node-state.ts';

export const NODE = 'node-a';

export function ip(text: string): IpAddress {
  const parsed = parseIp(text);
  if (!parsed) throw new Error(`test bug: bad IP ${text}`);
  return parsed;
}

export function cidr(text: string): Cidr {
  const parsed = parseCidr(text);
  if (!parsed) throw new Error(`test bug: bad CIDR ${text}`);
  return parsed;
}

type AddressLists = 'clusterIPs' | 'externalIPs' | 'loadBalancerIPs' | 'loadBalancerSourceRanges';

export type ServiceInit = Partial<Omit<Service, 'name' | AddressLists>> & {
  readonly clusterIPs?: readonly string[];
  readonly externalIPs?: readonly string[];
  readonly loadBalancerIPs?: readonly string[];
  readonly loadBalancerSourceRanges?: readonly string[];
};

/** A Service in namespace `default` with ClusterIP 10.96.0.10 and one port `http` TCP 80 unless told otherwise. */
export function service(name: string, init: ServiceInit = {}): Service {
  const { clusterIPs, externalIPs, loadBalancerIPs, loadBalancerSourceRanges, ...rest } = init;
  return {
    namespace: 'default',
    type: 'ClusterIP',
    ports: [{ name: 'http', protocol: 'TCP', port: 80 }],
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    ...rest,
    name,
    clusterIPs: (clusterIPs ?? ['10.96.0.10']).map(ip),
    externalIPs: (externalIPs ?? []).map(ip),
    loadBalancerIPs: (loadBalancerIPs ?? []).map(ip),
    loadBalancerSourceRanges: (loadBalancerSourceRanges ?? []).map(cidr),
  };
}

export interface EndpointInit {
  /** nodeName; `NODE` makes the endpoint local. */
  readonly node?: string;
  readonly zone?: string;
  readonly ready?: boolean;
  readonly serving?: boolean;
  readonly terminating?: boolean;
  readonly forZones?: readonly string[];
  readonly forNodes?: readonly string[];
}

/** An endpoint; conditions default as the API defaults them (ready, serving, not terminating). */
export function ep(address: string, init: EndpointInit = {}): Endpoint {
  const hints =
    init.forZones !== undefined || init.forNodes !== undefined
      ? { forZones: init.forZones ?? [], forNodes: init.forNodes ?? [] }
      : undefined;
  return {
    address: ip(address),
    conditions: { ready: init.ready ?? true, serving: init.serving ?? true, terminating: init.terminating ?? false },
    ...(init.node !== undefined ? { nodeName: init.node } : {}),
    ...(init.zone !== undefined ? { zone: init.zone } : {}),
    ...(hints !== undefined ? { hints } : {}),
  };
}

/** A local endpoint (on `NODE`). */
export const local = (address: string, init: EndpointInit = {}): Endpoint => ep(address, { node: NODE, ...init });
/** An endpoint on another node. */
export const remote = (address: string, init: EndpointInit = {}): Endpoint => ep(address, { node: 'node-b', ...init });
/** Serving and terminating (the fallback kind). */
export const terminating = (address: string, init: EndpointInit = {}): Endpoint =>
  ep(address, { node: 'node-b', ready: false, serving: true, terminating: true, ...init });

export interface SliceInit {
  readonly name?: string;
  readonly namespace?: string;
  readonly addressType?: 'IPv4' | 'IPv6';
  readonly ports?: readonly EndpointPort[];
}

let sliceCounter = 0;

/** A slice of Service `serviceName` with port `http` TCP 8080 unless told; the address type follows the first endpoint. */
export function slice(serviceName: string, endpoints: readonly Endpoint[], init: SliceInit = {}): EndpointSlice {
  const family = endpoints[0]?.address.family ?? 'ipv4';
  return {
    namespace: init.namespace ?? 'default',
    name: init.name ?? `${serviceName}-${++sliceCounter}`,
    serviceName,
    addressType: init.addressType ?? (family === 'ipv4' ? 'IPv4' : 'IPv6'),
    ports: init.ports ?? [{ name: 'http', protocol: 'TCP', port: 8080 }],
    endpoints,
  };
}

export interface NodeInit {
  readonly zone?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly addresses?: readonly string[];
  readonly podCIDRs?: readonly string[];
}

export function node(init: NodeInit = {}, name: string = NODE): Node {
  return {
    name,
    labels: { ...(init.zone !== undefined ? { [ZONE_LABEL]: init.zone } : {}), ...init.labels },
    addresses: (init.addresses ?? ['192.0.2.1', '2001:db8::1']).map(ip),
    podCIDRs: (init.podCIDRs ?? []).map(cidr),
    beingRemoved: false,
  };
}

export function serviceCIDR(name: string, ...cidrs: string[]): ServiceCIDR {
  return { name, cidrs: cidrs.map(cidr) };
}

export interface SnapshotInit {
  readonly services?: readonly Service[];
  readonly slices?: readonly EndpointSlice[];
  readonly node?: Node;
  readonly serviceCIDRs?: readonly ServiceCIDR[];
}

export function snapshot(init: SnapshotInit = {}): ClusterSnapshot {
  return {
    services: init.services ?? [],
    endpointSlices: init.slices ?? [],
    ...(init.node !== undefined ? { node: init.node } : {}),
    serviceCIDRs: init.serviceCIDRs ?? [],
  };
}

export type OptionsInit = Partial<Omit<NodeStateOptions, 'clusterCIDRs'>> & {
  readonly clusterCIDRs?: readonly string[];
};

/** Options as the defaults give them (detect-local ClusterCIDR, nodePortAddresses primary, bit 14), node `NODE`. */
export function options(init: OptionsInit = {}): NodeStateOptions {
  const { clusterCIDRs, ...rest } = init;
  return {
    nodeName: NODE,
    detectLocal: { mode: 'ClusterCIDR' },
    nodePortAddresses: { kind: 'primary' },
    masqueradeAll: false,
    masqueradeBit: 14,
    ...rest,
    clusterCIDRs: (clusterCIDRs ?? []).map(cidr),
  };
}
