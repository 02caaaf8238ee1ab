/**
 * @module backends/iptables/render/ruleset
 * One family's whole iptables state: the template's fixed chains with every service port's rules
 * in them (in Service key order), the service ports' own chains, and the jump rules.
 */
import type { NodeState } from '../../../model/node-state.ts';
import { cidrContains } from '../../../model/ip.ts';
import type { Problem } from '../../../util/problems.ts';
import { renderServicePort } from './service-port.ts';
import { skeleton } from './skeleton.ts';
import type { IptablesContext, IptChain, IptRuleset, IptTable, PortRules, RuleText } from './types.ts';

export interface IptablesOptions {
  /** iptables.localhostNodePorts (upstream default true). */
  readonly localhostNodePorts: boolean;
  /** Drop conntrack INVALID packets in KUBE-FORWARD (nf_conntrack_tcp_be_liberal = 0). */
  readonly dropInvalid: boolean;
}

/** A NodeState without its service ports: all the context needs. */
export type NodeContextOf = Omit<NodeState, 'servicePorts'>;

/**
 * The family-wide facts. As upstream's NewProxier: localhost NodePorts are off for IPv6, and off
 * when nodePortAddresses are CIDRs none of which holds 127.0.0.1.
 */
export function contextOf(state: NodeContextOf, options: IptablesOptions): IptablesContext {
  const d = state.nodePortDestinations;
  const loopbackAllowed =
    d.kind === 'allLocal' ||
    d.cidrs.some((c) => c.family === 'ipv4' && cidrContains(c, { family: 'ipv4', text: '127.0.0.1' }));
  return {
    family: state.family,
    nodeIPs: state.nodeIPs,
    localDetector: state.localDetector,
    nodePortDestinations: state.nodePortDestinations,
    masqueradeAll: state.masqueradeAll,
    masqueradeMark: state.masqueradeMark,
    localhostNodePorts: state.family === 'ipv4' && loopbackAllowed && options.localhostNodePorts,
    dropInvalid: options.dropInvalid,
  };
}

const byKey = (a: PortRules, b: PortRules) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
const TABLE_ORDER: readonly IptTable[] = ['filter', 'nat', 'mangle'];

/** Each contested frontend's owner: the first port by key that claims it. */
function frontendOwners(ports: readonly PortRules[]): Map<string, string> {
  const owners = new Map<string, string>();
  for (const p of ports)
    for (const r of p.shared) if (r.frontend !== undefined && !owners.has(r.frontend)) owners.set(r.frontend, p.key);
  return owners;
}

/**
 * The whole ruleset: the skeleton's chains with every port's shared rules where the template puts
 * `{{SERVICE_RULES}}` (in port key order; the nat KUBE-SERVICES NodePort jump stays last), then the
 * ports' own chains. A frontend two ports claim keeps only the first port's rules for it.
 */
export function assembleRuleset(ctx: IptablesContext, ports: Iterable<PortRules>): IptRuleset {
  const sorted = [...ports].sort(byKey);
  const sk = skeleton(ctx);
  const owners = frontendOwners(sorted);
  const slot = new Map<string, RuleText[]>();
  const id = (table: IptTable, chain: string) => `${table}\u0000${chain}`;
  for (const c of sk.chains) if (c.servicePorts) slot.set(id(c.table, c.name), []);
  for (const p of sorted) {
    for (const r of p.shared) {
      if (r.frontend !== undefined && owners.get(r.frontend) !== p.key) continue;
      const list = slot.get(id(r.table, r.chain));
      if (!list) throw new Error(`${p.key}: no place for rules in ${r.table} ${r.chain} (the template has none)`);
      list.push(r.rule);
    }
  }
  const fixed: IptChain[] = sk.chains.map((c) => ({
    table: c.table,
    name: c.name,
    rules: c.servicePorts ? [...c.head, ...(slot.get(id(c.table, c.name)) ?? []), ...c.tail] : [...c.head],
  }));
  const own = sorted.flatMap((p) => p.chains);
  const chains = [...fixed, ...own].sort((a, b) => TABLE_ORDER.indexOf(a.table) - TABLE_ORDER.indexOf(b.table));
  return { family: ctx.family, chains, jumps: sk.jumps };
}

/** Every port claiming a frontend that an earlier port (by key) owns, as nftables mode reports it. */
export function conflictProblems(ports: Iterable<PortRules>, services: ReadonlyMap<string, string>): Problem[] {
  const sorted = [...ports].sort(byKey);
  const owners = frontendOwners(sorted);
  const out: Problem[] = [];
  for (const p of sorted) {
    const reported = new Set<string>();
    for (const r of p.shared) {
      const owner = r.frontend === undefined ? undefined : owners.get(r.frontend);
      if (r.frontend === undefined || owner === p.key || reported.has(r.frontend)) continue;
      reported.add(r.frontend);
      out.push({
        kind: 'Service',
        object: services.get(p.key) ?? p.key,
        path: '',
        message: `${r.frontend} is already used by Service port ${owner}; this port does not get it`,
      });
    }
  }
  return out;
}

/** Renders a whole NodeState (dump, goldens, one-shot use). */
export function renderIptables(
  state: NodeState,
  options: IptablesOptions,
): { ruleset: IptRuleset; problems: Problem[] } {
  const ctx = contextOf(state, options);
  const ports = state.servicePorts.map((sp) => renderServicePort(sp, ctx));
  const problems: Problem[] = [];
  const d = state.localDetector;
  if (d.kind === 'cidrs' && d.cidrs.length > 1) {
    const [first, ...rest] = d.cidrs;
    problems.push({
      kind: 'Config',
      object: 'detectLocal',
      path: '',
      message: `iptables mode matches one pod CIDR per family, like upstream: ${first.address}/${first.prefixLength} is used, ${rest.map((c) => `${c.address}/${c.prefixLength}`).join(', ')} ignored`,
    });
  }
  const services = new Map(state.servicePorts.map((sp) => [sp.key, `${sp.ref.namespace}/${sp.ref.name}`]));
  problems.push(...conflictProblems(ports, services));
  return { ruleset: assembleRuleset(ctx, ports), problems };
}
