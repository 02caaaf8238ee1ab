/**
 * @module backends/nftables/render/names
 * The names of kproxy's nftables objects: the fixed skeleton's chains and sets, and the derived,
 * bounded names of per-service-port chains and affinity sets.
 */
import { createHash } from 'node:crypto';
import type { Protocol } from '../../../model/cluster.ts';
import type { EndpointTarget, ServicePortState } from '../../../model/node-state.ts';

export const TABLE = 'kproxy';

/** Fixed chains. */
export const CHAIN = {
  natPrerouting: 'nat-prerouting',
  natOutput: 'nat-output',
  natPostrouting: 'nat-postrouting',
  filterPrerouting: 'filter-prerouting',
  filterOutput: 'filter-output',
  filterInput: 'filter-input',
  filterForward: 'filter-forward',
  filterOutputPostDnat: 'filter-output-post-dnat',
  services: 'services',
  masquerading: 'masquerading',
  markForMasquerade: 'mark-for-masquerade',
  firewallCheck: 'firewall-check',
  serviceEndpointsCheck: 'service-endpoints-check',
  nodePortEndpointsCheck: 'nodeport-endpoints-check',
  clusterIpsCheck: 'cluster-ips-check',
  reject: 'reject-chain',
} as const;

/** Fixed sets and maps. */
export const SET = {
  clusterIps: 'cluster-ips',
  serviceIps: 'service-ips',
  serviceNodePorts: 'service-nodeports',
  noEndpointServices: 'no-endpoint-services',
  noEndpointNodePorts: 'no-endpoint-nodeports',
  nodePortAddresses: 'nodeport-addresses',
  firewallIps: 'firewall-ips',
  firewallAllow: 'firewall-allow',
  serviceCidrs: 'service-cidrs',
  hairpin: 'hairpin',
} as const;

/**
 * The endpoint maps (ADR 0008), for address frontends and for NodePorts: (frontend . index →
 * endpoint address) and (frontend → target port). Declared by the renderer, not the template:
 * the address maps' keys need `typeof`. Above {@link PORTS_PER_SHARD} service ports the address
 * maps are sharded (`endpoint-addresses-3`, see {@link endpointShards}).
 */
export const ENDPOINT_MAP = {
  addresses: 'endpoint-addresses',
  ports: 'target-ports',
  nodePortAddresses: 'nodeport-endpoint-addresses',
  nodePortPorts: 'nodeport-target-ports',
} as const;

/**
 * Service ports per endpoint-address map before the maps are split. The kernel dumps a set in
 * ~32 KiB batches and resumes each one by walking past the elements it already sent, so reading a
 * map back costs its size squared: 100k elements in one map took ~1.1 s to read, in 16 maps
 * ~0.25 s (ADR 0008, "Sharded address maps").
 */
export const PORTS_PER_SHARD = 1024;
const MAX_SHARDS = 64;

/** How many address maps of each kind a table with `servicePorts` ports has: a power of two, 1 to 64. */
export function endpointShards(servicePorts: number): number {
  let shards = 1;
  while (shards < MAX_SHARDS && servicePorts > shards * PORTS_PER_SHARD) shards *= 2;
  return shards;
}

/**
 * The shard of a frontend (its key text): FNV-1a of the text, so that it stays where it is from
 * one sync, process or version to the next while the number of shards does not change.
 */
export function shardOf(frontendKey: string, shards: number): number {
  if (shards === 1) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < frontendKey.length; i++) h = Math.imul(h ^ frontendKey.charCodeAt(i), 0x01000193);
  return (h >>> 0) & (shards - 1);
}

/** The address map of a shard: unsuffixed while there is one. */
export function endpointAddressMap(nodePort: boolean, shard: number, shards: number): SetName {
  const base = nodePort ? ENDPOINT_MAP.nodePortAddresses : ENDPOINT_MAP.addresses;
  return shards === 1 ? base : `${base}-${shard}`;
}

/**
 * Endpoint maps key a frontend's endpoints by index: 0…N-1 for the list a frontend uses first,
 * LOCAL_INDEX… for the node-local list of an externalTrafficPolicy Local frontend.
 */
export const LOCAL_INDEX = 1 << 20;

/** How a shared DNAT chain picks: which map (address frontends or NodePorts, and its shard) and which list. */
export interface PickSpec {
  readonly nodePort: boolean;
  readonly local: boolean;
  /** Mark for masquerade first (external traffic under policy Cluster). */
  readonly masquerade: boolean;
  readonly shard: number;
  readonly shards: number;
}

/** A shared chain that DNATs to one of N endpoints of the frontend the packet was sent to. */
export function pickChainName(p: PickSpec, n: number): string {
  const shard = p.shards === 1 ? '' : `s${p.shard}-`;
  return `${p.masquerade ? 'masq-' : ''}dnat-${p.nodePort ? 'np-' : ''}${p.local ? 'local-' : ''}${shard}${n}`;
}

export type SetName =
  | (typeof SET)[keyof typeof SET]
  | (typeof ENDPOINT_MAP)[keyof typeof ENDPOINT_MAP]
  | `${typeof ENDPOINT_MAP.addresses | typeof ENDPOINT_MAP.nodePortAddresses}-${number}`;

function shortHash(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 8);
}

const PROTO: Record<Protocol, string> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

export interface ServicePortNames {
  /** Ladder over the cluster-wide endpoints. */
  readonly svc: string;
  /** Ladder over this node's endpoints (Local policies). */
  readonly lcl: string;
  /** External traffic: masquerade (policy Cluster) or the short-circuits of policy Local. */
  readonly ext: string;
  /** The same for NodePorts when endpoints are map elements (their keys differ from addresses'). */
  readonly extNodePort: string;
}

/**
 * A hash of the service port's key (so names never collide) followed by a readable
 * `namespace/name/protocol/port` (validated DNS names and numbers only).
 */
export function servicePortNames(sp: ServicePortState): ServicePortNames {
  const id = `${shortHash(sp.key)}-${sp.ref.namespace}/${sp.ref.name}/${PROTO[sp.ref.protocol]}/${sp.port}`;
  return { svc: `svc-${id}`, lcl: `lcl-${id}`, ext: `ext-${id}`, extNodePort: `extnp-${id}` };
}

/**
 * One dynamic set per (service port, endpoint, timeout), shared by the cluster and local ladders
 * as upstream shares it; a changed timeout is a new set.
 */
export function affinitySetName(sp: ServicePortState, ep: EndpointTarget, timeout: number): string {
  return `aff-${shortHash(sp.key, ep.ip, String(ep.port))}-t${timeout}`;
}
