/**
 * @module backends/nftables/render/service-port
 * What one service port contributes to the table: its chains (endpoint ladders, the external
 * traffic chain), its affinity sets, and its set elements grouped by the frontend they belong to.
 * A fragment depends only on the service port and the family-wide context, so a sync re-renders
 * only the service ports that changed (layout.ts assembles fragments and resolves conflicts).
 */
import type { Cidr, Family } from '../../../model/cluster.ts';
import { cidrContains, hostCidr } from '../../../model/ip.ts';
import type { EndpointTarget, LocalTrafficDetector, ServicePortState } from '../../../model/node-state.ts';
import type { Chain, Element } from './ruleset.ts';
import type { Fragment, NftFamily, Rule, Value, Verdict } from './syntax.ts';
import { expr, nftFamily, stmt, value } from './syntax.ts';
import { CHAIN, SET, affinitySetName, servicePortNames, type SetName } from './names.ts';
import { outermostCidrs } from './cidrs.ts';

/** Family-wide facts a fragment depends on; when they change, every fragment is re-rendered. */
export interface FragmentContext {
  readonly family: Family;
  readonly localDetector: LocalTrafficDetector;
  readonly nodeIPs: readonly string[];
}

export interface SetElement {
  readonly set: SetName;
  readonly element: Element;
}

/** A chain that is kept only if its port owns at least one of the frontends routed through it. */
export interface FragmentChain {
  readonly chain: Chain;
  readonly frontends: readonly string[];
}

export interface ServicePortFragment {
  readonly sp: ServicePortState;
  readonly chains: readonly FragmentChain[];
  /** Elements any number of ports may add (ClusterIPs, hairpin pairs). */
  readonly sharedElements: readonly SetElement[];
  /** Per frontend (its key text), the elements that exist only if this port owns the frontend. */
  readonly frontends: ReadonlyMap<string, readonly SetElement[]>;
  /** Dynamic affinity sets, name → timeout seconds, kept only with the chains that use them. */
  readonly affinitySets: ReadonlyMap<string, number>;
}

type Role = 'svc' | 'lcl';

export function renderServicePort(sp: ServicePortState, ctx: FragmentContext): ServicePortFragment {
  const f = nftFamily(ctx.family);
  const names = servicePortNames(sp);
  const proto = value.protocol(sp.ref.protocol);
  const frontendKey = (ip: string): Value => value.concat([value.ip(ip), proto, value.port(sp.port)]);
  const frontends = new Map<string, SetElement[]>();
  const on = (frontend: Value, set: SetName, element: Element) => {
    const list = frontends.get(frontend.text);
    if (list) list.push({ set, element });
    else frontends.set(frontend.text, [{ set, element }]);
  };
  const chains = new Map<string, { chain: Chain; frontends: Set<string> }>();
  const affinitySets = new Map<string, number>();
  const sharedElements: SetElement[] = [{ set: SET.clusterIps, element: { key: value.ip(sp.clusterIP) } }];

  /** The ladder for an endpoint list, routed to from `via` frontends. */
  const ladder = (role: Role, endpoints: readonly EndpointTarget[], via: readonly string[]): Verdict => {
    const name = role === 'svc' ? names.svc : names.lcl;
    let entry = chains.get(name);
    if (!entry) {
      entry = { chain: ladderChain(name, f, sp, endpoints, affinitySets), frontends: new Set() };
      chains.set(name, entry);
      for (const ep of endpoints) {
        // Only a pod on this node can send a packet that this node DNATs back to the same pod.
        if (ep.isLocal)
          sharedElements.push({ set: SET.hairpin, element: { key: value.concat([value.ip(ep.ip), value.ip(ep.ip)]) } });
      }
    }
    for (const v of via) entry.frontends.add(v);
    return { kind: 'goto', chain: name };
  };

  const cluster = frontendKey(sp.clusterIP);
  const internal = sp.internal;
  if (internal.kind === 'cluster' || internal.kind === 'local') {
    on(cluster, SET.serviceIps, {
      key: cluster,
      verdict: ladder(internal.kind === 'cluster' ? 'svc' : 'lcl', internal.endpoints, [cluster.text]),
    });
  } else {
    on(cluster, SET.noEndpointServices, { key: cluster, verdict: noEndpointVerdict(internal.kind) });
  }

  const external = sp.external;
  if (external) {
    const ips = [...sp.externalIPs, ...sp.loadBalancerIPs].map(frontendKey);
    const nodePort = sp.nodePort !== undefined ? value.concat([proto, value.port(sp.nodePort)]) : undefined;
    const outside: { key: Value; ips: boolean }[] = [
      ...ips.map((key) => ({ key, ips: true })),
      ...(nodePort ? [{ key: nodePort, ips: false }] : []),
    ];
    const via = outside.map((o) => o.key.text);
    const add = (o: { key: Value; ips: boolean }, verdict: Verdict, noEndpoints: boolean) =>
      on(
        o.key,
        o.ips
          ? noEndpoints
            ? SET.noEndpointServices
            : SET.serviceIps
          : noEndpoints
            ? SET.noEndpointNodePorts
            : SET.serviceNodePorts,
        {
          key: o.key,
          verdict,
        },
      );
    if (external.kind === 'reject') {
      for (const o of outside) add(o, noEndpointVerdict('reject'), true);
    } else if (outside.length > 0) {
      const svcTarget = ladder('svc', external.kind === 'cluster' ? external.endpoints : external.cluster, via);
      const rules: Rule[] = [];
      if (external.kind === 'cluster') {
        rules.push({ statements: [stmt.verdict({ kind: 'jump', chain: CHAIN.markForMasquerade })] });
        rules.push({ statements: [stmt.verdict(svcTarget)] });
      } else {
        // externalTrafficPolicy Local (upstream's EXT chain): pods short-circuit unmasqueraded,
        // the node itself is masqueraded (its source is the LB IP), the rest keeps its source.
        const fromPods = localTrafficMatch(ctx.localDetector, f, true);
        if (fromPods) rules.push({ statements: [fromPods, stmt.verdict(svcTarget)] });
        const fromNode = stmt.match(expr.fibType('saddr'), '==', value.keyword('local'));
        rules.push({ statements: [fromNode, stmt.verdict({ kind: 'jump', chain: CHAIN.markForMasquerade })] });
        rules.push({ statements: [fromNode, stmt.verdict(svcTarget)] });
        if (external.local.length > 0) rules.push({ statements: [stmt.verdict(ladder('lcl', external.local, via))] });
      }
      chains.set(names.ext, { chain: { name: names.ext, rules }, frontends: new Set(via) });
      for (const o of outside) add(o, { kind: 'goto', chain: names.ext }, false);
      if (external.kind === 'local' && external.local.length === 0) {
        // What the EXT chain did not short-circuit has nowhere to go on this node.
        for (const o of outside) add(o, noEndpointVerdict('drop'), true);
      }
    }
  }

  const ranges = sp.loadBalancerSourceRanges;
  if (ranges.length > 0) {
    // Upstream's allowFromNode: when a range holds this node's IP, traffic the node SNATs to an
    // LB IP (some platforms do) is allowed too.
    const allowFromNode = ctx.nodeIPs.some((ip) => ranges.some((r) => cidrContains(r, { family: r.family, text: ip })));
    const sources: Cidr[] = [
      ...ranges,
      ...(allowFromNode ? sp.loadBalancerIPs.map((ip) => hostCidr({ family: ctx.family, text: ip })) : []),
    ];
    for (const lb of sp.loadBalancerIPs) {
      const key = frontendKey(lb);
      on(key, SET.firewallIps, { key });
      for (const src of outermostCidrs(sources)) {
        on(key, SET.firewallAllow, { key: value.concat([value.ip(lb), proto, value.port(sp.port), value.cidr(src)]) });
      }
    }
  }

  return {
    sp,
    chains: [...chains.values()].map((c) => ({ chain: c.chain, frontends: [...c.frontends] })),
    sharedElements,
    frontends,
    affinitySets,
  };
}

function ladderChain(
  name: string,
  f: NftFamily,
  sp: ServicePortState,
  endpoints: readonly EndpointTarget[],
  affinitySets: Map<string, number>,
): Chain {
  const l4 = stmt.match(expr.l4proto(), '==', value.protocol(sp.ref.protocol));
  const saddr = expr.saddr(f);
  const affinity = sp.affinityTimeoutSeconds;
  const affinitySet = (ep: EndpointTarget) => affinitySetName(sp, ep, affinity ?? 0);
  const rules: Rule[] = [];
  if (affinity !== undefined) {
    for (const ep of endpoints) {
      const set = affinitySet(ep);
      affinitySets.set(set, affinity);
      rules.push({
        statements: [
          l4,
          stmt.match(saddr, '==', value.setRef(set)),
          stmt.updateSet(set, saddr),
          stmt.dnat(ep.ip, ep.port),
        ],
      });
    }
  }
  endpoints.forEach((ep, k) => {
    const remaining = endpoints.length - k;
    const statements: Fragment[] = [l4];
    if (remaining > 1) statements.push(stmt.matchEq(expr.numgenRandom(remaining), value.number(0)));
    if (affinity !== undefined) statements.push(stmt.updateSet(affinitySet(ep), saddr));
    statements.push(stmt.dnat(ep.ip, ep.port));
    rules.push({ statements });
  });
  return { name, rules };
}

/** Matches traffic from inside the cluster (`fromInside`) or from outside it; undefined: no detector. */
export function localTrafficMatch(d: LocalTrafficDetector, f: NftFamily, fromInside: boolean): Fragment | undefined {
  const op = fromInside ? '==' : '!=';
  switch (d.kind) {
    case 'none':
      return undefined;
    case 'cidrs':
      return stmt.match(expr.saddr(f), op, value.anonymousSet(d.cidrs.map(value.cidr)));
    case 'bridgeInterface':
      return stmt.match(expr.iifname(), op, value.ifname(d.interfaceName));
    case 'interfacePrefix':
      return stmt.match(expr.iifname(), op, value.ifname(`${d.prefix}*`));
  }
}

function noEndpointVerdict(kind: 'reject' | 'drop'): Verdict {
  return kind === 'reject' ? { kind: 'goto', chain: CHAIN.reject } : { kind: 'drop' };
}
