/**
 * @module backends/ipvs/render/helper-rules
 * The fixed part of IPVS mode's helper table (`ip kproxy-ipvs`, `ip6 kproxy-ipvs`): base chains
 * on their hooks and the sets the service ports fill. Built with the nftables mode's statement
 * builders (backends/nftables/render/syntax.ts), so the same checks guard every value and `nft -f`
 * gets the same kind of transaction.
 *
 * Where the hooks sit matters because IPVS is a netfilter hook too (net/netfilter/ipvs/ip_vs_core.c):
 *  - packets from elsewhere reach a virtual server at LOCAL_IN, where IPVS runs at priority
 *    NF_IP_PRI_NAT_SRC - 2 = 98: the filter input chain (0) sees them first, still addressed to
 *    the virtual address — the place for REJECT (no endpoints, unused ports) and the Local DROP;
 *  - the node's own packets meet IPVS at LOCAL_OUT priority NF_IP_PRI_NAT_DST + 2 = -98: only a
 *    chain before it (the filter output chain at -110) sees their virtual address;
 *  - IPVS sends what it forwards back through LOCAL_OUT and POSTROUTING already rewritten to the
 *    real server, so nat postrouting (+100) masquerades it (net.ipv4.vs.conntrack=1 keeps the
 *    conntrack entry in step);
 *  - the masquerade mark and the short-circuit firewall mark are set in nat prerouting/output
 *    (-100), before IPVS reads the mark to look fwmark services up.
 */
import type { NodeState } from '../../../model/node-state.ts';
import { outermostCidrs } from '../../nftables/render/cidrs.ts';
import type { BaseChainSpec, Chain, NftSet, SetSpec } from '../../nftables/render/ruleset.ts';
import { localTrafficMatch } from '../../nftables/render/service-port.ts';
import {
  element,
  type Element,
  expr,
  type Fragment,
  nftFamily,
  type Rule,
  stmt,
  value,
  type NftFamily,
} from '../../nftables/render/syntax.ts';
import { CHAIN, SET, shortCircuitChain, type SetName } from './names.ts';
import { checkMark } from './syntax.ts';

/** Hook priorities: before IPVS's LOCAL_OUT hook (-98), nat's DNAT slot, filter, masquerade. */
export const PRIORITY = { beforeIpvs: -110, nat: -100, filter: 0, snat: 100 } as const;

/** `meta mark set MARK`: the exact value, as IPVS compares the whole mark with a fwmark service's. */
function markSetExact(mark: number): Fragment {
  checkMark(mark);
  return {
    text: `meta mark set 0x${mark.toString(16)}`,
    json: { mangle: { key: { meta: { key: 'mark' } }, value: mark } },
  };
}

const base = (type: BaseChainSpec['type'], hook: BaseChainSpec['hook'], priority: number): BaseChainSpec => ({
  type,
  hook,
  priority,
});

/** The chain a short-circuit map element jumps to: sets the port's firewall mark. */
export function shortCircuitChainOf(mark: number): Chain {
  return { name: shortCircuitChain(mark), rules: [{ statements: [markSetExact(mark)] }] };
}

/** The fixed chains for one family's context (no service port changes them). */
export function helperChains(state: Omit<NodeState, 'servicePorts'>): Chain[] {
  const f = nftFamily(state.family);
  const d = expr.daddr(f);
  const s = expr.saddr(f);
  const frontend = expr.concat([d, expr.l4proto(), expr.dport()]);
  const set = (name: SetName) => value.setRef(name);
  const isNew = stmt.match(expr.ctState(), '==', value.keyword('new'));
  const jump = (chain: string): Fragment => stmt.verdict({ kind: 'jump', chain });
  const rule = (...statements: Fragment[]): Rule => ({ statements });
  const offCluster = localTrafficMatch(state.localDetector, f, false);
  const fromPods = localTrafficMatch(state.localDetector, f, true);
  const mark = state.masqueradeMark;

  const masqueradeMarks: Rule[] = [];
  if (state.masqueradeAll)
    masqueradeMarks.push(rule(stmt.match(d, '==', set(SET.clusterIps)), jump(CHAIN.markForMasquerade)));
  else if (offCluster)
    masqueradeMarks.push(rule(stmt.match(d, '==', set(SET.clusterIps)), offCluster, jump(CHAIN.markForMasquerade)));
  masqueradeMarks.push(rule(stmt.match(frontend, '==', set(SET.externalCluster)), jump(CHAIN.markForMasquerade)));

  const natPrerouting: Rule[] = [rule(jump(CHAIN.masqueradeMarks))];
  // externalTrafficPolicy Local: pods (as the local-traffic detector sees them) short-circuit.
  if (fromPods) natPrerouting.push(rule(fromPods, stmt.vmap(frontend, set(SET.shortCircuit))));

  const filterInput: Rule[] = [];
  // externalTrafficPolicy Local without an endpoint here: what is not from a pod (pods were
  // marked for the fwmark service above) has nowhere to go. The node's own packets never pass here.
  filterInput.push(
    rule(
      isNew,
      ...(offCluster ? [offCluster] : []),
      stmt.match(frontend, '==', set(SET.noLocalEndpoints)),
      stmt.verdict({ kind: 'drop' }),
    ),
  );
  filterInput.push(rule(isNew, jump(CHAIN.servicesCheck)));

  return [
    // loadBalancerSourceRanges, before anything else (and before IPVS on LOCAL_OUT).
    {
      name: CHAIN.filterPrerouting,
      base: base('filter', 'prerouting', PRIORITY.beforeIpvs),
      rules: [rule(isNew, jump(CHAIN.firewallCheck))],
    },
    {
      name: CHAIN.filterOutput,
      base: base('filter', 'output', PRIORITY.beforeIpvs),
      rules: [rule(isNew, jump(CHAIN.firewallCheck)), rule(isNew, jump(CHAIN.servicesCheck))],
    },
    { name: CHAIN.filterInput, base: base('filter', 'input', PRIORITY.filter), rules: filterInput },
    // An unallocated ServiceCIDR address is not on kube-ipvs0, so a pod's packet to it is forwarded.
    {
      name: CHAIN.filterForward,
      base: base('filter', 'forward', PRIORITY.filter),
      rules: [rule(isNew, stmt.match(d, '==', set(SET.serviceCidrs)), stmt.verdict({ kind: 'drop' }))],
    },
    { name: CHAIN.natPrerouting, base: base('nat', 'prerouting', PRIORITY.nat), rules: natPrerouting },
    {
      name: CHAIN.natOutput,
      base: base('nat', 'output', PRIORITY.nat),
      rules: [
        // The node short-circuits policy Local (goto: the masquerade mark would change the firewall mark).
        rule(stmt.vmap(frontend, set(SET.shortCircuit))),
        rule(jump(CHAIN.masqueradeMarks)),
        // The node reaching a virtual address from that address (kube-ipvs0 holds it) must be
        // masqueraded, or replies would not come back (upstream: KUBE-CLUSTER-IP src,dst).
        rule(
          stmt.match(s, '==', set(SET.ipvsAddresses)),
          stmt.match(frontend, '==', set(SET.virtualServers)),
          jump(CHAIN.markForMasquerade),
        ),
      ],
    },
    {
      name: CHAIN.natPostrouting,
      base: base('nat', 'postrouting', PRIORITY.snat),
      rules: [rule(jump(CHAIN.masquerading))],
    },
    {
      name: CHAIN.servicesCheck,
      rules: [
        rule(stmt.vmap(frontend, set(SET.noEndpointServices))),
        rule(stmt.match(frontend, '==', set(SET.virtualServers)), stmt.verdict({ kind: 'return' })),
        // Any other port of an address on kube-ipvs0: nothing on the node may answer there.
        rule(stmt.match(d, '==', set(SET.ipvsAddresses)), stmt.reject()),
        // An unallocated ServiceCIDR address from the node (not on kube-ipvs0: it would be routed away).
        rule(stmt.match(d, '==', set(SET.serviceCidrs)), stmt.verdict({ kind: 'drop' })),
      ],
    },
    {
      name: CHAIN.firewallCheck,
      rules: [
        rule(
          stmt.match(frontend, '==', set(SET.firewallIps)),
          stmt.match(expr.concat([d, expr.l4proto(), expr.dport(), s]), '!=', set(SET.firewallAllow)),
          stmt.verdict({ kind: 'drop' }),
        ),
      ],
    },
    { name: CHAIN.masqueradeMarks, rules: masqueradeMarks },
    {
      name: CHAIN.masquerading,
      rules: [
        rule(stmt.match(expr.concat([d, s]), '==', set(SET.hairpin)), jump(CHAIN.markForMasquerade)),
        // The node's short-circuited packets (its source is local): masqueraded, as policy Local wants.
        rule(
          stmt.match(expr.mark(), '==', set(SET.shortCircuitMarks)),
          stmt.match(expr.fibType('saddr'), '==', value.keyword('local')),
          jump(CHAIN.markForMasquerade),
        ),
        rule(stmt.matchEq(expr.markAnd(mark), value.number(0)), stmt.verdict({ kind: 'return' })),
        rule(stmt.markSet('^', mark)),
        rule(stmt.masqueradeFullyRandom()),
      ],
    },
    { name: CHAIN.markForMasquerade, rules: [rule(stmt.markSet('|', mark))] },
    { name: CHAIN.reject, rules: [rule(stmt.reject())] },
  ];
}

/** The fixed sets, filled with `elements(set)` (sorted by the caller) and the context's own. */
export function helperSets(state: Omit<NodeState, 'servicePorts'>, elements: (set: SetName) => Element[]): NftSet[] {
  const f: NftFamily = nftFamily(state.family);
  const addr = f === 'ip' ? 'ipv4_addr' : 'ipv6_addr';
  const frontend = [addr, 'inet_proto', 'inet_service'];
  const spec = (name: SetName, keyType: string[], verdictMap = false, interval = false): SetSpec => ({
    name,
    keyType,
    verdictMap,
    flags: interval ? ['interval'] : [],
  });
  const sets: { spec: SetSpec; elements: Element[] }[] = [
    { spec: spec(SET.virtualServers, frontend), elements: elements(SET.virtualServers) },
    { spec: spec(SET.ipvsAddresses, [addr]), elements: elements(SET.ipvsAddresses) },
    { spec: spec(SET.clusterIps, [addr]), elements: elements(SET.clusterIps) },
    { spec: spec(SET.externalCluster, frontend), elements: elements(SET.externalCluster) },
    { spec: spec(SET.noEndpointServices, frontend, true), elements: elements(SET.noEndpointServices) },
    { spec: spec(SET.noLocalEndpoints, frontend), elements: elements(SET.noLocalEndpoints) },
    { spec: spec(SET.shortCircuit, frontend, true), elements: elements(SET.shortCircuit) },
    { spec: spec(SET.shortCircuitMarks, ['mark']), elements: elements(SET.shortCircuitMarks) },
    { spec: spec(SET.firewallIps, frontend), elements: elements(SET.firewallIps) },
    { spec: spec(SET.firewallAllow, [...frontend, addr], false, true), elements: elements(SET.firewallAllow) },
    {
      spec: spec(SET.serviceCidrs, [addr], false, true),
      elements: outermostCidrs(state.serviceCIDRs).map((c) => element.set(value.cidr(c))),
    },
    { spec: spec(SET.hairpin, [addr, addr]), elements: elements(SET.hairpin) },
  ];
  return sets;
}
