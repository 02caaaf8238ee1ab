/**
 * @module explain/explain
 * "Why did my packet go there?": one packet (source, destination, protocol, where it comes from)
 * against the cluster as this node sees it, answered with the verdict the rules give it, the
 * frontend and Service port that own it, the endpoints it may land on and why every other
 * endpoint is left out, masquerade and why, affinity. Pure.
 *
 * It cannot disagree with what is programmed: the per-port decision (routes, endpoint lists, the
 * reasons an endpoint is left out) is the model's own (`traceServicePortsOf`, the code
 * `buildNodeState` runs), the frontend ownership rule is the renderers' (the first service port by
 * key), and what differs between modes comes from `modes.ts`, never from the mode's name. The
 * packet-flow suite checks every flow's explanation against what its packets did.
 */
import type { ProxyConfig } from '../config/proxy-config.ts';
import type { ClusterSnapshot, Family, IpAddress, Protocol, Service } from '../model/cluster.ts';
import {
  buildNodeState,
  type Exclusion,
  type ServicePortTrace,
  serviceKey,
  traceServicePortsOf,
} from '../model/build-node-state.ts';
import { cidrContains, cidrText, parseIp } from '../model/ip.ts';
import type { EndpointTarget, LocalTrafficDetector, NodeState, ServicePortState } from '../model/node-state.ts';
import type { ModeTraits } from './modes.ts';

export type PacketOrigin = 'pod' | 'node' | 'outside';
export type Verdict = 'dnat' | 'reject' | 'drop' | 'none';
export type FrontendKind = 'ClusterIP' | 'NodePort' | 'LoadBalancerIP' | 'ExternalIP';

export interface Packet {
  readonly src: IpAddress;
  readonly srcPort?: number;
  readonly dst: IpAddress;
  readonly dstPort: number;
  readonly protocol: Protocol;
  /** Absent: from the source address (a node address: node; the cluster CIDR or pod CIDRs: pod; else outside). */
  readonly from?: PacketOrigin;
}

export type ExplainConfig = Pick<
  ProxyConfig,
  | 'mode'
  | 'nodeName'
  | 'clusterCIDRs'
  | 'detectLocal'
  | 'nodePortAddresses'
  | 'masqueradeAll'
  | 'masqueradeBit'
  | 'iptables'
>;

export interface ExplainInput {
  readonly snapshot: ClusterSnapshot;
  readonly config: ExplainConfig;
  readonly traits: ModeTraits;
  readonly packet: Packet;
  /**
   * Addresses this node holds besides its Node object's (what the rules' "local address" tests see:
   * the pod gateway, other interfaces). Loopback is always local.
   */
  readonly localAddresses?: readonly string[];
}

export interface Frontend {
  readonly kind: FrontendKind;
  readonly address: string;
  readonly port: number;
  readonly protocol: Protocol;
}

/** The `--output json` contract: these fields keep their names and meanings. */
export interface Explanation {
  readonly mode: string;
  readonly family: Family;
  readonly packet: {
    readonly src: string;
    readonly srcPort?: number;
    readonly dst: string;
    readonly dstPort: number;
    readonly protocol: Protocol;
    readonly from: PacketOrigin;
    /** Why `from` (given, or what the source address says). */
    readonly fromReason: string;
  };
  readonly verdict: Verdict;
  /** `namespace/name:portName` of the Service port that owns the frontend; null when none matched. */
  readonly service: string | null;
  readonly frontend: Frontend | null;
  /** The route the packet takes (`internalTrafficPolicy Cluster`, `externalTrafficPolicy Local: local endpoints`, …). */
  readonly route: string | null;
  /** The endpoints this packet may be DNATed to (`IP:port`, `[IPv6]:port`); empty unless the verdict is dnat. */
  readonly endpoints: readonly string[];
  /** Every other endpoint of the Service port, with why it is left out for this packet. */
  readonly excluded: readonly Exclusion[];
  /** True when the packet leaves masqueraded (on every endpoint it may land on). */
  readonly masquerade: boolean;
  readonly masqueradeReason: string;
  /** The source is one of the endpoints: landing on itself, it is masqueraded (hairpin). */
  readonly hairpin: boolean;
  readonly affinity: { readonly timeoutSeconds: number } | null;
  /** Why the verdict, in one sentence. */
  readonly reason: string;
  /** The path through the rules, step by step, for a person. */
  readonly steps: readonly string[];
}

export class ExplainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExplainError';
  }
}

const LOOPBACK: Record<Family, { family: Family; address: string; prefixLength: number }> = {
  ipv4: { family: 'ipv4', address: '127.0.0.0', prefixLength: 8 },
  ipv6: { family: 'ipv6', address: '::1', prefixLength: 128 },
};

const ipPort = (ip: string, port: number) => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);
const endpointText = (t: EndpointTarget) => ipPort(t.ip, t.port);

export function explainPacket(input: ExplainInput): Explanation {
  const { snapshot, config, traits, packet } = input;
  const family = packet.dst.family;
  if (packet.src.family !== family)
    throw new ExplainError(`--src ${packet.src.text} and --dst ${packet.dst.text} are of different IP families`);
  const state = buildNodeState(snapshot, family, config);
  const steps: string[] = [];
  const isLoopback = (ip: IpAddress) => cidrContains(LOOPBACK[ip.family], ip);
  const extra = (input.localAddresses ?? []).map((a) => parseIp(a)).filter((a): a is IpAddress => a !== undefined);
  const nodeAddresses = snapshot.node?.addresses ?? [];
  const isLocal = (ip: IpAddress) =>
    isLoopback(ip) || [...nodeAddresses, ...extra].some((a) => a.family === ip.family && a.text === ip.text);
  const { from, fromReason } = origin(packet, config, snapshot, isLocal, serviceAddressOf(state, traits, packet.src));
  const dst = packet.dst.text;
  const proto = packet.protocol;
  const port = packet.dstPort;
  const where = `${ipPort(dst, port)}/${proto}`;
  steps.push(
    `packet ${packet.src.text} → ${where}, ${family === 'ipv4' ? 'IPv4' : 'IPv6'}, from ${from} (${fromReason})`,
  );

  const base = {
    mode: config.mode,
    family,
    packet: {
      src: packet.src.text,
      ...(packet.srcPort !== undefined ? { srcPort: packet.srcPort } : {}),
      dst,
      dstPort: port,
      protocol: proto,
      from,
      fromReason,
    },
  };
  const nothing = (verdict: Verdict, reason: string, extraFields: Partial<Explanation> = {}): Explanation => {
    steps.push(reason);
    return ordered({
      ...base,
      verdict,
      service: null,
      frontend: null,
      route: null,
      endpoints: [],
      excluded: [],
      masquerade: false,
      masqueradeReason: verdict === 'none' ? 'kproxy does not touch this packet' : 'not forwarded',
      hairpin: false,
      affinity: null,
      reason,
      steps,
      ...extraFields,
    });
  };

  // 1. Address frontends (ClusterIP, externalIP, LB IP): the first service port by key that claims
  // `dst . proto . port` owns it, as both renderers keep it.
  let owner: { sp: ServicePortState; kind: FrontendKind } | undefined;
  for (const sp of state.servicePorts) {
    if (sp.ref.protocol !== proto || sp.port !== port) continue;
    const kind: FrontendKind | undefined =
      sp.clusterIP === dst
        ? 'ClusterIP'
        : sp.externalIPs.includes(dst) && sp.external
          ? 'ExternalIP'
          : sp.loadBalancerIPs.includes(dst) && sp.external
            ? 'LoadBalancerIP'
            : undefined;
    if (kind) {
      owner = { sp, kind };
      break;
    }
  }
  const claimants = (pred: (sp: ServicePortState) => boolean) =>
    state.servicePorts.filter((sp) => pred(sp)).map((sp) => sp.key);

  // 2. NodePorts, when no address frontend matched (dispatch tries addresses first).
  if (!owner) {
    const np = state.servicePorts.find((sp) => sp.ref.protocol === proto && sp.nodePort === port && sp.external);
    if (np) {
      const accepted = nodePortAccepts(packet.dst, state, config, traits, isLocal, isLoopback);
      if (accepted.ok) {
        owner = { sp: np, kind: 'NodePort' };
        steps.push(accepted.why);
      } else {
        steps.push(accepted.why);
        const ext = np.external;
        // iptables mode's "no endpoints" filter rule for NodePorts matches every local address.
        if (traits.noEndpointNodePorts === 'everyLocalAddress' && isLocal(packet.dst) && ext) {
          if (ext.kind === 'reject')
            return nothing(
              'reject',
              `${np.key} has no endpoints: its NodePort ${port}/${proto} is rejected on every local address, ${dst} included (${config.mode} mode)`,
              { service: np.key },
            );
          if (ext.kind === 'local' && ext.local.length === 0)
            return nothing(
              'drop',
              `${np.key} (externalTrafficPolicy Local) has no endpoint on this node: its NodePort ${port}/${proto} is dropped on every local address, ${dst} included (${config.mode} mode)`,
              { service: np.key },
            );
        }
        return nothing('none', `not intercepted: ${accepted.why}`);
      }
    }
  }

  if (!owner) return unmatched(state, packet, traits, config, nothing, where);

  const { sp, kind } = owner;
  const frontend: Frontend = { kind, address: dst, port, protocol: proto };
  const others =
    kind === 'NodePort'
      ? claimants((x) => x !== sp && x.ref.protocol === proto && x.nodePort === port && x.external !== undefined)
      : claimants(
          (x) =>
            x !== sp &&
            x.ref.protocol === proto &&
            x.port === port &&
            (x.clusterIP === dst || x.externalIPs.includes(dst) || x.loadBalancerIPs.includes(dst)),
        );
  steps.push(
    `frontend: ${frontendLabel(kind)} ${where} of Service port ${sp.key}` +
      (others.length > 0 ? ` (also claimed by ${others.join(', ')}: the first by name owns it)` : ''),
  );
  const trace = traceOf(snapshot, sp, family, config.nodeName);
  const affinity = sp.affinityTimeoutSeconds !== undefined ? { timeoutSeconds: sp.affinityTimeoutSeconds } : null;
  const withService = { service: sp.key, frontend, affinity };

  // 3. loadBalancerSourceRanges, checked before DNAT.
  if (kind === 'LoadBalancerIP' && sp.loadBalancerSourceRanges.length > 0) {
    const usable = sp.external !== undefined && sp.external.kind !== 'reject';
    if (usable || traits.sourceRangesWithoutEndpoints) {
      const nodeIPs = traits.allowFromNode === 'primaryNodeIP' ? state.nodeIPs.slice(0, 1) : state.nodeIPs;
      const allowFromNode = nodeIPs.some((ip) =>
        sp.loadBalancerSourceRanges.some((r) => cidrContains(r, { family: r.family, text: ip })),
      );
      const ranges = sp.loadBalancerSourceRanges.map(cidrText).join(', ');
      const inRange = sp.loadBalancerSourceRanges.some((r) => cidrContains(r, packet.src));
      const fromLb = allowFromNode && sp.loadBalancerIPs.includes(packet.src.text);
      if (!inRange && !fromLb)
        return nothing(
          'drop',
          `the source ${packet.src.text} is outside loadBalancerSourceRanges (${ranges}) of ${sp.key}: dropped before DNAT`,
          { ...withService },
        );
      steps.push(
        inRange
          ? `loadBalancerSourceRanges (${ranges}) admit ${packet.src.text}`
          : `loadBalancerSourceRanges admit the LB IP itself as a source: a range holds a node IP (allowFromNode)`,
      );
    }
  }

  // 4. The route: the model's decision for this service port.
  const detector = detectorVerdict(state.localDetector, packet.src, from, traits, config);
  let route: string;
  let chosen: readonly EndpointTarget[] = [];
  let excluded: readonly Exclusion[];
  let masquerade = false;
  let masqueradeReason: string;
  if (kind === 'ClusterIP') {
    const r = sp.internal;
    const policy = `internalTrafficPolicy ${r.kind === 'local' || r.kind === 'drop' ? 'Local' : 'Cluster'}`;
    route = policy;
    excluded = r.kind === 'local' || r.kind === 'drop' ? trace.localExcluded : trace.clusterExcluded;
    if (r.kind === 'reject')
      return nothing('reject', `${sp.key} has no endpoints (none ready, none serving-terminating): rejected`, {
        ...withService,
        route,
        excluded,
      });
    if (r.kind === 'drop')
      return nothing('drop', `${sp.key} has internalTrafficPolicy Local and no endpoint on this node: dropped`, {
        ...withService,
        route,
        excluded,
      });
    chosen = r.endpoints;
    if (config.masqueradeAll) {
      masquerade = true;
      masqueradeReason = 'masqueradeAll: every packet to a ClusterIP is masqueraded';
    } else if (detector.kind === 'none') {
      masqueradeReason = `${detector.why}: ClusterIP traffic is not masqueraded for its source`;
    } else if (detector.inside) {
      masqueradeReason = `the source is inside the cluster (${detector.why})`;
    } else {
      masquerade = true;
      masqueradeReason = `the source is off-cluster (${detector.why}): masqueraded so replies come back through this node`;
    }
  } else {
    const r = sp.external;
    if (!r) throw new Error(`unreachable: ${sp.key} has a ${kind} frontend but no external route`);
    if (r.kind === 'reject')
      return nothing('reject', `${sp.key} has no endpoints (none ready, none serving-terminating): rejected`, {
        ...withService,
        route: 'no endpoints',
        excluded: trace.clusterExcluded,
      });
    if (r.kind === 'cluster') {
      route = 'externalTrafficPolicy Cluster';
      chosen = r.endpoints;
      excluded = trace.clusterExcluded;
      masquerade = true;
      masqueradeReason = 'externalTrafficPolicy Cluster: traffic to external destinations is masqueraded';
    } else if (detector.kind !== 'none' && detector.inside) {
      route = 'externalTrafficPolicy Local, from a pod: short-circuited to every endpoint';
      chosen = r.cluster;
      excluded = trace.clusterExcluded;
      masqueradeReason = `pod traffic (${detector.why}) short-circuits to the Service's endpoints with its address kept`;
    } else if (from === 'node') {
      route = 'externalTrafficPolicy Local, from the node itself: every endpoint';
      chosen = r.cluster;
      excluded = trace.clusterExcluded;
      masquerade = true;
      masqueradeReason = "the node's own traffic to an external destination is masqueraded (its source is local)";
    } else {
      route = 'externalTrafficPolicy Local: endpoints on this node only, client address kept';
      excluded = trace.localExcluded;
      masqueradeReason = 'externalTrafficPolicy Local keeps the client address';
      if (r.local.length === 0)
        return nothing(
          'drop',
          `${sp.key} has externalTrafficPolicy Local and no endpoint on this node: traffic from outside is dropped`,
          { ...withService, route, excluded },
        );
      chosen = r.local;
    }
  }
  steps.push(`route: ${route}`);

  // 5. Hairpin: a packet DNATed back to its own source is masqueraded.
  const hairpinTargets = chosen.filter(
    (t) => t.ip === packet.src.text && (traits.hairpin === 'anyEndpoint' || t.isLocal),
  );
  const hairpin = hairpinTargets.length > 0;
  if (hairpin && !masquerade) {
    if (hairpinTargets.length === chosen.length) {
      masquerade = true;
      masqueradeReason = 'hairpin: the source is the endpoint it lands on';
    } else {
      masqueradeReason = `${masqueradeReason}; hairpin: masqueraded when it lands on itself (${hairpinTargets.map(endpointText).join(', ')})`;
    }
  }
  const endpoints = chosen.map(endpointText);
  steps.push(`DNAT to ${endpoints.length === 1 ? endpoints[0] : `one of ${endpoints.join(', ')}`}`);
  steps.push(`masquerade: ${masquerade ? 'yes' : 'no'} — ${masqueradeReason}`);
  if (affinity) steps.push(`ClientIP affinity: ${affinity.timeoutSeconds} s (one endpoint per client address)`);
  return ordered({
    ...base,
    verdict: 'dnat',
    ...withService,
    route,
    endpoints,
    excluded,
    masquerade,
    masqueradeReason,
    hairpin,
    reason: `${frontendLabel(kind)} ${where} of ${sp.key}; ${route}: DNAT to ${endpoints.length} endpoint(s)`,
    steps,
  });
}

/** The fields in the documented order (JSON output reads top-down: the verdict first). */
function ordered(e: Explanation): Explanation {
  return {
    verdict: e.verdict,
    service: e.service,
    reason: e.reason,
    frontend: e.frontend,
    route: e.route,
    endpoints: e.endpoints,
    excluded: e.excluded,
    masquerade: e.masquerade,
    masqueradeReason: e.masqueradeReason,
    hairpin: e.hairpin,
    affinity: e.affinity,
    mode: e.mode,
    family: e.family,
    packet: e.packet,
    steps: e.steps,
  };
}

function frontendLabel(kind: FrontendKind): string {
  return kind === 'LoadBalancerIP' ? 'load-balancer IP' : kind === 'ExternalIP' ? 'externalIP' : kind;
}

/** The trace of the service port `sp` (the same decision, with its reasons). */
function traceOf(snapshot: ClusterSnapshot, sp: ServicePortState, family: Family, nodeName: string): ServicePortTrace {
  const key = `${sp.ref.namespace}/${sp.ref.name}`;
  const service = snapshot.services.find((s) => serviceKey(s) === key) as Service;
  const slices = snapshot.endpointSlices.filter((s) => `${s.namespace}/${s.serviceName}` === key);
  const traces = traceServicePortsOf(service, slices, family, nodeName, snapshot.node);
  const t = traces.find((x) => x.state.key === sp.key);
  if (!t) throw new Error(`unreachable: no trace for ${sp.key}`);
  return t;
}

/** When the mode puts Service addresses on an interface of the node and `ip` is one: which, for a person. */
function serviceAddressOf(state: NodeState, traits: ModeTraits, ip: IpAddress): string | undefined {
  if (traits.serviceAddressesOn === undefined) return undefined;
  const sp = state.servicePorts.find(
    (x) => x.clusterIP === ip.text || x.externalIPs.includes(ip.text) || x.loadBalancerIPs.includes(ip.text),
  );
  return (
    sp && `${ip.text} is an address of ${sp.ref.namespace}/${sp.ref.name} on this node's ${traits.serviceAddressesOn}`
  );
}

function origin(
  packet: Packet,
  config: ExplainConfig,
  snapshot: ClusterSnapshot,
  isLocal: (ip: IpAddress) => boolean,
  onNode: string | undefined,
): { from: PacketOrigin; fromReason: string } {
  if (packet.from) return { from: packet.from, fromReason: 'given with --from' };
  if (isLocal(packet.src)) return { from: 'node', fromReason: `${packet.src.text} is an address of this node` };
  if (onNode) return { from: 'node', fromReason: onNode };
  const podRanges = [...config.clusterCIDRs, ...(snapshot.node?.podCIDRs ?? [])];
  const range = podRanges.find((c) => cidrContains(c, packet.src));
  if (range) return { from: 'pod', fromReason: `${packet.src.text} is in the pod range ${cidrText(range)}` };
  return { from: 'outside', fromReason: `${packet.src.text} is neither a node address nor in a pod range` };
}

type DetectorVerdict =
  | { readonly kind: 'none'; readonly why: string }
  | { readonly kind: 'some'; readonly inside: boolean; readonly why: string };

/** Whether the rules' local-traffic detector sees the packet as coming from a pod. */
function detectorVerdict(
  d: LocalTrafficDetector,
  src: IpAddress,
  from: PacketOrigin,
  traits: ModeTraits,
  config: ExplainConfig,
): DetectorVerdict {
  const mode = `detect-local-mode ${config.detectLocal.mode}`;
  switch (d.kind) {
    case 'none':
      return { kind: 'none', why: `${mode}: no local-traffic detector` };
    case 'cidrs': {
      const cidrs = traits.detectorCidrs === 'first' ? d.cidrs.slice(0, 1) : d.cidrs;
      const hit = cidrs.find((c) => cidrContains(c, src));
      return {
        kind: 'some',
        inside: hit !== undefined,
        why: `${mode}: ${src.text} is ${hit ? 'in' : 'not in'} ${cidrs.map(cidrText).join(', ')}`,
      };
    }
    case 'bridgeInterface':
      return {
        kind: 'some',
        inside: from === 'pod',
        why: `${mode}: ${from === 'pod' ? 'a pod' : 'this packet does not'} arrive${from === 'pod' ? 's' : ''} on ${d.interfaceName}`,
      };
    case 'interfacePrefix':
      return {
        kind: 'some',
        inside: from === 'pod',
        why: `${mode}: ${from === 'pod' ? 'a pod' : 'this packet does not'} arrive${from === 'pod' ? 's' : ''} on an interface named ${d.prefix}*`,
      };
  }
}

/** Whether NodePorts answer on `dst` in this mode with this configuration. */
function nodePortAccepts(
  dst: IpAddress,
  state: NodeState,
  config: ExplainConfig,
  traits: ModeTraits,
  isLocal: (ip: IpAddress) => boolean,
  isLoopback: (ip: IpAddress) => boolean,
): { ok: boolean; why: string } {
  const d = state.nodePortDestinations;
  const cidrs = d.kind === 'cidrs' ? d.cidrs : [];
  const allLocal = d.kind === 'allLocal' || cidrs.some((c) => c.prefixLength === 0);
  const inDestinations = allLocal || cidrs.some((c) => cidrContains(c, dst));
  const addresses = allLocal
    ? 'every local address'
    : cidrs.length > 0
      ? cidrs.map(cidrText).join(', ')
      : 'no address (no Node object: no primary IP)';
  const setting =
    config.nodePortAddresses.kind === 'primary'
      ? `nodePortAddresses primary: ${addresses}`
      : `nodePortAddresses: ${addresses}`;
  if (!isLocal(dst))
    return {
      ok: false,
      why: `${dst.text} is not an address of this node (its Node object's or --local-addresses), so no NodePort answers there`,
    };
  if (isLoopback(dst)) {
    if (traits.loopbackNodePorts === 'never')
      return { ok: false, why: `NodePorts never answer on loopback in ${config.mode} mode (CVE-2020-8558)` };
    const loopbackAllowed = allLocal || cidrs.some((c) => cidrContains(c, { family: 'ipv4', text: '127.0.0.1' }));
    const on = dst.family === 'ipv4' && loopbackAllowed && config.iptables.localhostNodePorts;
    if (!on)
      return {
        ok: false,
        why:
          dst.family === 'ipv6'
            ? 'NodePorts do not answer on ::1 (localhostNodePorts is IPv4 only)'
            : !config.iptables.localhostNodePorts
              ? 'NodePorts do not answer on 127.0.0.0/8: iptables.localhostNodePorts is off'
              : `NodePorts do not answer on loopback: ${setting} does not include 127.0.0.1`,
      };
    if (!inDestinations) return { ok: false, why: `${dst.text} is not among ${setting}` };
    return { ok: true, why: `NodePorts answer on ${dst.text}: iptables.localhostNodePorts (route_localnet)` };
  }
  if (!inDestinations) return { ok: false, why: `NodePorts answer on ${setting}, not on ${dst.text}` };
  return { ok: true, why: `NodePorts answer on ${dst.text} (${setting})` };
}

/** No frontend matched: what the mode does with the rest of the ServiceCIDR, and why nothing matched. */
function unmatched(
  state: NodeState,
  packet: Packet,
  traits: ModeTraits,
  config: ExplainConfig,
  nothing: (verdict: Verdict, reason: string) => Explanation,
  where: string,
): Explanation {
  const dst = packet.dst.text;
  const ofIp = state.servicePorts.filter((sp) => sp.clusterIP === dst);
  if (ofIp.length > 0) {
    const svc = `${ofIp[0]?.ref.namespace}/${ofIp[0]?.ref.name}`;
    const ports = ofIp.map((sp) => `${sp.port}/${sp.ref.protocol}`).join(', ');
    const what = `${dst} is the ClusterIP of ${svc} (ports ${ports}), which has no ${packet.protocol} port ${packet.dstPort}`;
    return traits.unusedClusterIpPort === 'reject'
      ? nothing('reject', `${what}: rejected (${config.mode} mode)`)
      : nothing('none', `${what}: not intercepted in ${config.mode} mode (no rule; routed on, as upstream)`);
  }
  const other = state.servicePorts.find((sp) => sp.externalIPs.includes(dst) || sp.loadBalancerIPs.includes(dst));
  if (other)
    return nothing(
      'none',
      `${dst} is an externalIP or load-balancer IP of ${other.ref.namespace}/${other.ref.name}, which has no ${packet.protocol} port ${packet.dstPort}: not intercepted`,
    );
  const cidr = state.serviceCIDRs.find((c) => cidrContains(c, packet.dst));
  if (cidr) {
    const what = `${dst} is in the ServiceCIDR ${cidrText(cidr)} but no Service (that kproxy serves) uses it`;
    return traits.unallocatedServiceIp === 'drop'
      ? nothing('drop', `${what}: dropped (${config.mode} mode)`)
      : nothing('none', `${what}: not intercepted in ${config.mode} mode (no rule; routed on, as upstream)`);
  }
  return nothing('none', `no Service frontend is ${where}: kproxy does not touch this packet`);
}
