/**
 * @module backends/iptables/render/names
 * Upstream kube-proxy's iptables chain names, exactly: the fixed chains, and the per-service-port
 * and per-endpoint chains named by a hash (`pkg/proxy/iptables/proxier.go` portProtoHash and
 * servicePortEndpointChainName), so a node that ran upstream's iptables mode keeps its chains.
 */
import { hash } from 'node:crypto';
import type { Protocol } from '../../../model/cluster.ts';
import type { EndpointTarget, ServicePortRef } from '../../../model/node-state.ts';

/** The fixed chains (all tables): what the template may declare and what cleanup removes. */
export const CHAIN = {
  services: 'KUBE-SERVICES',
  externalServices: 'KUBE-EXTERNAL-SERVICES',
  nodePorts: 'KUBE-NODEPORTS',
  forward: 'KUBE-FORWARD',
  proxyFirewall: 'KUBE-PROXY-FIREWALL',
  firewall: 'KUBE-FIREWALL',
  canary: 'KUBE-PROXY-CANARY',
  postrouting: 'KUBE-POSTROUTING',
  markMasq: 'KUBE-MARK-MASQ',
} as const;

export const CANARY_CHAIN = CHAIN.canary;

/** Every fixed chain name kproxy owns in some table. */
export const SKELETON_CHAINS: ReadonlySet<string> = new Set(Object.values(CHAIN));

/** The built-in chains kproxy puts jump rules into, per table. */
export const BUILTIN_CHAINS = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
} as const;

const RFC4648 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** Base32, RFC 4648 standard alphabet, without padding (upstream takes a 16-character prefix). */
export function base32(bytes: Uint8Array): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = ((buffer << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += RFC4648[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += RFC4648[(buffer << (5 - bits)) & 31];
  return out;
}

function hash16(text: string): string {
  // 16 base32 characters are 80 bits: the first 10 bytes of the digest.
  return base32(hash('sha256', text, 'buffer').subarray(0, 10));
}

const PROTO: Record<Protocol, string> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

/** Upstream's ServicePortName.String(): `ns/name:portName`, or `ns/name` for an unnamed port. */
export function servicePortName(ref: ServicePortRef): string {
  const base = `${ref.namespace}/${ref.name}`;
  return ref.portName === '' ? base : `${base}:${ref.portName}`;
}

/** `IP:port`, `[IPv6]:port`: upstream's endpoint string (net.JoinHostPort). */
export function endpointString(ep: Pick<EndpointTarget, 'ip' | 'port'>): string {
  return ep.ip.includes(':') ? `[${ep.ip}]:${ep.port}` : `${ep.ip}:${ep.port}`;
}

export interface ServicePortChains {
  /** Cluster-wide endpoints (the "Cluster" traffic policy). */
  readonly svc: string;
  /** This node's endpoints (the "Local" traffic policy). */
  readonly svl: string;
  /** External traffic (NodePort, externalIPs, LB IPs). */
  readonly ext: string;
  /** loadBalancerSourceRanges. */
  readonly fw: string;
}

/** portProtoHash: the four per-service-port chains share one hash of `spn + protocol`. */
export function serviceChainNames(ref: ServicePortRef): ServicePortChains {
  const h = hash16(servicePortName(ref) + PROTO[ref.protocol]);
  return { svc: `KUBE-SVC-${h}`, svl: `KUBE-SVL-${h}`, ext: `KUBE-EXT-${h}`, fw: `KUBE-FW-${h}` };
}

/** servicePortEndpointChainName: a hash of `spn + protocol + "IP:port"`. */
export function endpointChainName(ref: ServicePortRef, ep: Pick<EndpointTarget, 'ip' | 'port'>): string {
  return `KUBE-SEP-${hash16(servicePortName(ref) + PROTO[ref.protocol] + endpointString(ep))}`;
}

const SERVICE_CHAIN = /^KUBE-(?:SVC|SVL|EXT|FW|SEP)-[A-Z2-7]{16}$/;

/** A per-service-port or per-endpoint chain of kproxy's (or upstream's): safe to delete when no longer desired. */
export function isKproxyServiceChain(name: string): boolean {
  return SERVICE_CHAIN.test(name);
}
