/**
 * @module explain/state-diff
 * `kproxy diff --manifests BEFORE --against AFTER`: what a change of cluster objects changes in this
 * node's desired state, each difference attributed to the objects and fields that caused it.
 * Computed from the two snapshots (which object fields differ: model/object-changes.ts) and the two
 * node states (which service ports and family contexts differ). Pure.
 */
import { isDeepStrictEqual } from 'node:util';
import type { ClusterSnapshot, Family } from '../model/cluster.ts';
import { cidrText } from '../model/ip.ts';
import type {
  EndpointTarget,
  ExternalRoute,
  InternalRoute,
  LocalTrafficDetector,
  NodePortDestinations,
  NodeState,
  ServicePortState,
} from '../model/node-state.ts';
import { type ObjectChange, objectChangeLines, objectChanges } from '../model/object-changes.ts';

export interface DesiredSide {
  readonly snapshot: ClusterSnapshot;
  readonly states: readonly NodeState[];
}

export interface PortDiff {
  /** `namespace/name:portName`. */
  readonly key: string;
  readonly family: Family;
  readonly change: 'added' | 'removed' | 'modified';
  /** What differs in the decision (`internal endpoints −10.1.2.3:8080`, `port 80 → 81`). */
  readonly differences: readonly string[];
  /** The object field changes behind it (`EndpointSlice ns/web-abc: endpoint 10.1.2.3 ready true → false`). */
  readonly causes: readonly string[];
}

export interface ContextDiff {
  readonly family: Family;
  readonly differences: readonly string[];
  readonly causes: readonly string[];
}

export interface StateDiff {
  readonly ports: readonly PortDiff[];
  readonly contexts: readonly ContextDiff[];
  /** Every object that differs, with its fields. */
  readonly objects: readonly ObjectChange[];
  /** Object changes that change nothing in this node's rules (another family, a not-ready endpoint that stays out, …). */
  readonly withoutEffect: readonly string[];
}

const familyName = (f: Family) => (f === 'ipv4' ? 'IPv4' : 'IPv6');
const ep = (t: EndpointTarget) => `${t.ip.includes(':') ? `[${t.ip}]` : t.ip}:${t.port}${t.isLocal ? ' (local)' : ''}`;

export function diffDesired(before: DesiredSide, after: DesiredSide): StateDiff {
  const objects = objectChanges(before.snapshot, after.snapshot);
  const used = new Set<ObjectChange>();
  const serviceCauses = (service: string): string[] => {
    const own = objects.filter((o) => o.service === service);
    // A Service's ports also depend on this Node (topology zone, which endpoints are local).
    const chosen = own.length > 0 ? own : objects.filter((o) => o.kind === 'Node');
    for (const o of chosen) used.add(o);
    return chosen.flatMap(objectChangeLines);
  };
  const ports: PortDiff[] = [];
  const contexts: ContextDiff[] = [];
  for (const family of ['ipv4', 'ipv6'] as const) {
    const a = before.states.find((s) => s.family === family);
    const b = after.states.find((s) => s.family === family);
    if (!a || !b) continue;
    const ctx = contextDifferences(a, b);
    if (ctx.length > 0) {
      const chosen = objects.filter((o) => o.kind === 'Node' || o.kind === 'ServiceCIDR');
      for (const o of chosen) used.add(o);
      contexts.push({
        family,
        differences: ctx,
        causes: chosen.length > 0 ? chosen.flatMap(objectChangeLines) : ['the configuration (flags or --config)'],
      });
    }
    const pa = new Map(a.servicePorts.map((sp) => [sp.key, sp]));
    const pb = new Map(b.servicePorts.map((sp) => [sp.key, sp]));
    for (const key of [...new Set([...pa.keys(), ...pb.keys()])].sort()) {
      const x = pa.get(key);
      const y = pb.get(key);
      if (x && y && isDeepStrictEqual(x, y)) continue;
      const sp = (y ?? x) as ServicePortState;
      const differences = !x ? [`added: ${summary(sp)}`] : !y ? [`removed (was ${summary(x)})`] : portDifferences(x, y);
      ports.push({
        key,
        family,
        change: !x ? 'added' : !y ? 'removed' : 'modified',
        differences,
        causes: serviceCauses(`${sp.ref.namespace}/${sp.ref.name}`),
      });
    }
  }
  const withoutEffect = objects.filter((o) => !used.has(o)).flatMap(objectChangeLines);
  return { ports, contexts, objects, withoutEffect };
}

export function stateDiffText(d: StateDiff): string {
  const out: string[] = [];
  for (const c of d.contexts) {
    out.push(`${familyName(c.family)} node context:`);
    for (const x of c.differences) out.push(`  ${x}`);
    for (const x of c.causes) out.push(`  because ${x}`);
  }
  for (const p of d.ports) {
    out.push(`Service port ${p.key} (${familyName(p.family)}):`);
    for (const x of p.differences) out.push(`  ${x}`);
    for (const x of p.causes) out.push(`  because ${x}`);
  }
  if (d.withoutEffect.length > 0) {
    out.push('Changed without an effect on this node’s rules:');
    for (const x of d.withoutEffect) out.push(`  ${x}`);
  }
  if (out.length === 0) out.push('No differences.');
  return `${out.join('\n')}\n`;
}

function summary(sp: ServicePortState): string {
  const frontends = [
    `ClusterIP ${sp.clusterIP}:${sp.port}/${sp.ref.protocol}`,
    ...(sp.nodePort !== undefined ? [`NodePort ${sp.nodePort}`] : []),
    ...sp.externalIPs.map((ip) => `externalIP ${ip}`),
    ...sp.loadBalancerIPs.map((ip) => `LB IP ${ip}`),
  ];
  return `${frontends.join(', ')}; internal ${internalText(sp.internal)}${sp.external ? `; external ${externalText(sp.external)}` : ''}`;
}

function internalText(r: InternalRoute): string {
  return r.kind === 'cluster' || r.kind === 'local' ? `${r.kind} → ${r.endpoints.map(ep).join(', ')}` : r.kind;
}

function externalText(r: ExternalRoute): string {
  if (r.kind === 'reject') return 'reject';
  if (r.kind === 'cluster') return `cluster → ${r.endpoints.map(ep).join(', ')}`;
  return `local → ${r.local.length > 0 ? r.local.map(ep).join(', ') : 'none here (drop)'}`;
}

/** `+a −b` between two endpoint lists; empty when they hold the same endpoints. */
function endpointDelta(a: readonly EndpointTarget[], b: readonly EndpointTarget[]): string {
  const ta = new Set(a.map(ep));
  const tb = new Set(b.map(ep));
  const added = [...tb].filter((t) => !ta.has(t)).map((t) => `+${t}`);
  const removed = [...ta].filter((t) => !tb.has(t)).map((t) => `−${t}`);
  return [...added, ...removed].join(' ');
}

function scalar(out: string[], what: string, a: unknown, b: unknown): void {
  if (isDeepStrictEqual(a, b)) return;
  const show = (v: unknown) => (v === undefined ? '(none)' : Array.isArray(v) ? `[${v.join(', ')}]` : String(v));
  out.push(`${what} ${show(a)} → ${show(b)}`);
}

function portDifferences(a: ServicePortState, b: ServicePortState): string[] {
  const out: string[] = [];
  scalar(out, 'ClusterIP', a.clusterIP, b.clusterIP);
  scalar(out, 'port', a.port, b.port);
  scalar(out, 'NodePort', a.nodePort, b.nodePort);
  scalar(out, 'externalIPs', a.externalIPs, b.externalIPs);
  scalar(out, 'load-balancer IPs', a.loadBalancerIPs, b.loadBalancerIPs);
  scalar(
    out,
    'loadBalancerSourceRanges',
    a.loadBalancerSourceRanges.map(cidrText),
    b.loadBalancerSourceRanges.map(cidrText),
  );
  scalar(out, 'ClientIP affinity (s)', a.affinityTimeoutSeconds, b.affinityTimeoutSeconds);
  scalar(out, 'healthCheckNodePort', a.healthCheckNodePort, b.healthCheckNodePort);
  scalar(out, 'IPVS scheduler', a.ipvsScheduler, b.ipvsScheduler);
  const ia = a.internal;
  const ib = b.internal;
  if (!isDeepStrictEqual(ia, ib)) {
    if (
      ia.kind === ib.kind &&
      (ia.kind === 'cluster' || ia.kind === 'local') &&
      (ib.kind === 'cluster' || ib.kind === 'local')
    )
      out.push(`internal endpoints (${ia.kind}) ${endpointDelta(ia.endpoints, ib.endpoints) || 'reordered'}`);
    else out.push(`internal route ${internalText(ia)} ⇒ ${internalText(ib)}`);
  }
  const ea = a.external;
  const eb = b.external;
  if (!isDeepStrictEqual(ea, eb)) {
    if (ea?.kind === 'cluster' && eb?.kind === 'cluster')
      out.push(`external endpoints (cluster) ${endpointDelta(ea.endpoints, eb.endpoints) || 'reordered'}`);
    else if (ea?.kind === 'local' && eb?.kind === 'local') {
      const local = endpointDelta(ea.local, eb.local);
      const cluster = endpointDelta(ea.cluster, eb.cluster);
      if (local) out.push(`external endpoints on this node (Local) ${local}`);
      if (cluster) out.push(`external endpoints for pods and the node (Local) ${cluster}`);
    } else out.push(`external route ${ea ? externalText(ea) : '(none)'} ⇒ ${eb ? externalText(eb) : '(none)'}`);
  }
  const serving = endpointDelta(a.servingEndpoints, b.servingEndpoints);
  if (serving) out.push(`serving endpoints (kept by conntrack cleanup) ${serving}`);
  scalar(out, 'ready local endpoints (health checks)', a.localEndpointCount, b.localEndpointCount);
  return out;
}

function contextDifferences(a: NodeState, b: NodeState): string[] {
  const out: string[] = [];
  scalar(out, 'node IPs', a.nodeIPs, b.nodeIPs);
  scalar(out, 'ServiceCIDRs', a.serviceCIDRs.map(cidrText), b.serviceCIDRs.map(cidrText));
  scalar(out, 'local-traffic detector', detectorText(a.localDetector), detectorText(b.localDetector));
  scalar(out, 'NodePort addresses', destinationsText(a.nodePortDestinations), destinationsText(b.nodePortDestinations));
  scalar(out, 'masqueradeAll', a.masqueradeAll, b.masqueradeAll);
  scalar(out, 'masquerade mark', a.masqueradeMark, b.masqueradeMark);
  return out;
}

function detectorText(d: LocalTrafficDetector): string {
  switch (d.kind) {
    case 'none':
      return 'none';
    case 'cidrs':
      return `sources in ${d.cidrs.map(cidrText).join(', ')}`;
    case 'bridgeInterface':
      return `arriving on ${d.interfaceName}`;
    case 'interfacePrefix':
      return `arriving on ${d.prefix}*`;
  }
}

function destinationsText(d: NodePortDestinations): string {
  return d.kind === 'allLocal' ? 'every local address' : d.cidrs.map(cidrText).join(', ') || '(none)';
}
