/**
 * @module render/nftables/layout
 * Renders one family's NodeState as kproxy's nftables table. The layout (docs/adr/0001) keeps
 * the kernel's cost linear in Services and endpoints:
 *  - every frontend (ClusterIP, externalIP, LB IP, NodePort) is an element of ONE verdict map,
 *    bound by one rule; there are no per-Service sets or maps;
 *  - a service port's endpoints are a chain of plain rules, a "probability ladder"
 *    (`numgen random mod (N-k) == 0 dnat to EP_k`), which the kernel loads in linear time;
 *  - masquerade, hairpin, source ranges and "no endpoints" verdicts are global rules over shared
 *    sets, not per-Service rules.
 * Hook priorities follow upstream kube-proxy's nftables mode; they are the integration interface
 * other software orders itself around (README, "Hook priorities").
 */
import type { Cidr } from '../../model/cluster.ts';
import type { NodeState } from '../../model/node-state.ts';
import type { Problem } from '../../util/problems.ts';
import type { Chain, Element, NftSet, Ruleset, SetSpec } from './ruleset.ts';
import type { NftFamily, Rule } from './syntax.ts';
import { expr, nftFamily, stmt, value } from './syntax.ts';
import { CHAIN as C, SET as S, TABLE, type SetName } from './names.ts';
import { localTrafficMatch, renderServicePort, type FragmentContext, type ServicePortFragment } from './service-port.ts';
import { outermostCidrs } from './cidrs.ts';

export { TABLE } from './names.ts';

/** Hook priorities: upstream's DNAT priority is -100; filters sit 10 before it or at 0. */
export const PRIORITY = { firewall: -110, dnat: -100, filter: 0, snat: 100 } as const;

export interface RenderResult {
  readonly ruleset: Ruleset;
  /** Frontends two service ports both claim: the first (by key) keeps it. */
  readonly problems: readonly Problem[];
}

/** The family-wide part of a NodeState: what the skeleton and every fragment depend on. */
export type TableContext = Omit<NodeState, 'servicePorts'>;

export function fragmentContext(state: TableContext): FragmentContext {
  return { family: state.family, localDetector: state.localDetector, nodeIPs: state.nodeIPs };
}

/** Renders a whole NodeState (dump, one-shot sync, full resync). */
export function renderNftables(state: NodeState): RenderResult {
  const ctx = fragmentContext(state);
  return assembleTable(state, state.servicePorts.map((sp) => renderServicePort(sp, ctx)));
}

/**
 * The table from the skeleton and the service ports' fragments, given in key order. A frontend
 * belongs to the first port that claims it, in every set; a later claimant gets none of that
 * frontend's elements, loses the chains routed only from frontends it lost, and is reported.
 */
export function assembleTable(state: TableContext, fragments: Iterable<ServicePortFragment>): RenderResult {
  const f = nftFamily(state.family);
  const a = f === 'ip' ? 'ipv4_addr' : 'ipv6_addr';
  const elements = new Map<SetName, Map<string, Element>>(Object.values(S).map((name) => [name, new Map()]));
  const add = (set: SetName, e: Element) => {
    const m = elements.get(set) as Map<string, Element>;
    if (!m.has(e.key.text)) m.set(e.key.text, e);
  };
  const owners = new Map<string, string>();
  const problems: Problem[] = [];
  const chains: Chain[] = [];
  const affinitySets = new Map<string, number>();

  for (const fragment of fragments) {
    const sp = fragment.sp;
    const owned = new Set<string>();
    for (const [frontend, list] of fragment.frontends) {
      const owner = owners.get(frontend);
      if (owner !== undefined && owner !== sp.key) {
        problems.push({
          kind: 'Service',
          object: `${sp.ref.namespace}/${sp.ref.name}`,
          path: '',
          message: `${frontend} is already used by Service port ${owner}; this port does not get it`,
        });
        continue;
      }
      owners.set(frontend, sp.key);
      owned.add(frontend);
      for (const { set, element } of list) add(set, element);
    }
    const kept = fragment.chains.filter((c) => c.frontends.some((fr) => owned.has(fr)));
    for (const c of kept) chains.push(c.chain);
    for (const { set, element } of fragment.sharedElements) add(set, element);
    if (kept.length > 0) for (const [name, timeout] of fragment.affinitySets) affinitySets.set(name, timeout);
  }

  const set = (spec: SetSpec, extra: readonly Element[] = []): NftSet => {
    const list = [...(elements.get(spec.name as SetName)?.values() ?? []), ...extra];
    list.sort((x, y) => (x.key.text < y.key.text ? -1 : x.key.text > y.key.text ? 1 : 0));
    return { spec, elements: list };
  };
  const d = state.nodePortDestinations;
  const sets: NftSet[] = [
    set({ name: S.clusterIps, keyType: [a], verdictMap: false, flags: [] }),
    set({ name: S.serviceIps, keyType: [a, 'inet_proto', 'inet_service'], verdictMap: true, flags: [] }),
    set({ name: S.serviceNodePorts, keyType: ['inet_proto', 'inet_service'], verdictMap: true, flags: [] }),
    set({ name: S.noEndpointServices, keyType: [a, 'inet_proto', 'inet_service'], verdictMap: true, flags: [] }),
    set({ name: S.noEndpointNodePorts, keyType: ['inet_proto', 'inet_service'], verdictMap: true, flags: [] }),
    set(
      { name: S.nodePortAddresses, keyType: [a], verdictMap: false, flags: ['interval'] },
      d.kind === 'cidrs' ? outermostCidrs(d.cidrs).map((c) => ({ key: value.cidr(c) })) : [],
    ),
    set({ name: S.firewallIps, keyType: [a, 'inet_proto', 'inet_service'], verdictMap: false, flags: [] }),
    set({ name: S.firewallAllow, keyType: [a, 'inet_proto', 'inet_service', a], verdictMap: false, flags: ['interval'] }),
    set(
      { name: S.serviceCidrs, keyType: [a], verdictMap: false, flags: ['interval'] },
      outermostCidrs(state.serviceCIDRs).map((c) => ({ key: value.cidr(c) })),
    ),
    set({ name: S.hairpin, keyType: [a, a], verdictMap: false, flags: [] }),
    ...[...affinitySets].map(([name, timeoutSeconds]): NftSet => ({
      spec: { name, keyType: [a], verdictMap: false, flags: ['dynamic', 'timeout'], timeoutSeconds },
      elements: [],
    })),
  ];
  return { ruleset: { family: f, table: TABLE, chains: [...skeleton(state, f), ...chains], sets }, problems };
}

/** The fixed chains: hooks, dispatch, masquerade and the filter checks. */
function skeleton(state: TableContext, f: NftFamily): Chain[] {
  const rule = (...statements: Rule['statements']): Rule => ({ statements });
  const jump = (chain: string) => stmt.verdict({ kind: 'jump', chain });
  const ctNew = stmt.match(expr.ctState(), '==', value.keyword('new'));
  const daddr = expr.daddr(f);
  const frontendKey = expr.concat([daddr, expr.l4proto(), expr.dport()]);
  const nodePortKey = expr.concat([expr.l4proto(), expr.dport()]);
  const mark = state.masqueradeMark;
  const toNodePort = nodePortDestinationMatch(state, f);

  const clusterIpMasquerade: Rule[] = [];
  const toClusterIp = stmt.match(daddr, '==', value.setRef(S.clusterIps));
  if (state.masqueradeAll) {
    clusterIpMasquerade.push(rule(toClusterIp, jump(C.markForMasquerade)));
  } else {
    const offCluster = localTrafficMatch(state.localDetector, f, false);
    if (offCluster) clusterIpMasquerade.push(rule(toClusterIp, offCluster, jump(C.markForMasquerade)));
  }

  const base = (name: string, type: 'filter' | 'nat', hook: NonNullable<Chain['base']>['hook'], priority: number, rules: Rule[]): Chain => ({
    name,
    base: { type, hook, priority },
    rules,
  });
  return [
    base(C.natPrerouting, 'nat', 'prerouting', PRIORITY.dnat, [rule(jump(C.services))]),
    base(C.natOutput, 'nat', 'output', PRIORITY.dnat, [rule(jump(C.services))]),
    base(C.natPostrouting, 'nat', 'postrouting', PRIORITY.snat, [rule(jump(C.masquerading))]),
    base(C.filterPrerouting, 'filter', 'prerouting', PRIORITY.firewall, [rule(ctNew, jump(C.firewallCheck))]),
    base(C.filterOutput, 'filter', 'output', PRIORITY.firewall, [rule(ctNew, jump(C.firewallCheck))]),
    base(C.filterInput, 'filter', 'input', PRIORITY.filter, [
      rule(ctNew, jump(C.nodePortEndpointsCheck)),
      rule(ctNew, jump(C.serviceEndpointsCheck)),
    ]),
    base(C.filterForward, 'filter', 'forward', PRIORITY.filter, [
      rule(ctNew, jump(C.serviceEndpointsCheck)),
      rule(ctNew, jump(C.clusterIpsCheck)),
    ]),
    base(C.filterOutputPostDnat, 'filter', 'output', PRIORITY.filter, [
      rule(ctNew, jump(C.serviceEndpointsCheck)),
      rule(ctNew, jump(C.clusterIpsCheck)),
    ]),
    {
      name: C.services,
      rules: [
        ...clusterIpMasquerade,
        rule(stmt.vmap(frontendKey, value.setRef(S.serviceIps))),
        rule(...toNodePort, stmt.vmap(nodePortKey, value.setRef(S.serviceNodePorts))),
      ],
    },
    {
      name: C.masquerading,
      rules: [
        // Hairpin: a pod whose connection to its Service was DNATed back to itself.
        rule(
          stmt.match(expr.ctStatus(), '==', value.keyword('dnat')),
          stmt.match(expr.concat([expr.saddr(f), daddr]), '==', value.setRef(S.hairpin)),
          jump(C.markForMasquerade),
        ),
        rule(stmt.matchEq(expr.markAnd(mark), value.number(0)), stmt.verdict({ kind: 'return' })),
        rule(stmt.markSet('^', mark)),
        rule(stmt.masqueradeFullyRandom()),
      ],
    },
    { name: C.markForMasquerade, rules: [rule(stmt.markSet('|', mark))] },
    {
      name: C.firewallCheck,
      rules: [
        rule(
          stmt.match(frontendKey, '==', value.setRef(S.firewallIps)),
          stmt.match(expr.concat([daddr, expr.l4proto(), expr.dport(), expr.saddr(f)]), '!=', value.setRef(S.firewallAllow)),
          stmt.verdict({ kind: 'drop' }),
        ),
      ],
    },
    { name: C.serviceEndpointsCheck, rules: [rule(stmt.vmap(frontendKey, value.setRef(S.noEndpointServices)))] },
    { name: C.nodePortEndpointsCheck, rules: [rule(...toNodePort, stmt.vmap(nodePortKey, value.setRef(S.noEndpointNodePorts)))] },
    {
      name: C.clusterIpsCheck,
      rules: [
        rule(stmt.match(daddr, '==', value.setRef(S.clusterIps)), stmt.reject()),
        rule(stmt.match(daddr, '==', value.setRef(S.serviceCidrs)), stmt.verdict({ kind: 'drop' })),
      ],
    },
    { name: C.reject, rules: [rule(stmt.reject())] },
  ];
}

/** NodePorts answer on local destinations, never loopback (CVE-2020-8558), within the chosen CIDRs. */
function nodePortDestinationMatch(state: TableContext, f: NftFamily) {
  const daddr = expr.daddr(f);
  const loopback: Cidr = f === 'ip' ? { family: 'ipv4', address: '127.0.0.0', prefixLength: 8 } : { family: 'ipv6', address: '::1', prefixLength: 128 };
  const local = stmt.match(expr.fibType('daddr'), '==', value.keyword('local'));
  if (state.nodePortDestinations.kind === 'allLocal') return [stmt.match(daddr, '!=', value.cidr(loopback)), local];
  return [stmt.match(daddr, '==', value.setRef(S.nodePortAddresses)), stmt.match(daddr, '!=', value.cidr(loopback)), local];
}
