/**
 * @module backends/nftables/render/skeleton
 * The fixed part of kproxy's table: base chains on their hooks (the priorities other software
 * orders itself around), dispatch through the shared maps, masquerade, and the filter checks.
 * It depends only on the family-wide context, never on individual Services.
 */
import type { Cidr } from '../../../model/cluster.ts';
import type { NodeState } from '../../../model/node-state.ts';
import type { Chain, Element, NftSet, SetSpec } from './ruleset.ts';
import type { NftFamily, Rule } from './syntax.ts';
import { expr, nftFamily, stmt, value } from './syntax.ts';
import { CHAIN as C, SET as S, type SetName } from './names.ts';
import { localTrafficMatch } from './service-port.ts';
import { outermostCidrs } from './cidrs.ts';

/** Hook priorities: upstream's DNAT priority is -100; filters sit 10 before it or at 0. */
export const PRIORITY = { firewall: -110, dnat: -100, filter: 0, snat: 100 } as const;

/** The family-wide part of a NodeState: what the skeleton and every fragment depend on. */
export type TableContext = Omit<NodeState, 'servicePorts'>;

/** The fixed sets, with the elements the service ports put in them (`bySet`) and the context's own. */
export function skeletonSets(state: TableContext, bySet: ReadonlyMap<SetName, readonly Element[]>): NftSet[] {
  const a = nftFamily(state.family) === 'ip' ? 'ipv4_addr' : 'ipv6_addr';
  const set = (spec: SetSpec, extra: readonly Element[] = []): NftSet => {
    const list = [...(bySet.get(spec.name as SetName) ?? []), ...extra];
    list.sort((x, y) => (x.key.text < y.key.text ? -1 : x.key.text > y.key.text ? 1 : 0));
    return { spec, elements: list };
  };
  const d = state.nodePortDestinations;
  return [
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
    set({
      name: S.firewallAllow,
      keyType: [a, 'inet_proto', 'inet_service', a],
      verdictMap: false,
      flags: ['interval'],
    }),
    set(
      { name: S.serviceCidrs, keyType: [a], verdictMap: false, flags: ['interval'] },
      outermostCidrs(state.serviceCIDRs).map((c) => ({ key: value.cidr(c) })),
    ),
    set({ name: S.hairpin, keyType: [a, a], verdictMap: false, flags: [] }),
  ];
}

/** A ClientIP-affinity set: filled by the kernel from the packet path, entries expire. */
export function affinitySetSpec(f: NftFamily, name: string, timeoutSeconds: number): NftSet {
  const a = f === 'ip' ? 'ipv4_addr' : 'ipv6_addr';
  return {
    spec: { name, keyType: [a], verdictMap: false, flags: ['dynamic', 'timeout'], timeoutSeconds },
    elements: [],
  };
}

/** The fixed chains: hooks, dispatch, masquerade and the filter checks. */
export function skeletonChains(state: TableContext): Chain[] {
  const f = nftFamily(state.family);
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

  const base = (
    name: string,
    type: 'filter' | 'nat',
    hook: NonNullable<Chain['base']>['hook'],
    priority: number,
    rules: Rule[],
  ): Chain => ({
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
          stmt.match(
            expr.concat([daddr, expr.l4proto(), expr.dport(), expr.saddr(f)]),
            '!=',
            value.setRef(S.firewallAllow),
          ),
          stmt.verdict({ kind: 'drop' }),
        ),
      ],
    },
    { name: C.serviceEndpointsCheck, rules: [rule(stmt.vmap(frontendKey, value.setRef(S.noEndpointServices)))] },
    {
      name: C.nodePortEndpointsCheck,
      rules: [rule(...toNodePort, stmt.vmap(nodePortKey, value.setRef(S.noEndpointNodePorts)))],
    },
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
  const loopback: Cidr =
    f === 'ip'
      ? { family: 'ipv4', address: '127.0.0.0', prefixLength: 8 }
      : { family: 'ipv6', address: '::1', prefixLength: 128 };
  const local = stmt.match(expr.fibType('daddr'), '==', value.keyword('local'));
  if (state.nodePortDestinations.kind === 'allLocal') return [stmt.match(daddr, '!=', value.cidr(loopback)), local];
  return [
    stmt.match(daddr, '==', value.setRef(S.nodePortAddresses)),
    stmt.match(daddr, '!=', value.cidr(loopback)),
    local,
  ];
}
