/**
 * @module model/cluster
 * The cluster objects kproxy consumes, after validation. Everything here has already been checked
 * by `source/normalize.ts`: addresses parse, ports are in range, names are DNS labels. The pure
 * core (`model/node-state.ts`, renderers) trusts these types and never re-validates.
 */
import type { IpvsScheduler } from './ipvs-schedulers.ts';

export type Family = 'ipv4' | 'ipv6';
export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type TrafficPolicy = 'Cluster' | 'Local';
export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer';

/** An IP address in canonical text form (as `formatIp` prints it) with its family. */
export interface IpAddress {
  readonly family: Family;
  readonly text: string;
}

/** A CIDR in canonical form: the address is the network address (host bits cleared). */
export interface Cidr {
  readonly family: Family;
  readonly address: string;
  readonly prefixLength: number;
}

export interface ServicePortSpec {
  /** May be empty for a Service's only port. */
  readonly name: string;
  readonly protocol: Protocol;
  readonly port: number;
  /** Present for NodePort and LoadBalancer Services that were allocated one. */
  readonly nodePort?: number;
}

export interface Service {
  readonly namespace: string;
  readonly name: string;
  readonly type: ServiceType;
  /** Valid ClusterIPs, any family; headless and ExternalName Services never get this far. */
  readonly clusterIPs: readonly IpAddress[];
  readonly ports: readonly ServicePortSpec[];
  readonly externalIPs: readonly IpAddress[];
  /** `status.loadBalancer.ingress[].ip` where ipMode is not `Proxy`. */
  readonly loadBalancerIPs: readonly IpAddress[];
  readonly loadBalancerSourceRanges: readonly Cidr[];
  readonly externalTrafficPolicy: TrafficPolicy;
  readonly internalTrafficPolicy: TrafficPolicy;
  /** ClientIP session affinity timeout in seconds; absent for `sessionAffinity: None`. */
  readonly sessionAffinityTimeoutSeconds?: number;
  readonly healthCheckNodePort?: number;
  /** IPVS mode: the scheduler the annotation `kproxy.io/ipvs-scheduler` names (a known name); absent: the default. */
  readonly ipvsScheduler?: IpvsScheduler;
}

export interface EndpointConditions {
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
}

export interface Endpoint {
  /** addresses[0]; upstream ignores the rest. */
  readonly address: IpAddress;
  readonly conditions: EndpointConditions;
  readonly nodeName?: string;
  readonly zone?: string;
  readonly hints?: { readonly forZones: readonly string[]; readonly forNodes: readonly string[] };
}

export interface EndpointPort {
  readonly name: string;
  readonly protocol: Protocol;
  readonly port: number;
}

export interface EndpointSlice {
  readonly namespace: string;
  readonly name: string;
  /** From the label `kubernetes.io/service-name`. */
  readonly serviceName: string;
  readonly addressType: 'IPv4' | 'IPv6';
  readonly ports: readonly EndpointPort[];
  readonly endpoints: readonly Endpoint[];
  /** `endpoints.kubernetes.io/last-change-trigger-time`, for network-programming latency. */
  readonly triggerTime?: Date;
}

export interface Node {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  /** InternalIP addresses first, then ExternalIP, as the Node status lists them. */
  readonly addresses: readonly IpAddress[];
  readonly podCIDRs: readonly Cidr[];
  /** Being deleted, or tainted ToBeDeletedByClusterAutoscaler: /healthz then reports 503. */
  readonly beingRemoved: boolean;
}

export interface ServiceCIDR {
  readonly name: string;
  readonly cidrs: readonly Cidr[];
}

/** Everything the sources know, already validated. */
export interface ClusterSnapshot {
  readonly services: readonly Service[];
  readonly endpointSlices: readonly EndpointSlice[];
  /** Only this node's Node object matters; absent until it is seen. */
  readonly node?: Node;
  readonly serviceCIDRs: readonly ServiceCIDR[];
}

export const ZONE_LABEL = 'topology.kubernetes.io/zone';
