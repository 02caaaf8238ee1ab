/**
 * @module explain/modes
 * What a packet's fate depends on beyond the model's decisions: which frontends each mode's rules
 * intercept, where, and with what verdict (upstream's per-mode differences, each stated once).
 * `explain.ts` reads only these facts, never the mode's name; a new mode adds one entry (the
 * Record makes it a type error to forget). Each value is what the mode's rules say:
 * nftables `rules-templates/nftables.nft` + `render/service-port.ts`; iptables
 * `rules-templates/iptables.rules` + `render/service-port.ts`; IPVS `render/layout.ts` and its
 * helper table (`render/helper-rules.ts`). The packet-flow suite checks all three.
 */
import type { ProxyMode } from '../config/proxy-config.ts';

export interface ModeTraits {
  /** A ClusterIP on a port (or protocol) no service port uses: REJECTed, or not intercepted (routed on). */
  readonly unusedClusterIpPort: 'reject' | 'none';
  /** An address in a ServiceCIDR that no Service uses: DROPped, or not intercepted. */
  readonly unallocatedServiceIp: 'drop' | 'none';
  /**
   * NodePorts on loopback addresses: never (CVE-2020-8558), or on 127.0.0.0/8 when
   * iptables.localhostNodePorts is on (IPv4 only, and only when nodePortAddresses admit 127.0.0.1).
   */
  readonly loopbackNodePorts: 'never' | 'localhostNodePorts';
  /**
   * Where a NodePort without (local) endpoints is REJECTed / DROPped: on the addresses NodePorts
   * answer on, or on every local address (iptables' `-m addrtype --dst-type LOCAL` filter rule).
   */
  readonly noEndpointNodePorts: 'nodePortAddresses' | 'everyLocalAddress';
  /** Which endpoints a packet hairpins through (masqueraded when it lands on its own source). */
  readonly hairpin: 'localEndpoints' | 'anyEndpoint';
  /** loadBalancerSourceRanges admit the LB IP as a source when a range holds a node IP: any, or the primary one. */
  readonly allowFromNode: 'anyNodeIP' | 'primaryNodeIP';
  /** loadBalancerSourceRanges are checked also when the Service has no endpoints (before the REJECT). */
  readonly sourceRangesWithoutEndpoints: boolean;
  /** A CIDR local-traffic detector with several CIDRs of a family: every one matches, or only the first (upstream iptables). */
  readonly detectorCidrs: 'all' | 'first';
  /**
   * The interface the mode puts Service addresses on (IPVS: kube-ipvs0), or none. The node's own
   * connection to such an address leaves with that address as its source, so a packet from one
   * comes from the node. (NodePorts never answer on them: they are no nodePortAddresses.)
   */
  readonly serviceAddressesOn: string | undefined;
}

export const MODE_TRAITS: Readonly<Record<ProxyMode, ModeTraits>> = {
  nftables: {
    unusedClusterIpPort: 'reject',
    unallocatedServiceIp: 'drop',
    loopbackNodePorts: 'never',
    noEndpointNodePorts: 'nodePortAddresses',
    hairpin: 'localEndpoints',
    allowFromNode: 'anyNodeIP',
    sourceRangesWithoutEndpoints: true,
    detectorCidrs: 'all',
    serviceAddressesOn: undefined,
  },
  iptables: {
    unusedClusterIpPort: 'none',
    unallocatedServiceIp: 'none',
    loopbackNodePorts: 'localhostNodePorts',
    noEndpointNodePorts: 'everyLocalAddress',
    hairpin: 'anyEndpoint',
    allowFromNode: 'primaryNodeIP',
    sourceRangesWithoutEndpoints: false,
    detectorCidrs: 'first',
    serviceAddressesOn: undefined,
  },
  ipvs: {
    // KUBE-IPVS-FILTER rejects other ports of kube-ipvs0 addresses; kproxy's helper table drops the rest.
    unusedClusterIpPort: 'reject',
    unallocatedServiceIp: 'drop',
    loopbackNodePorts: 'never',
    noEndpointNodePorts: 'nodePortAddresses',
    hairpin: 'localEndpoints',
    allowFromNode: 'anyNodeIP',
    sourceRangesWithoutEndpoints: true,
    detectorCidrs: 'all',
    // ClusterIPs, externalIPs and LB IPs, so that the kernel accepts them (README "IPVS mode").
    serviceAddressesOn: 'kube-ipvs0',
  },
};
