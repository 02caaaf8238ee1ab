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
import type { Chain } from './ruleset.ts';
import type { Element, Fragment, NftFamily, Rule, Value, Verdict } from './syntax.ts';
import { element, expr, nftFamily, stmt, value } from './syntax.ts';
import {
  CHAIN,
  ENDPOINT_MAP,
  LOCAL_INDEX,
  SET,
  affinitySetName,
  endpointAddressMap,
  pickChainName,
  servicePortNames,
  shardOf,
  type PickSpec,
  type SetName,
} from './names.ts';
import { outermostCidrs } from './cidrs.ts';

/**
 * Where a service port's endpoints live: elements of the shared endpoint maps (ADR 0008), or a
 * "probability ladder" of rules per port (ADR 0001; ClientIP affinity, and nft JSON output, which
 * cannot express the maps).
 */
export type EndpointLayout = 'maps' | 'ladders';

/** Family-wide facts a fragment depends on; when they change, every fragment is re-rendered. */
export interface FragmentContext {
  readonly family: Family;
  readonly localDetector: LocalTrafficDetector;
  readonly nodeIPs: readonly string[];
  readonly endpointLayout: EndpointLayout;
  /** How many address maps of each kind endpoints are spread over (`endpointShards`). */
  readonly endpointShards: number;
}

/** Where endpoints go: what the skeleton declares for them depends on it too. */
export type EndpointMaps = Pick<FragmentContext, 'endpointLayout' | 'endpointShards'>;

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
  /** Shared DNAT chains (`dnat-N` …) the port routes through; kept while any port uses them. */
  readonly sharedChains: readonly Chain[];
  /** Per frontend (its key text), the elements that exist only if this port owns the frontend. */
  readonly frontends: ReadonlyMap<string, readonly SetElement[]>;
  /** Dynamic affinity sets, name → timeout seconds, kept only with the chains that use them. */
  readonly affinitySets: ReadonlyMap<string, number>;
}

type Role = 'svc' | 'lcl';

const NO_AFFINITY_SETS: ReadonlyMap<string, number> = new Map();

/** A destination the node answers for: address . protocol . port, or protocol . NodePort. */
interface Frontend {
  readonly key: Value;
  readonly nodePort: boolean;
}

export function renderServicePort(sp: ServicePortState, ctx: FragmentContext): ServicePortFragment {
  const f = nftFamily(ctx.family);
  const names = servicePortNames(sp);
  const proto = value.protocol(sp.ref.protocol);
  const frontendOf = (parts: Value[], nodePort: boolean): Frontend => ({ key: value.concat(parts), nodePort });
  const ipFrontend = (ip: string) => frontendOf([value.ip(ip), proto, value.port(sp.port)], false);
  const frontends = new Map<string, SetElement[]>();
  const on = (frontend: Value, set: SetName, e: Element) => {
    const list = frontends.get(frontend.text);
    if (list) list.push({ set, element: e });
    else frontends.set(frontend.text, [{ set, element: e }]);
  };
  const chains = new Map<string, { chain: Chain; frontends: Set<string> }>();
  const sharedChains = new Map<string, Chain>();
  const affinitySets = new Map<string, number>();
  const sharedElements: SetElement[] = [{ set: SET.clusterIps, element: element.set(value.ip(sp.clusterIP)) }];
  // The maps hold one target port per frontend: endpoints on different ports (a named port
  // resolved differently per pod) keep a ladder, as ClientIP affinity does.
  const targetPort = commonTargetPort(sp);
  const maps = ctx.endpointLayout === 'maps' && sp.affinityTimeoutSeconds === undefined && targetPort !== undefined;

  const hairpin = (endpoints: readonly EndpointTarget[]) => {
    for (const ep of endpoints) {
      // Only a pod on this node can send a packet that this node DNATs back to the same pod.
      if (ep.isLocal)
        sharedElements.push({
          set: SET.hairpin,
          element: element.set(value.concat([value.ip(ep.ip), value.ip(ep.ip)])),
        });
    }
  };

  /** The ladder for an endpoint list, routed to from `via` frontends. */
  const ladder = (role: Role, endpoints: readonly EndpointTarget[], via: readonly string[]): Verdict => {
    const name = role === 'svc' ? names.svc : names.lcl;
    let entry = chains.get(name);
    if (!entry) {
      entry = { chain: ladderChain(name, f, sp, endpoints, affinitySets), frontends: new Set() };
      chains.set(name, entry);
      hairpin(endpoints);
    }
    for (const v of via) entry.frontends.add(v);
    return { kind: 'goto', chain: name };
  };

  /** The shared chain picking among N endpoints, and the chain it goes on to when it masquerades first. */
  const pickChain = (spec: PickSpec, n: number): string => {
    const chain = sharedPickChain(f, spec, n);
    if (!sharedChains.has(chain.name)) {
      sharedChains.set(chain.name, chain);
      if (spec.masquerade) pickChain({ ...spec, masquerade: false }, n);
    }
    return chain.name;
  };

  const withPort = new Set<string>();
  /** Puts an endpoint list in a frontend's map entries; the verdict goes to the chain that picks one. */
  const pick = (fe: Frontend, endpoints: readonly EndpointTarget[], local: boolean, masquerade: boolean): Verdict => {
    // Nothing to pick from: back to the hook, as an empty ladder would.
    if (endpoints.length === 0) return { kind: 'return' };
    const base = local ? LOCAL_INDEX : 0;
    const shards = ctx.endpointShards;
    const shard = shardOf(fe.key.text, shards);
    const addresses = endpointAddressMap(fe.nodePort, shard, shards);
    endpoints.forEach((ep, i) => {
      on(fe.key, addresses, element.indexedMap(fe.key, base + i, value.ip(ep.ip)));
    });
    if (!withPort.has(fe.key.text) && targetPort !== undefined) {
      withPort.add(fe.key.text);
      on(
        fe.key,
        fe.nodePort ? ENDPOINT_MAP.nodePortPorts : ENDPOINT_MAP.ports,
        element.map(fe.key, value.port(targetPort)),
      );
    }
    hairpin(endpoints);
    return {
      kind: 'goto',
      chain: pickChain({ nodePort: fe.nodePort, local, masquerade, shard, shards }, endpoints.length),
    };
  };

  const cluster = ipFrontend(sp.clusterIP);
  const internal = sp.internal;
  if (internal.kind === 'cluster' || internal.kind === 'local') {
    const verdict = maps
      ? pick(cluster, internal.endpoints, false, false)
      : ladder(internal.kind === 'cluster' ? 'svc' : 'lcl', internal.endpoints, [cluster.key.text]);
    on(cluster.key, SET.serviceIps, element.vmap(cluster.key, verdict));
  } else {
    on(cluster.key, SET.noEndpointServices, element.vmap(cluster.key, noEndpointVerdict(internal.kind)));
  }

  const external = sp.external;
  if (external) {
    const outside: Frontend[] = [
      ...[...sp.externalIPs, ...sp.loadBalancerIPs].map(ipFrontend),
      ...(sp.nodePort !== undefined ? [frontendOf([proto, value.port(sp.nodePort)], true)] : []),
    ];
    const add = (fe: Frontend, verdict: Verdict, noEndpoints: boolean) => {
      const set = fe.nodePort
        ? noEndpoints
          ? SET.noEndpointNodePorts
          : SET.serviceNodePorts
        : noEndpoints
          ? SET.noEndpointServices
          : SET.serviceIps;
      on(fe.key, set, element.vmap(fe.key, verdict));
    };
    if (external.kind === 'reject') {
      for (const fe of outside) add(fe, noEndpointVerdict('reject'), true);
    } else if (maps && external.kind === 'cluster') {
      for (const fe of outside) add(fe, pick(fe, external.endpoints, false, true), false);
    } else if (maps && external.kind === 'local') {
      // Policy Local: one EXT chain for addresses and one for the NodePort, as their map keys differ.
      for (const nodePort of [false, true]) {
        const group = outside.filter((fe) => fe.nodePort === nodePort);
        let toCluster: Verdict = { kind: 'return' };
        let toLocal: Verdict | undefined;
        for (const fe of group) {
          toCluster = pick(fe, external.cluster, false, false);
          if (external.local.length > 0) toLocal = pick(fe, external.local, true, false);
        }
        if (group.length === 0) continue;
        const name = nodePort ? names.extNodePort : names.ext;
        const rules = localPolicyRules(ctx.localDetector, f, toCluster, toLocal);
        chains.set(name, { chain: { name, rules }, frontends: new Set(group.map((fe) => fe.key.text)) });
        for (const fe of group) add(fe, { kind: 'goto', chain: name }, false);
      }
    } else if (outside.length > 0) {
      const via = outside.map((fe) => fe.key.text);
      const svcTarget = ladder('svc', external.kind === 'cluster' ? external.endpoints : external.cluster, via);
      const rules: Rule[] =
        external.kind === 'cluster'
          ? [
              { statements: [stmt.verdict({ kind: 'jump', chain: CHAIN.markForMasquerade })] },
              { statements: [stmt.verdict(svcTarget)] },
            ]
          : localPolicyRules(
              ctx.localDetector,
              f,
              svcTarget,
              external.local.length > 0 ? ladder('lcl', external.local, via) : undefined,
            );
      chains.set(names.ext, { chain: { name: names.ext, rules }, frontends: new Set(via) });
      for (const fe of outside) add(fe, { kind: 'goto', chain: names.ext }, false);
    }
    if (external.kind === 'local' && external.local.length === 0) {
      // What the EXT chain did not short-circuit has nowhere to go on this node.
      for (const fe of outside) add(fe, noEndpointVerdict('drop'), true);
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
      const key = ipFrontend(lb).key;
      on(key, SET.firewallIps, element.set(key));
      for (const src of outermostCidrs(sources)) {
        on(
          key,
          SET.firewallAllow,
          element.set(value.concat([value.ip(lb), proto, value.port(sp.port), value.cidr(src)])),
        );
      }
    }
  }

  // Exact-size lists: a pushed-to array keeps room for 17 elements, and fragments live as long as their port.
  for (const [key, list] of frontends) if (list.length > 1) frontends.set(key, list.slice());
  return {
    sp,
    chains: [...chains.values()].map((c) => ({ chain: c.chain, frontends: [...c.frontends] })),
    sharedElements,
    sharedChains: [...sharedChains.values()],
    frontends,
    // Fragments live as long as their port; most have no affinity, so they share one empty map.
    affinitySets: affinitySets.size === 0 ? NO_AFFINITY_SETS : affinitySets,
  };
}

/** The one port every endpoint of the service port listens on, if they agree (almost always). */
function commonTargetPort(sp: ServicePortState): number | undefined {
  const lists = [
    sp.internal.kind === 'cluster' || sp.internal.kind === 'local' ? sp.internal.endpoints : [],
    ...(sp.external?.kind === 'cluster' ? [sp.external.endpoints] : []),
    ...(sp.external?.kind === 'local' ? [sp.external.cluster, sp.external.local] : []),
  ];
  let port: number | undefined;
  for (const list of lists) {
    for (const ep of list) {
      if (port === undefined) port = ep.port;
      else if (ep.port !== port) return undefined;
    }
  }
  return port;
}

/**
 * externalTrafficPolicy Local (upstream's EXT chain): pods short-circuit to every endpoint
 * unmasqueraded, the node itself is masqueraded (its source is the LB IP), the rest goes to this
 * node's endpoints with its source kept (no rule for them: dropped by the filter checks).
 */
function localPolicyRules(d: LocalTrafficDetector, f: NftFamily, toCluster: Verdict, toLocal?: Verdict): Rule[] {
  const rules: Rule[] = [];
  const fromPods = localTrafficMatch(d, f, true);
  if (fromPods) rules.push({ statements: [fromPods, stmt.verdict(toCluster)] });
  const fromNode = stmt.match(expr.fibType('saddr'), '==', value.keyword('local'));
  rules.push({ statements: [fromNode, stmt.verdict({ kind: 'jump', chain: CHAIN.markForMasquerade })] });
  rules.push({ statements: [fromNode, stmt.verdict(toCluster)] });
  if (toLocal) rules.push({ statements: [stmt.verdict(toLocal)] });
  return rules;
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

/**
 * Shared pick chains depend only on the family, the spec and N: built once per process, so the
 * 10,000 fragments routing through `dnat-10` all hold the same chain, not a copy each (at 10k
 * Services the copies were most of the daemon's heap).
 */
const pickChains = new Map<string, Chain>();

function sharedPickChain(f: NftFamily, spec: PickSpec, n: number): Chain {
  const name = pickChainName(spec, n);
  const key = `${f} ${name}`;
  const known = pickChains.get(key);
  if (known) return known;
  let rules: Rule[];
  if (spec.masquerade) {
    const next = sharedPickChain(f, { ...spec, masquerade: false }, n).name;
    rules = [
      { statements: [stmt.verdict({ kind: 'jump', chain: CHAIN.markForMasquerade })] },
      { statements: [stmt.verdict({ kind: 'goto', chain: next })] },
    ];
  } else {
    const frontend = [...(spec.nodePort ? [] : [expr.daddr(f)]), expr.l4proto(), expr.dport()];
    const index = expr.numgenRandom(n, spec.local ? LOCAL_INDEX : 0);
    const addresses = endpointAddressMap(spec.nodePort, spec.shard, spec.shards);
    const ports = spec.nodePort ? ENDPOINT_MAP.nodePortPorts : ENDPOINT_MAP.ports;
    rules = [
      { statements: [stmt.dnatMaps(expr.concat([...frontend, index]), addresses, expr.concat(frontend), ports)] },
    ];
  }
  const chain: Chain = { name, rules };
  pickChains.set(key, chain);
  return chain;
}
