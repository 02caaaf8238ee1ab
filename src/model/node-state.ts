/**
 * @module model/node-state
 * The node-local state one family's rules are rendered from: every service port with the
 * decisions upstream kube-proxy makes for it already taken. Backends (nftables today, iptables
 * and IPVS next) consume only this; none of them re-derives a policy decision.
 */
import type { Cidr, Family, Protocol } from './cluster.ts';
import type { IpvsScheduler } from './ipvs-schedulers.ts';

/** A non-empty list: a route that sends traffic to endpoints always has at least one. */
export type NonEmpty<T> = readonly [T, ...T[]];

export interface EndpointTarget {
  readonly ip: string;
  readonly port: number;
  readonly isLocal: boolean;
}

/** Where traffic addressed to the ClusterIP goes. */
export type InternalRoute =
  /** internalTrafficPolicy Cluster: any cluster endpoint. */
  | { readonly kind: 'cluster'; readonly endpoints: NonEmpty<EndpointTarget> }
  /** internalTrafficPolicy Local: endpoints on this node only. */
  | { readonly kind: 'local'; readonly endpoints: NonEmpty<EndpointTarget> }
  /** No usable endpoint anywhere: ICMP port unreachable. */
  | { readonly kind: 'reject' }
  /** internalTrafficPolicy Local and no local endpoint: silently dropped. */
  | { readonly kind: 'drop' };

/** Where traffic addressed to a NodePort, externalIP or load-balancer IP goes. */
export type ExternalRoute =
  /** externalTrafficPolicy Cluster: masquerade, then any cluster endpoint. */
  | { readonly kind: 'cluster'; readonly endpoints: NonEmpty<EndpointTarget> }
  /**
   * externalTrafficPolicy Local: traffic from local pods short-circuits to `cluster` unmasqueraded,
   * traffic from the node itself is masqueraded to `cluster`, everything else goes to `local`
   * with the client address kept, or is dropped when `local` is empty.
   */
  | {
      readonly kind: 'local';
      readonly local: readonly EndpointTarget[];
      readonly cluster: NonEmpty<EndpointTarget>;
    }
  /** No usable endpoint anywhere. */
  | { readonly kind: 'reject' };

export interface ServicePortRef {
  readonly namespace: string;
  readonly name: string;
  /** The Service port's name; may be empty. */
  readonly portName: string;
  readonly protocol: Protocol;
}

export interface ServicePortState {
  readonly ref: ServicePortRef;
  /** `namespace/name:portName`, unique per family (port names are unique per Service); the sort key. */
  readonly key: string;
  readonly clusterIP: string;
  readonly port: number;
  readonly nodePort?: number;
  readonly externalIPs: readonly string[];
  readonly loadBalancerIPs: readonly string[];
  /** Empty: no firewall. Otherwise the allowed sources for load-balancer IPs. */
  readonly loadBalancerSourceRanges: readonly Cidr[];
  readonly affinityTimeoutSeconds?: number;
  readonly internal: InternalRoute;
  /** Absent when the port has no NodePort, externalIP or load-balancer IP. */
  readonly external?: ExternalRoute;
  readonly healthCheckNodePort?: number;
  /**
   * Every serving endpoint, on any node, whatever the policy or topology: flows to these survive
   * stale-conntrack cleanup, as upstream's reconciler leaves them.
   */
  readonly servingEndpoints: readonly EndpointTarget[];
  /** Ready endpoints on this node (upstream's LocalReadyEndpoints), for health checks. */
  readonly localEndpointCount: number;
  /** IPVS mode only: the Service's own scheduler (annotation `kproxy.io/ipvs-scheduler`); absent: the default. */
  readonly ipvsScheduler?: IpvsScheduler;
}

/** How the rules recognise traffic that comes from inside the cluster. */
export type LocalTrafficDetector =
  | { readonly kind: 'none' }
  | { readonly kind: 'cidrs'; readonly cidrs: NonEmpty<Cidr> }
  | { readonly kind: 'bridgeInterface'; readonly interfaceName: string }
  | { readonly kind: 'interfacePrefix'; readonly prefix: string };

/** Destination addresses on which NodePorts answer (always also required to be local). */
export type NodePortDestinations =
  | { readonly kind: 'allLocal' }
  | { readonly kind: 'cidrs'; readonly cidrs: readonly Cidr[] };

export interface NodeState {
  readonly family: Family;
  readonly nodeName: string;
  /** This node's addresses of this family, from its Node object (InternalIP first). */
  readonly nodeIPs: readonly string[];
  /** Sorted by key. */
  readonly servicePorts: readonly ServicePortState[];
  /** This family's ServiceCIDRs: addresses in them that no Service uses are dropped. */
  readonly serviceCIDRs: readonly Cidr[];
  readonly localDetector: LocalTrafficDetector;
  readonly nodePortDestinations: NodePortDestinations;
  readonly masqueradeAll: boolean;
  /** The packet-mark bit value (1 << masqueradeBit). */
  readonly masqueradeMark: number;
}
