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
import { createHash } from 'node:crypto';
import type { Cidr, Protocol } from '../../model/cluster.ts';
import { cidrContains, hostCidr } from '../../model/ip.ts';
import type { EndpointTarget, NodeState, ServicePortState } from '../../model/node-state.ts';
import type { Problem } from '../../util/problems.ts';
import type { Chain, Element, NftSet, Ruleset, SetSpec } from './ruleset.ts';
import type { NftFamily, Rule, Value, Verdict } from './syntax.ts';
import { expr, nftFamily, stmt, value } from './syntax.ts';

export const TABLE = 'kproxy';

/** Hook priorities: upstream's DNAT priority is -100; filters sit 10 before it or at 0. */
export const PRIORITY = { firewall: -110, dnat: -100, filter: 0, snat: 100 } as const;

const C = {
  natPrerouting: 'nat-prerouting',
  natOutput: 'nat-output',
  natPostrouting: 'nat-postrouting',
  filterPrerouting: 'filter-prerouting',
  filterOutput: 'filter-output',
  filterInput: 'filter-input',
  filterForward: 'filter-forward',
  filterOutputPostDnat: 'filter-output-post-dnat',
  services: 'services',
  masquerading: 'masquerading',
  markForMasquerade: 'mark-for-masquerade',
  firewallCheck: 'firewall-check',
  serviceEndpointsCheck: 'service-endpoints-check',
  nodePortEndpointsCheck: 'nodeport-endpoints-check',
  clusterIpsCheck: 'cluster-ips-check',
  reject: 'reject-chain',
} as const;

const S = {
  clusterIps: 'cluster-ips',
  serviceIps: 'service-ips',
  serviceNodePorts: 'service-nodeports',
  noEndpointServices: 'no-endpoint-services',
  noEndpointNodePorts: 'no-endpoint-nodeports',
  nodePortAddresses: 'nodeport-addresses',
  firewallIps: 'firewall-ips',
  firewallAllow: 'firewall-allow',
  serviceCidrs: 'service-cidrs',
  hairpin: 'hairpin',
} as const;

export interface RenderResult {
  readonly ruleset: Ruleset;
  /** Frontends two Services both claim: the first (by Service key) keeps it. */
  readonly problems: readonly Problem[];
}

/** True for the names of chains and sets that belong to one service port (vs the fixed skeleton). */
export function isServicePortObject(name: string): boolean {
  return /^(svc|lcl|ext|aff)-/.test(name);
}

export function renderNftables(state: NodeState): RenderResult {
  const f = nftFamily(state.family);
  const b = new Builder(f, state);
  for (const sp of state.servicePorts) b.addServicePort(sp);
  return b.finish();
}

type Role = 'svc' | 'lcl';

class Builder {
  private readonly f: NftFamily;
  private readonly state: NodeState;
  private readonly addrType: string;
  private readonly chains: Chain[] = [];
  private readonly elements = new Map<string, Map<string, Element>>();
  private readonly owners = new Map<string, string>();
  private readonly problems: Problem[] = [];
  /** Dynamic ClientIP-affinity sets, by name, with their timeout in seconds. */
  private readonly affinitySets = new Map<string, number>();

  constructor(f: NftFamily, state: NodeState) {
    this.f = f;
    this.state = state;
    this.addrType = f === 'ip' ? 'ipv4_addr' : 'ipv6_addr';
    for (const name of Object.values(S)) this.elements.set(name, new Map());
  }

  addServicePort(sp: ServicePortState): void {
    const names = servicePortNames(sp);
    const proto = value.protocol(sp.ref.protocol);
    const frontend = (ip: string): Value => value.concat([value.ip(ip), proto, value.port(sp.port)]);

    // Endpoint ladders, one per endpoint list a route uses (internal and external may share one).
    const ladders = new Set<Role>();
    const ladder = (role: Role, endpoints: readonly EndpointTarget[]): Verdict => {
      const name = role === 'svc' ? names.svc : names.lcl;
      if (!ladders.has(role)) {
        ladders.add(role);
        this.chains.push(this.ladderChain(name, sp, endpoints));
      }
      return { kind: 'goto', chain: name };
    };

    this.add(S.clusterIps, { key: value.ip(sp.clusterIP) });
    const internal = sp.internal;
    const clusterFrontend = frontend(sp.clusterIP);
    if (this.claim(clusterFrontend, sp)) {
      if (internal.kind === 'cluster' || internal.kind === 'local') {
        const target = ladder(internal.kind === 'cluster' ? 'svc' : 'lcl', internal.endpoints);
        this.add(S.serviceIps, { key: clusterFrontend, verdict: target });
      } else {
        this.add(S.noEndpointServices, { key: clusterFrontend, verdict: noEndpointVerdict(internal.kind) });
      }
    }

    const external = sp.external;
    if (!external) return;
    // Only the frontends this port owns; another Service's claim wins (reported in claim()).
    const externalIps = [...sp.externalIPs, ...sp.loadBalancerIPs].filter((ip) => this.claim(frontend(ip), sp));
    const nodePortKey = sp.nodePort !== undefined ? value.concat([proto, value.port(sp.nodePort)]) : undefined;
    const nodePort = nodePortKey && this.claim(nodePortKey, sp) ? nodePortKey : undefined;
    if (externalIps.length === 0 && !nodePort) return;
    if (external.kind === 'reject') {
      for (const ip of externalIps) this.add(S.noEndpointServices, { key: frontend(ip), verdict: noEndpointVerdict('reject') });
      if (nodePort) this.add(S.noEndpointNodePorts, { key: nodePort, verdict: noEndpointVerdict('reject') });
    } else {
      const svcTarget = ladder('svc', external.kind === 'cluster' ? external.endpoints : external.cluster);
      const rules: Rule[] = [];
      if (external.kind === 'cluster') {
        rules.push({ statements: [stmt.verdict({ kind: 'jump', chain: C.markForMasquerade })] });
        rules.push({ statements: [stmt.verdict(svcTarget)] });
      } else {
        // externalTrafficPolicy Local (upstream's EXT chain): pods short-circuit unmasqueraded,
        // the node itself is masqueraded (its source is the LB IP), the rest keeps its source.
        const fromPods = this.localTrafficMatch(true);
        if (fromPods) rules.push({ statements: [fromPods, stmt.verdict(svcTarget)] });
        const fromNode = stmt.match(expr.fibType('saddr'), '==', value.keyword('local'));
        rules.push({ statements: [fromNode, stmt.verdict({ kind: 'jump', chain: C.markForMasquerade })] });
        rules.push({ statements: [fromNode, stmt.verdict(svcTarget)] });
        if (external.local.length > 0) rules.push({ statements: [stmt.verdict(ladder('lcl', external.local))] });
      }
      this.chains.push({ name: names.ext, rules });
      const toExt: Verdict = { kind: 'goto', chain: names.ext };
      for (const ip of externalIps) this.add(S.serviceIps, { key: frontend(ip), verdict: toExt });
      if (nodePort) this.add(S.serviceNodePorts, { key: nodePort, verdict: toExt });
      if (external.kind === 'local' && external.local.length === 0) {
        // What the EXT chain did not short-circuit has nowhere to go on this node.
        for (const ip of externalIps) this.add(S.noEndpointServices, { key: frontend(ip), verdict: noEndpointVerdict('drop') });
        if (nodePort) this.add(S.noEndpointNodePorts, { key: nodePort, verdict: noEndpointVerdict('drop') });
      }
    }

    const ranges = sp.loadBalancerSourceRanges;
    if (ranges.length === 0) return;
    // Upstream's allowFromNode: when a range holds this node's IP, traffic the node SNATs to an
    // LB IP (some platforms do) is allowed too.
    const allowFromNode = this.state.nodeIPs.some((ip) => ranges.some((r) => cidrContains(r, { family: r.family, text: ip })));
    const sources: Cidr[] = [...ranges, ...(allowFromNode ? sp.loadBalancerIPs.map((ip) => hostCidr({ family: this.state.family, text: ip })) : [])];
    for (const lb of sp.loadBalancerIPs.filter((ip) => externalIps.includes(ip))) {
      this.add(S.firewallIps, { key: frontend(lb) });
      for (const src of outermostCidrs(sources)) {
        this.add(S.firewallAllow, { key: value.concat([value.ip(lb), proto, value.port(sp.port), value.cidr(src)]) });
      }
    }
  }

  private ladderChain(name: string, sp: ServicePortState, endpoints: readonly EndpointTarget[]): Chain {
    const l4 = stmt.match(expr.l4proto(), '==', value.protocol(sp.ref.protocol));
    const saddr = expr.saddr(this.f);
    const affinity = sp.affinityTimeoutSeconds;
    const affinitySet = (ep: EndpointTarget) => affinitySetName(sp, ep, affinity ?? 0);
    const rules: Rule[] = [];
    if (affinity !== undefined) {
      for (const ep of endpoints) {
        const set = affinitySet(ep);
        rules.push({
          statements: [l4, stmt.match(saddr, '==', value.setRef(set)), stmt.updateSet(set, saddr), stmt.dnat(ep.ip, ep.port)],
        });
      }
    }
    endpoints.forEach((ep, k) => {
      const remaining = endpoints.length - k;
      const statements = [l4];
      if (remaining > 1) statements.push(stmt.matchEq(expr.numgenRandom(remaining), value.number(0)));
      if (affinity !== undefined) statements.push(stmt.updateSet(affinitySet(ep), saddr));
      statements.push(stmt.dnat(ep.ip, ep.port));
      rules.push({ statements });
      // Only a pod on this node can send a packet that this node DNATs back to the same pod.
      if (ep.isLocal) this.add(S.hairpin, { key: value.concat([value.ip(ep.ip), value.ip(ep.ip)]) });
    });
    if (affinity !== undefined) {
      for (const ep of endpoints) this.affinitySets.set(affinitySet(ep), affinity);
    }
    return { name, rules };
  }

  /** Matches traffic from inside the cluster (`fromInside`) or from outside it; undefined: no detector. */
  private localTrafficMatch(fromInside: boolean) {
    const d = this.state.localDetector;
    const op = fromInside ? '==' : '!=';
    switch (d.kind) {
      case 'none':
        return undefined;
      case 'cidrs':
        return stmt.match(expr.saddr(this.f), op, value.anonymousSet(d.cidrs.map(value.cidr)));
      case 'bridgeInterface':
        return stmt.match(expr.iifname(), op, value.ifname(d.interfaceName));
      case 'interfacePrefix':
        return stmt.match(expr.iifname(), op, value.ifname(`${d.prefix}*`));
    }
  }

  /** Adds an element; the same key added twice is one element. */
  private add(set: string, e: Element): void {
    const elements = this.elements.get(set);
    if (!elements) throw new Error(`unknown set ${set}`);
    if (!elements.has(e.key.text)) elements.set(e.key.text, e);
  }

  /**
   * Claims a frontend (address . protocol . port, or protocol . NodePort) for a service port. The
   * first port (in key order) keeps it in every set; a later claimant gets none of its elements,
   * and the conflict is reported once.
   */
  private claim(frontend: Value, sp: ServicePortState): boolean {
    const owner = this.owners.get(frontend.text);
    if (owner === undefined) {
      this.owners.set(frontend.text, sp.key);
      return true;
    }
    if (owner === sp.key) return true;
    this.problems.push({
      kind: 'Service',
      object: `${sp.ref.namespace}/${sp.ref.name}`,
      path: '',
      message: `${frontend.text} is already used by Service port ${owner}; this port does not get it`,
    });
    return false;
  }

  finish(): RenderResult {
    const f = this.f;
    const a = this.addrType;
    const sets: NftSet[] = [
      this.set({ name: S.clusterIps, keyType: [a], verdictMap: false, flags: [] }),
      this.set({ name: S.serviceIps, keyType: [a, 'inet_proto', 'inet_service'], verdictMap: true, flags: [] }),
      this.set({ name: S.serviceNodePorts, keyType: ['inet_proto', 'inet_service'], verdictMap: true, flags: [] }),
      this.set({ name: S.noEndpointServices, keyType: [a, 'inet_proto', 'inet_service'], verdictMap: true, flags: [] }),
      this.set({ name: S.noEndpointNodePorts, keyType: ['inet_proto', 'inet_service'], verdictMap: true, flags: [] }),
      this.set({ name: S.nodePortAddresses, keyType: [a], verdictMap: false, flags: ['interval'] }, this.nodePortAddressElements()),
      this.set({ name: S.firewallIps, keyType: [a, 'inet_proto', 'inet_service'], verdictMap: false, flags: [] }),
      this.set({ name: S.firewallAllow, keyType: [a, 'inet_proto', 'inet_service', a], verdictMap: false, flags: ['interval'] }),
      this.set(
        { name: S.serviceCidrs, keyType: [a], verdictMap: false, flags: ['interval'] },
        outermostCidrs(this.state.serviceCIDRs).map((c) => ({ key: value.cidr(c) })),
      ),
      this.set({ name: S.hairpin, keyType: [a, a], verdictMap: false, flags: [] }),
      ...[...this.affinitySets].map(([name, timeoutSeconds]): NftSet => ({
        spec: { name, keyType: [a], verdictMap: false, flags: ['dynamic', 'timeout'], timeoutSeconds },
        elements: [],
      })),
    ];
    const chains = [...this.skeleton(f), ...this.chains];
    return { ruleset: { family: f, table: TABLE, chains, sets }, problems: this.problems };
  }

  private set(spec: SetSpec, extra: readonly Element[] = []): NftSet {
    const fromAdds = [...(this.elements.get(spec.name)?.values() ?? [])];
    const elements = [...fromAdds, ...extra].sort((x, y) => (x.key.text < y.key.text ? -1 : x.key.text > y.key.text ? 1 : 0));
    return { spec, elements };
  }

  private nodePortAddressElements(): Element[] {
    const d = this.state.nodePortDestinations;
    return d.kind === 'cidrs' ? outermostCidrs(d.cidrs).map((c) => ({ key: value.cidr(c) })) : [];
  }

  /** The fixed chains: hooks, dispatch, masquerade and the filter checks. */
  private skeleton(f: NftFamily): Chain[] {
    const rule = (...statements: Rule['statements']): Rule => ({ statements });
    const jump = (chain: string) => stmt.verdict({ kind: 'jump', chain });
    const ctNew = stmt.match(expr.ctState(), '==', value.keyword('new'));
    const daddr = expr.daddr(f);
    const frontendKey = expr.concat([daddr, expr.l4proto(), expr.dport()]);
    const nodePortKey = expr.concat([expr.l4proto(), expr.dport()]);
    const mark = this.state.masqueradeMark;
    const toNodePort = this.nodePortDestinationMatch(f);

    const clusterIpMasquerade: Rule[] = [];
    const toClusterIp = stmt.match(daddr, '==', value.setRef(S.clusterIps));
    if (this.state.masqueradeAll) {
      clusterIpMasquerade.push(rule(toClusterIp, jump(C.markForMasquerade)));
    } else {
      const offCluster = this.localTrafficMatch(false);
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
  private nodePortDestinationMatch(f: NftFamily) {
    const daddr = expr.daddr(f);
    const loopback: Cidr = f === 'ip' ? { family: 'ipv4', address: '127.0.0.0', prefixLength: 8 } : { family: 'ipv6', address: '::1', prefixLength: 128 };
    const local = stmt.match(expr.fibType('daddr'), '==', value.keyword('local'));
    if (this.state.nodePortDestinations.kind === 'allLocal') return [stmt.match(daddr, '!=', value.cidr(loopback)), local];
    return [stmt.match(daddr, '==', value.setRef(S.nodePortAddresses)), stmt.match(daddr, '!=', value.cidr(loopback)), local];
  }
}

function noEndpointVerdict(kind: 'reject' | 'drop'): Verdict {
  return kind === 'reject' ? { kind: 'goto', chain: C.reject } : { kind: 'drop' };
}

/**
 * The CIDRs not inside another one of the list (duplicates once): the kernel refuses overlapping
 * intervals in one set ("conflicting intervals specified"), and the outer one already covers them.
 */
export function outermostCidrs(cidrs: readonly Cidr[]): Cidr[] {
  const covers = (a: Cidr, b: Cidr) => a.prefixLength <= b.prefixLength && cidrContains(a, { family: b.family, text: b.address });
  const out: Cidr[] = [];
  for (const c of cidrs) {
    if (out.some((o) => covers(o, c))) continue;
    for (let i = out.length - 1; i >= 0; i--) if (covers(c, out[i] as Cidr)) out.splice(i, 1);
    out.push(c);
  }
  return out;
}

function shortHash(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 8);
}

const PROTO: Record<Protocol, string> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

/**
 * Derived, bounded names: a hash of the service port's key (so names never collide) followed
 * by a readable `namespace/name/protocol/port` (validated DNS names and numbers only).
 */
export function servicePortNames(sp: ServicePortState): { svc: string; lcl: string; ext: string } {
  const id = `${shortHash(sp.key)}-${sp.ref.namespace}/${sp.ref.name}/${PROTO[sp.ref.protocol]}/${sp.port}`;
  return { svc: `svc-${id}`, lcl: `lcl-${id}`, ext: `ext-${id}` };
}

/**
 * One dynamic set per (service port, endpoint, timeout), shared by the cluster and local ladders
 * as upstream shares it; a changed timeout is a new set.
 */
function affinitySetName(sp: ServicePortState, ep: EndpointTarget, timeout: number): string {
  return `aff-${shortHash(sp.key, ep.ip, String(ep.port))}-t${timeout}`;
}
