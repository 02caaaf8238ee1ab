/**
 * @module bench/upstream-layout
 * The classic layout of upstream kube-proxy's nftables mode (pkg/proxy/nftables/proxier.go,
 * v1.29 … v1.35), generated from kproxy's NodeState so both layouts load the same decisions:
 *  - one chain per endpoint, `endpoint-HASH-ns/svc/proto/port__IP/PORT`: hairpin mark + `dnat`;
 *  - one chain per service port and policy, `service-…` / `local-…`: masquerade rule, then
 *    `numgen random mod N vmap { 0 : goto endpoint-…, … }` — an anonymous verdict map per chain;
 *  - `external-…` chains for NodePorts / external IPs / LB IPs, `firewall-…` chains with
 *    `ip saddr != { ranges } drop` for loadBalancerSourceRanges;
 *  - dispatch through the `service-ips` / `service-nodeports` verdict maps, "no endpoints" through
 *    `no-endpoint-services` / `no-endpoint-nodeports`, as upstream.
 * Written as knftables writes a full sync: every chain `add` + `flush`, one `add element` per
 * element. Only for measuring the kernel's cost of that shape; kproxy never loads it.
 */
import { createHash } from 'node:crypto';
import type { EndpointTarget, LocalTrafficDetector, NodeState, ServicePortState } from '../model/node-state.ts';

export const UPSTREAM_TABLE = 'kube-proxy';

export interface UpstreamStats {
  chains: number;
  rules: number;
  /** Named sets and maps. */
  sets: number;
  /** Anonymous sets and maps inside rules (each one a set object in the kernel). */
  anonymousSets: number;
  elements: number;
  lines: number;
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(buf: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/** Upstream's hashAndTruncate: 8 base32 chars of sha256(name), "-", name, at most 240 chars. */
function hashAndTruncate(name: string): string {
  const hash = base32(createHash('sha256').update(name).digest()).slice(0, 8);
  const full = `${hash}-${name}`;
  return full.length > 240 ? `${full.slice(0, 237)}...` : full;
}

function protocolOf(sp: ServicePortState): string {
  return sp.ref.protocol.toLowerCase();
}

function servicePortBase(sp: ServicePortState): string {
  return hashAndTruncate(`${sp.ref.namespace}/${sp.ref.name}/${protocolOf(sp)}/${sp.ref.portName}`);
}

function endpointBase(sp: ServicePortState, ep: EndpointTarget): string {
  return hashAndTruncate(
    `${sp.ref.namespace}/${sp.ref.name}/${protocolOf(sp)}/${sp.ref.portName}__${ep.ip.replaceAll(':', '.')}/${ep.port}`,
  );
}

/** Writes the upstream-layout transaction line by line (the caller buffers it to a file). */
export function writeUpstreamLayout(states: readonly NodeState[], emit: (line: string) => void): UpstreamStats {
  const stats: UpstreamStats = { chains: 0, rules: 0, sets: 0, anonymousSets: 0, elements: 0, lines: 0 };
  const out = (line: string) => {
    stats.lines++;
    emit(line);
  };
  for (const state of states) writeFamily(state, out, stats);
  return stats;
}

function writeFamily(state: NodeState, out: (line: string) => void, stats: UpstreamStats): void {
  const v6 = state.family === 'ipv6';
  const f = v6 ? 'ip6' : 'ip';
  const addrType = v6 ? 'ipv6_addr' : 'ipv4_addr';
  const noLocalhost = v6 ? 'ip6 daddr != ::1' : 'ip daddr != 127.0.0.0/8';
  const t = `${f} ${UPSTREAM_TABLE}`;
  const mark = `0x${state.masqueradeMark.toString(16).padStart(8, '0')}`;
  const hostPort = (ip: string, port: number) => (v6 ? `[${ip}]:${port}` : `${ip}:${port}`);

  const chain = (name: string, base?: string) => {
    out(base ? `add chain ${t} ${name} { ${base} ; }` : `add chain ${t} ${name}`);
    out(`flush chain ${t} ${name}`);
    stats.chains++;
  };
  const rule = (chainName: string, text: string) => {
    out(`add rule ${t} ${chainName} ${text}`);
    stats.rules++;
  };
  const set = (kind: 'set' | 'map', name: string, spec: string) => {
    out(`add ${kind} ${t} ${name} { ${spec} ; }`);
    out(`flush ${kind} ${t} ${name}`);
    stats.sets++;
  };
  const element = (name: string, text: string) => {
    out(`add element ${t} ${name} { ${text} }`);
    stats.elements++;
  };

  out(`add table ${t} { comment "rules for kube-proxy" ; }`);
  // Base chains: filters before DNAT (-110), DNAT at -100, SNAT at 100; post-DNAT output filter at -90.
  chain('filter-prerouting', 'type filter hook prerouting priority -110');
  chain('filter-input', 'type filter hook input priority -110');
  chain('filter-forward', 'type filter hook forward priority -110');
  chain('filter-output', 'type filter hook output priority -110');
  chain('filter-output-post-dnat', 'type filter hook output priority -90');
  chain('nat-prerouting', 'type nat hook prerouting priority -100');
  chain('nat-output', 'type nat hook output priority -100');
  chain('nat-postrouting', 'type nat hook postrouting priority 100');
  for (const c of [
    'nodeport-endpoints-check',
    'service-endpoints-check',
    'firewall-check',
    'cluster-ips-check',
    'services',
    'masquerading',
    'mark-for-masquerade',
    'reject-chain',
  ]) {
    chain(c);
  }

  set('set', 'cluster-ips', `type ${addrType} ; comment "Active ClusterIPs"`);
  set('set', 'service-cidrs', `type ${addrType} ; flags interval ; comment "Service CIDRs"`);
  const nodePortCidrs = state.nodePortDestinations.kind === 'cidrs' ? state.nodePortDestinations.cidrs : undefined;
  if (nodePortCidrs)
    set('set', 'nodeport-ips', `type ${addrType} ; flags interval ; comment "IPs that accept NodePort traffic"`);
  const vmapType = `type ${addrType} . inet_proto . inet_service : verdict`;
  set(
    'map',
    'no-endpoint-services',
    `${vmapType} ; comment "vmap to drop or reject packets to services with no endpoints"`,
  );
  set(
    'map',
    'no-endpoint-nodeports',
    `type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints"`,
  );
  set('map', 'firewall-ips', `${vmapType} ; comment "destinations that are subject to LoadBalancerSourceRanges"`);
  set('map', 'service-ips', `${vmapType} ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"`);
  set('map', 'service-nodeports', `type inet_proto . inet_service : verdict ; comment "NodePort traffic"`);

  rule('filter-prerouting', 'ct state new jump firewall-check');
  rule('filter-input', 'ct state new jump nodeport-endpoints-check');
  rule('filter-input', 'ct state new jump service-endpoints-check');
  rule('filter-forward', 'ct state new jump service-endpoints-check');
  rule('filter-forward', 'ct state new jump cluster-ips-check');
  rule('filter-output', 'ct state new jump service-endpoints-check');
  rule('filter-output', 'ct state new jump firewall-check');
  rule('filter-output-post-dnat', 'ct state new jump cluster-ips-check');
  rule('nat-prerouting', 'jump services');
  rule('nat-output', 'jump services');
  rule('nat-postrouting', 'jump masquerading');
  rule('mark-for-masquerade', `mark set mark or ${mark}`);
  rule('masquerading', `mark and ${mark} == 0 return`);
  rule('masquerading', `mark set mark xor ${mark}`);
  rule('masquerading', 'masquerade fully-random');
  rule('reject-chain', 'reject');
  rule('cluster-ips-check', `${f} daddr @cluster-ips reject`);
  rule('cluster-ips-check', `${f} daddr @service-cidrs drop`);
  rule('service-endpoints-check', `${f} daddr . meta l4proto . th dport vmap @no-endpoint-services`);
  const nodePortMatch = nodePortCidrs ? `${f} daddr @nodeport-ips` : `fib daddr type local ${noLocalhost}`;
  rule('nodeport-endpoints-check', `${nodePortMatch} meta l4proto . th dport vmap @no-endpoint-nodeports`);
  rule('firewall-check', `${f} daddr . meta l4proto . th dport vmap @firewall-ips`);
  rule('services', `${f} daddr . meta l4proto . th dport vmap @service-ips`);
  rule('services', `${nodePortMatch} meta l4proto . th dport vmap @service-nodeports`);

  for (const c of state.serviceCIDRs) element('service-cidrs', `${c.address}/${c.prefixLength}`);
  for (const c of nodePortCidrs ?? []) element('nodeport-ips', `${c.address}/${c.prefixLength}`);

  const notLocal = localMatch(state.localDetector, f, false);
  const isLocal = localMatch(state.localDetector, f, true);
  for (const sp of state.servicePorts) writeServicePort(sp);

  function writeServicePort(sp: ServicePortState): void {
    const p = protocolOf(sp);
    const base = servicePortBase(sp);
    const clusterChain = `service-${base}`;
    const localChain = `local-${base}`;
    const externalChain = `external-${base}`;
    const firewallChain = `firewall-${base}`;
    const internal = sp.internal;
    const external = sp.external;
    const clusterEps: readonly EndpointTarget[] =
      internal.kind === 'cluster'
        ? internal.endpoints
        : external?.kind === 'cluster'
          ? external.endpoints
          : external?.kind === 'local'
            ? external.cluster
            : [];
    const localEps: readonly EndpointTarget[] =
      internal.kind === 'local' ? internal.endpoints : external?.kind === 'local' ? external.local : [];
    const usesCluster =
      clusterEps.length > 0 && (internal.kind === 'cluster' || (external !== undefined && external.kind !== 'reject'));
    const usesLocal = localEps.length > 0;
    const hasEndpoints =
      internal.kind === 'cluster' ||
      internal.kind === 'local' ||
      (external !== undefined && external.kind !== 'reject');
    const externalIps = [...sp.externalIPs, ...sp.loadBalancerIPs];
    const externallyAccessible = sp.nodePort !== undefined || externalIps.length > 0;
    const usesExternal = hasEndpoints && externallyAccessible && external !== undefined && external.kind !== 'reject';
    const hasExternalEndpoints =
      external?.kind === 'cluster' || (external?.kind === 'local' && external.local.length > 0);
    const externalFilterVerdict = !hasEndpoints ? 'goto reject-chain' : 'drop';
    const affinity = sp.affinityTimeoutSeconds;

    // Endpoint chains first (the dispatch elements and vmaps refer to them).
    const endpoints = new Map<string, EndpointTarget>();
    for (const ep of [...(usesCluster ? clusterEps : []), ...(usesLocal ? localEps : [])])
      endpoints.set(`${ep.ip}:${ep.port}`, ep);
    const epChain = (ep: EndpointTarget) => `endpoint-${endpointBase(sp, ep)}`;
    const affinitySet = (ep: EndpointTarget) => `affinity-${endpointBase(sp, ep)}`;
    for (const ep of endpoints.values()) chain(epChain(ep));
    if (usesCluster) chain(clusterChain);
    if (usesLocal) chain(localChain);
    if (usesExternal) chain(externalChain);
    const usesFirewall = sp.loadBalancerIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0;
    if (usesFirewall) chain(firewallChain);
    if (affinity !== undefined) {
      for (const ep of endpoints.values())
        set('set', affinitySet(ep), `type ${addrType} ; flags dynamic,timeout ; timeout ${affinity}s`);
    }

    element('cluster-ips', sp.clusterIP);
    const frontend = (ip: string) => `${ip} . ${p} . ${sp.port}`;
    const internalChain = internal.kind === 'local' ? localChain : clusterChain;
    if (internal.kind === 'cluster' || internal.kind === 'local') {
      element('service-ips', `${frontend(sp.clusterIP)} : goto ${internalChain}`);
    } else {
      element(
        'no-endpoint-services',
        `${frontend(sp.clusterIP)} : ${internal.kind === 'reject' ? 'goto reject-chain' : 'drop'}`,
      );
    }
    for (const ip of externalIps) {
      if (usesExternal) element('service-ips', `${frontend(ip)} : goto ${externalChain}`);
      if (!hasExternalEndpoints) element('no-endpoint-services', `${frontend(ip)} : ${externalFilterVerdict}`);
    }
    if (usesFirewall) {
      for (const lb of sp.loadBalancerIPs) element('firewall-ips', `${frontend(lb)} : goto ${firewallChain}`);
      const sources = sp.loadBalancerSourceRanges.map((c) => `${c.address}/${c.prefixLength}`);
      rule(firewallChain, `${f} saddr != { ${sources.join(', ')} } drop`);
      stats.anonymousSets++;
    }
    if (sp.nodePort !== undefined) {
      if (usesExternal) element('service-nodeports', `${p} . ${sp.nodePort} : goto ${externalChain}`);
      if (!hasExternalEndpoints) element('no-endpoint-nodeports', `${p} . ${sp.nodePort} : ${externalFilterVerdict}`);
    }

    if (internal.kind === 'cluster' || internal.kind === 'local') {
      const dst = `${f} daddr ${sp.clusterIP} ${p} dport ${sp.port}`;
      if (state.masqueradeAll) rule(internalChain, `${dst} jump mark-for-masquerade`);
      else if (notLocal) rule(internalChain, `${dst} ${notLocal} jump mark-for-masquerade`);
    }
    if (usesExternal && external) {
      if (external.kind === 'cluster') {
        rule(externalChain, 'jump mark-for-masquerade');
      } else {
        if (isLocal) rule(externalChain, `${isLocal} goto ${clusterChain}`);
        rule(externalChain, 'fib saddr type local jump mark-for-masquerade');
        rule(externalChain, `fib saddr type local goto ${clusterChain}`);
      }
      if (hasExternalEndpoints) rule(externalChain, `goto ${external.kind === 'local' ? localChain : clusterChain}`);
    }

    const serviceToEndpoints = (svcChain: string, eps: readonly EndpointTarget[]) => {
      if (affinity !== undefined) {
        for (const ep of eps) rule(svcChain, `${f} saddr @${affinitySet(ep)} goto ${epChain(ep)}`);
      }
      const vmap = eps.map((ep, i) => `${i} : goto ${epChain(ep)}`).join(' , ');
      rule(svcChain, `numgen random mod ${eps.length} vmap { ${vmap} }`);
      stats.anonymousSets++;
    };
    if (usesCluster) serviceToEndpoints(clusterChain, clusterEps);
    if (usesLocal) serviceToEndpoints(localChain, localEps);

    for (const ep of endpoints.values()) {
      const c = epChain(ep);
      rule(c, `${f} saddr ${ep.ip} jump mark-for-masquerade`);
      if (affinity !== undefined) rule(c, `update @${affinitySet(ep)} { ${f} saddr }`);
      rule(c, `meta l4proto ${p} dnat to ${hostPort(ep.ip, ep.port)}`);
    }
  }
}

/** Upstream's IfLocalNFT / IfNotLocalNFT: a single prefix or interface match, no set. */
function localMatch(d: LocalTrafficDetector, f: 'ip' | 'ip6', local: boolean): string | undefined {
  const op = local ? '' : '!= ';
  switch (d.kind) {
    case 'none':
      return undefined;
    case 'cidrs': {
      const c = d.cidrs[0];
      return `${f} saddr ${op}${c.address}/${c.prefixLength}`;
    }
    case 'bridgeInterface':
      return `iifname ${op}"${d.interfaceName}"`;
    case 'interfacePrefix':
      return `iifname ${op}"${d.prefix}*"`;
  }
}
