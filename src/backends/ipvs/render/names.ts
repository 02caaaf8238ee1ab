/**
 * @module backends/ipvs/render/names
 * The names of IPVS mode's helper tables `ip kproxy-ipvs` / `ip6 kproxy-ipvs`: fixed chains and
 * sets, and the one derived name, a short-circuit chain per firewall mark.
 */

export const TABLE = 'kproxy-ipvs';

export const CHAIN = {
  filterPrerouting: 'filter-prerouting',
  filterOutput: 'filter-output',
  filterInput: 'filter-input',
  filterForward: 'filter-forward',
  natPrerouting: 'nat-prerouting',
  natOutput: 'nat-output',
  natPostrouting: 'nat-postrouting',
  servicesCheck: 'services-check',
  firewallCheck: 'firewall-check',
  masqueradeMarks: 'masquerade-marks',
  masquerading: 'masquerading',
  markForMasquerade: 'mark-for-masquerade',
  reject: 'reject-chain',
} as const;

export const SET = {
  /** Every (address . protocol . port) virtual server kproxy owns: the ownership record, and the known frontends. */
  virtualServers: 'virtual-servers',
  /** The addresses kproxy puts on kube-ipvs0. */
  ipvsAddresses: 'ipvs-addresses',
  clusterIps: 'cluster-ips',
  /** External frontends (NodePort, externalIP, LB IP) of externalTrafficPolicy Cluster: masqueraded. */
  externalCluster: 'external-cluster',
  /** Frontends without endpoints: goto reject-chain, or drop (internalTrafficPolicy Local, none here). */
  noEndpointServices: 'no-endpoint-services',
  /** External frontends of externalTrafficPolicy Local without a local endpoint: outside traffic dropped. */
  noLocalEndpoints: 'no-local-endpoints',
  /** External frontends of externalTrafficPolicy Local: pods and the node go to the port's fwmark service. */
  shortCircuit: 'short-circuit',
  /** The firewall marks of kproxy's fwmark virtual servers: their ownership record. */
  shortCircuitMarks: 'short-circuit-marks',
  firewallIps: 'firewall-ips',
  firewallAllow: 'firewall-allow',
  serviceCidrs: 'service-cidrs',
  hairpin: 'hairpin',
} as const;

export type SetName = (typeof SET)[keyof typeof SET];

const SHORT_CIRCUIT_CHAIN = /^short-circuit-([1-9][0-9]{0,9})$/;

/** The chain that sets a short-circuit firewall mark. */
export function shortCircuitChain(mark: number): string {
  return `short-circuit-${mark}`;
}

/** The mark a short-circuit chain sets, from its name; undefined for any other name. */
export function markOfShortCircuitChain(name: string): number | undefined {
  const m = SHORT_CIRCUIT_CHAIN.exec(name);
  if (!m) return undefined;
  const mark = Number(m[1]);
  return mark <= 0xffffffff ? mark : undefined;
}
