/**
 * @module backends/iptables/render/service-port
 * What one service port puts into iptables, upstream's way (`syncProxyRules` and
 * `writeServiceToEndpointRules` in pkg/proxy/iptables/proxier.go): dispatch rules in the shared
 * chains (nat KUBE-SERVICES / KUBE-NODEPORTS; filter KUBE-SERVICES, KUBE-EXTERNAL-SERVICES,
 * KUBE-NODEPORTS, KUBE-PROXY-FIREWALL) and its own nat chains (KUBE-SVC/SVL/EXT/FW/SEP-…), with
 * upstream's comments. Every decision comes from the ServicePortState; this only writes it down.
 */
import type { Family } from '../../../model/cluster.ts';
import { cidrContains } from '../../../model/ip.ts';
import type { EndpointTarget, LocalTrafficDetector, ServicePortState } from '../../../model/node-state.ts';
import { CHAIN, endpointChainName, endpointString, serviceChainNames, servicePortName } from './names.ts';
import { match as m, protocolName, rule, target as t, type Part } from './syntax.ts';
import type { IptablesContext, IptChain, IptTable, PortRules, RuleText, SharedRule } from './types.ts';

export function renderServicePort(sp: ServicePortState, ctx: IptablesContext): PortRules {
  const family = ctx.family;
  const spn = servicePortName(sp.ref);
  const proto = sp.ref.protocol;
  const names = serviceChainNames(sp.ref);
  // Each endpoint's chain name is a sha256: computed once per endpoint, used by up to four rules.
  const sepNames = new Map<string, string>();
  const sepName = (ep: EndpointTarget): string => {
    const key = endpointString(ep);
    let name = sepNames.get(key);
    if (name === undefined) {
      name = endpointChainName(sp.ref, ep);
      sepNames.set(key, name);
    }
    return name;
  };
  const shared: SharedRule[] = [];
  const put = (table: IptTable, chain: string, text: RuleText, frontend?: string) =>
    shared.push(frontend === undefined ? { table, chain, rule: text } : { table, chain, rule: text, frontend });
  const ipFrontend = (ip: string) => `${ip} . ${protocolName(proto)} . ${sp.port}`;
  /** `-d IP -p proto … -m proto --dport port`: the rule shape for an address frontend. */
  const toFrontend = (ip: string, comment: string, ...rest: Part[]): RuleText =>
    rule(m.destination(family, ip), m.protocol(proto), m.comment(comment), m.l4(proto, sp.port), ...rest);

  const internal = sp.internal;
  const external = sp.external;
  // The endpoint lists behind the two policy chains (upstream's clusterEndpoints / localEndpoints).
  const clusterEndpoints =
    internal.kind === 'cluster'
      ? internal.endpoints
      : external?.kind === 'cluster'
        ? external.endpoints
        : external?.kind === 'local'
          ? external.cluster
          : undefined;
  const localEndpoints =
    internal.kind === 'local' ? internal.endpoints : external?.kind === 'local' ? external.local : [];
  const usesSvc = clusterEndpoints !== undefined;
  const usesSvl = localEndpoints.length > 0;
  const hasEndpoints = internal.kind !== 'reject';
  const hasExternalEndpoints =
    external !== undefined && (external.kind === 'cluster' || (external.kind === 'local' && external.local.length > 0));
  const internalChain = internal.kind === 'local' ? names.svl : names.svc;
  const externalUsable = external !== undefined && external.kind !== 'reject';
  const usesFw = externalUsable && sp.loadBalancerIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0;

  const noEndpoints = `${spn} has no endpoints`;
  const noLocalEndpoints = `${spn} has no local endpoints`;

  // --- the ClusterIP
  const clusterFrontend = ipFrontend(sp.clusterIP);
  if (internal.kind === 'cluster' || internal.kind === 'local') {
    put('nat', CHAIN.services, toFrontend(sp.clusterIP, `${spn} cluster IP`, t.jump(internalChain)), clusterFrontend);
  } else if (internal.kind === 'reject') {
    put('filter', CHAIN.services, toFrontend(sp.clusterIP, noEndpoints, t.reject(family)), clusterFrontend);
  } else {
    put('filter', CHAIN.services, toFrontend(sp.clusterIP, noLocalEndpoints, t.drop()), clusterFrontend);
  }

  // What external traffic gets when it has nowhere to go on this node (REJECT: no endpoints at
  // all; DROP: policy Local and none here, after the EXT chain short-circuited pods and the node).
  const verdict: { readonly comment: Part; readonly target: Part } | undefined =
    hasExternalEndpoints || external === undefined
      ? undefined
      : external.kind === 'reject'
        ? { comment: m.comment(noEndpoints), target: t.reject(family) }
        : { comment: m.comment(noLocalEndpoints), target: t.drop() };
  /** The filter verdict for an address frontend (externalIP, LB IP). */
  const addressVerdict = (ip: string, v: NonNullable<typeof verdict>): RuleText =>
    rule(m.destination(family, ip), m.protocol(proto), v.comment, m.l4(proto, sp.port), v.target);

  // --- externalIPs
  for (const ip of sp.externalIPs) {
    const frontend = ipFrontend(ip);
    if (externalUsable) put('nat', CHAIN.services, toFrontend(ip, `${spn} external IP`, t.jump(names.ext)), frontend);
    if (verdict) put('filter', CHAIN.externalServices, addressVerdict(ip, verdict), frontend);
  }

  // --- load-balancer IPs
  for (const ip of sp.loadBalancerIPs) {
    if (externalUsable)
      put(
        'nat',
        CHAIN.services,
        toFrontend(ip, `${spn} loadbalancer IP`, t.jump(usesFw ? names.fw : names.ext)),
        ipFrontend(ip),
      );
    if (usesFw)
      put(
        'filter',
        CHAIN.proxyFirewall,
        toFrontend(ip, `${spn} traffic not accepted by ${names.fw}`, t.drop()),
        ipFrontend(ip),
      );
  }
  if (verdict)
    for (const ip of sp.loadBalancerIPs)
      put('filter', CHAIN.externalServices, addressVerdict(ip, verdict), ipFrontend(ip));

  // --- the NodePort (never filtered by loadBalancerSourceRanges, as upstream)
  if (sp.nodePort !== undefined && external !== undefined) {
    const frontend = `${protocolName(proto)} . ${sp.nodePort}`;
    if (externalUsable)
      put(
        'nat',
        CHAIN.nodePorts,
        rule(m.protocol(proto), m.comment(spn), m.l4(proto, sp.nodePort), t.jump(names.ext)),
        frontend,
      );
    if (verdict)
      put(
        'filter',
        CHAIN.externalServices,
        rule(m.protocol(proto), verdict.comment, m.addrType('dst'), m.l4(proto, sp.nodePort), verdict.target),
        frontend,
      );
  }

  // --- the health-check NodePort: accepted whatever the endpoints
  if (sp.healthCheckNodePort !== undefined) {
    put(
      'filter',
      CHAIN.nodePorts,
      rule(
        m.protocol('TCP'),
        m.comment(`${spn} health check node port`),
        m.l4('TCP', sp.healthCheckNodePort),
        t.accept(),
      ),
    );
  }

  // --- the service port's own chains (nat), only when it has endpoints
  const chains: IptChain[] = [];
  const nat = (name: string, rules: RuleText[]) => chains.push({ table: 'nat', name, rules });

  // Masquerade first in the chain ClusterIP traffic goes to: off-cluster sources, or everything.
  const masqueradeRule = (): RuleText[] => {
    if (internal.kind !== 'cluster' && internal.kind !== 'local') return [];
    const parts = [
      m.destination(family, sp.clusterIP),
      m.protocol(proto),
      m.comment(`${spn} cluster IP`),
      m.l4(proto, sp.port),
      t.jump(CHAIN.markMasq),
    ];
    if (ctx.masqueradeAll) return [rule(...parts)];
    const offCluster = localTrafficMatch(ctx.localDetector, family, false);
    return offCluster === undefined || offCluster === 'never' ? [] : [rule(offCluster, ...parts)];
  };

  if (usesSvc && clusterEndpoints) {
    nat(names.svc, [
      ...(internalChain === names.svc ? masqueradeRule() : []),
      ...endpointRules(family, sepName, sp, spn, clusterEndpoints),
    ]);
  }
  if (usesSvl) {
    nat(names.svl, [
      ...(internalChain === names.svl ? masqueradeRule() : []),
      ...endpointRules(family, sepName, sp, spn, localEndpoints),
    ]);
  }

  if (externalUsable && external) {
    const rules: RuleText[] = [];
    if (external.kind === 'cluster') {
      rules.push(rule(m.comment(`masquerade traffic for ${spn} external destinations`), t.jump(CHAIN.markMasq)));
      rules.push(rule(t.jump(names.svc)));
    } else {
      // Pods short-circuit to the cluster endpoints unmasqueraded, as if they went out to the
      // load balancer and came back; the node itself is masqueraded (its source is a local address).
      const fromPods = localTrafficMatch(ctx.localDetector, family, true);
      if (fromPods !== undefined && fromPods !== 'never')
        rules.push(rule(m.comment(`pod traffic for ${spn} external destinations`), fromPods, t.jump(names.svc)));
      rules.push(
        rule(
          m.comment(`masquerade LOCAL traffic for ${spn} external destinations`),
          m.addrType('src'),
          t.jump(CHAIN.markMasq),
        ),
      );
      rules.push(
        rule(m.comment(`route LOCAL traffic for ${spn} external destinations`), m.addrType('src'), t.jump(names.svc)),
      );
      if (external.local.length > 0) rules.push(rule(t.jump(names.svl)));
    }
    nat(names.ext, rules);
  }

  if (usesFw) {
    const comment = m.comment(`${spn} loadbalancer IP`);
    const rules = sp.loadBalancerSourceRanges.map((range) => rule(m.source(family, range), comment, t.jump(names.ext)));
    // Upstream's allowFromNode: a VIP that is local to the node loops requests from the node back
    // with the VIP as source; allow them when a range admits the node's (primary) IP.
    const nodeIP = ctx.nodeIPs[0];
    const allowFromNode =
      nodeIP !== undefined && sp.loadBalancerSourceRanges.some((r) => cidrContains(r, { family, text: nodeIP }));
    if (allowFromNode)
      for (const ip of sp.loadBalancerIPs) rules.push(rule(m.source(family, ip), comment, t.jump(names.ext)));
    rules.push(rule(m.comment(`other traffic to ${spn} will be dropped by KUBE-PROXY-FIREWALL`)));
    nat(names.fw, rules);
  }

  // One SEP chain per endpoint either policy chain reaches (upstream's allLocallyReachableEndpoints).
  if (hasEndpoints) {
    const seen = new Set<string>();
    for (const ep of [...(clusterEndpoints ?? []), ...localEndpoints]) {
      const name = sepName(ep);
      if (seen.has(name)) continue;
      seen.add(name);
      const comment = m.comment(spn);
      nat(name, [
        rule(m.source(family, ep.ip), comment, t.jump(CHAIN.markMasq)),
        rule(
          m.protocol(proto),
          comment,
          ...(sp.affinityTimeoutSeconds !== undefined ? [m.recentSet(family, name)] : []),
          m.l4(proto),
          t.dnat(family, ep.ip, ep.port),
        ),
      ]);
    }
  }

  return { key: sp.key, chains, shared };
}

/** Affinity checks, then the probability ladder: rule i of n matches with 1/(n-i), the last always. */
function endpointRules(
  family: Family,
  sepName: (ep: EndpointTarget) => string,
  sp: ServicePortState,
  spn: string,
  endpoints: readonly EndpointTarget[],
): RuleText[] {
  const rules: RuleText[] = [];
  const chainOf = sepName;
  const comment = (ep: EndpointTarget) => m.comment(`${spn} -> ${endpointString(ep)}`);
  const affinity = sp.affinityTimeoutSeconds;
  if (affinity !== undefined) {
    for (const ep of endpoints) {
      rules.push(rule(comment(ep), m.recentCheck(family, chainOf(ep), affinity), t.jump(chainOf(ep))));
    }
  }
  endpoints.forEach((ep, i) => {
    const remaining = endpoints.length - i;
    rules.push(rule(comment(ep), ...(remaining > 1 ? [m.probability(remaining)] : []), t.jump(chainOf(ep))));
  });
  return rules;
}

/**
 * Matches traffic from inside the cluster (`fromInside`) or from outside it, per the detector.
 * undefined: no detector (upstream's IsImplemented() false); 'never': the match can never hold
 * (outside a /0 CIDR). Upstream's detector holds one CIDR per family; with several, the first is
 * used (ruleset.ts reports it).
 */
export function localTrafficMatch(
  d: LocalTrafficDetector,
  family: Family,
  fromInside: boolean,
): Part | undefined | 'never' {
  switch (d.kind) {
    case 'none':
      return undefined;
    case 'cidrs': {
      const cidr = d.cidrs[0];
      // Outside 0.0.0.0/0 is nowhere (and iptables-nft refuses `! -s 0.0.0.0/0`); inside it is everywhere.
      if (cidr.prefixLength === 0 && !fromInside) return 'never';
      return m.source(family, cidr, !fromInside);
    }
    case 'bridgeInterface':
      return m.inInterface(d.interfaceName, !fromInside);
    case 'interfacePrefix':
      return m.inInterfacePrefix(d.prefix, !fromInside);
  }
}
