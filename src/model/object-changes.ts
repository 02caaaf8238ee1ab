/**
 * @module model/object-changes
 * Which cluster objects differ between two snapshots, and which of their fields, named by the
 * object's API field path (`Service default/web: spec.ports[0].port 80 → 81`,
 * `EndpointSlice default/web-abc: endpoint 10.1.2.3 ready true → false`). Used by `kproxy diff
 * --against` (what caused each rule change) and by the audit log (what a sync applied). Pure;
 * objects that are the same reference are skipped without a look inside, so comparing snapshots
 * that share their unchanged objects costs the change.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Cidr, ClusterSnapshot, Endpoint, EndpointSlice, IpAddress, Node, Service } from './cluster.ts';

export type ObjectKind = 'Service' | 'EndpointSlice' | 'Node' | 'ServiceCIDR';

export interface FieldChange {
  /** The API field path, or `endpoint IP` / `endpoint IP ready` for an EndpointSlice's endpoints. */
  readonly path: string;
  /** Absent: the field (or element) did not exist before / does not exist after. */
  readonly before?: string;
  readonly after?: string;
}

export interface ObjectChange {
  readonly kind: ObjectKind;
  /** `namespace/name` (Service, EndpointSlice) or `name` (Node, ServiceCIDR). */
  readonly name: string;
  readonly change: 'added' | 'removed' | 'modified';
  /** The Service (`namespace/name`) whose rules a Service or EndpointSlice change can affect. */
  readonly service?: string;
  readonly fields: readonly FieldChange[];
}

export interface ObjectChangeScope {
  /** Only these Services and their EndpointSlices; absent: all of them. */
  readonly services?: ReadonlySet<string>;
  /** Compare this node's Node object (default true). */
  readonly node?: boolean;
  /** Compare ServiceCIDRs (default true). */
  readonly serviceCIDRs?: boolean;
}

/** `EndpointSlice default/web-abc: endpoint 10.1.2.3 ready true → false`. */
export function fieldChangeText(c: FieldChange): string {
  if (c.before === undefined) return `${c.path} added${c.after ? ` (${c.after})` : ''}`;
  if (c.after === undefined) return `${c.path} removed${c.before ? ` (was ${c.before})` : ''}`;
  return `${c.path} ${c.before} → ${c.after}`;
}

export function objectChangeLines(c: ObjectChange): string[] {
  const who = `${c.kind} ${c.name}`;
  if (c.change === 'added') return [`${who}: added`, ...c.fields.map((f) => `${who}: ${fieldChangeText(f)}`)];
  if (c.change === 'removed') return [`${who}: removed`];
  return c.fields.map((f) => `${who}: ${fieldChangeText(f)}`);
}

export function objectChanges(
  before: ClusterSnapshot,
  after: ClusterSnapshot,
  scope: ObjectChangeScope = {},
): ObjectChange[] {
  const out: ObjectChange[] = [];
  const inScope = (service: string) => scope.services === undefined || scope.services.has(service);
  const key = (o: { namespace: string; name: string }) => `${o.namespace}/${o.name}`;
  const sliceService = (s: EndpointSlice) => `${s.namespace}/${s.serviceName}`;

  const services = pairs(
    before.services.filter((s) => inScope(key(s))),
    after.services.filter((s) => inScope(key(s))),
    key,
  );
  for (const [name, a, b] of services) {
    if (a === b) continue;
    const fields = a && b ? serviceFields(a, b) : [];
    if (a && b && fields.length === 0) continue;
    out.push({ kind: 'Service', name, change: change(a, b), service: name, fields });
  }
  const slices = pairs(
    before.endpointSlices.filter((s) => inScope(sliceService(s))),
    after.endpointSlices.filter((s) => inScope(sliceService(s))),
    key,
  );
  for (const [name, a, b] of slices) {
    if (a === b) continue;
    const fields = a && b ? sliceFields(a, b) : [];
    if (a && b && fields.length === 0) continue;
    out.push({
      kind: 'EndpointSlice',
      name,
      change: change(a, b),
      service: sliceService((b ?? a) as EndpointSlice),
      fields: a || !b ? fields : sliceSummary(b),
    });
  }
  if (scope.node !== false && before.node !== after.node) {
    const a = before.node;
    const b = after.node;
    const fields = a && b ? nodeFields(a, b) : [];
    if (!(a && b && fields.length === 0))
      out.push({ kind: 'Node', name: (b ?? a)?.name ?? '', change: change(a, b), fields });
  }
  if (scope.serviceCIDRs !== false) {
    for (const [name, a, b] of pairs(before.serviceCIDRs, after.serviceCIDRs, (s) => s.name)) {
      if (a === b || isDeepStrictEqual(a, b)) continue;
      const fields = a && b ? [list('spec.cidrs', a.cidrs.map(cidrText), b.cidrs.map(cidrText))].flat() : [];
      out.push({ kind: 'ServiceCIDR', name, change: change(a, b), fields });
    }
  }
  return out;
}

function change(a: unknown, b: unknown): ObjectChange['change'] {
  return a === undefined ? 'added' : b === undefined ? 'removed' : 'modified';
}

/** Objects of two lists matched by key: [key, before, after], in key order. */
function pairs<T>(a: readonly T[], b: readonly T[], key: (t: T) => string): [string, T | undefined, T | undefined][] {
  const ma = new Map(a.map((x) => [key(x), x]));
  const mb = new Map(b.map((x) => [key(x), x]));
  const keys = [...new Set([...ma.keys(), ...mb.keys()])].sort();
  return keys.map((k) => [k, ma.get(k), mb.get(k)]);
}

const ipText = (ip: IpAddress) => ip.text;
const cidrText = (c: Cidr) => `${c.address}/${c.prefixLength}`;
const show = (v: unknown): string | undefined =>
  v === undefined ? undefined : Array.isArray(v) ? (v.length === 0 ? '[]' : v.join(', ')) : String(v);

function scalar(path: string, a: unknown, b: unknown): FieldChange[] {
  if (isDeepStrictEqual(a, b)) return [];
  const before = show(a);
  const after = show(b);
  return [{ path, ...(before !== undefined ? { before } : {}), ...(after !== undefined ? { after } : {}) }];
}

function list(path: string, a: readonly string[], b: readonly string[]): FieldChange[] {
  return isDeepStrictEqual(a, b) ? [] : [{ path, before: show(a) as string, after: show(b) as string }];
}

function serviceFields(a: Service, b: Service): FieldChange[] {
  const out: FieldChange[] = [
    ...scalar('spec.type', a.type, b.type),
    ...list('spec.clusterIPs', a.clusterIPs.map(ipText), b.clusterIPs.map(ipText)),
  ];
  const n = Math.max(a.ports.length, b.ports.length);
  for (let i = 0; i < n; i++) {
    const pa = a.ports[i];
    const pb = b.ports[i];
    const path = `spec.ports[${i}]`;
    const text = (p: NonNullable<typeof pa>) =>
      `${p.name || '(unnamed)'} ${p.protocol} ${p.port}${p.nodePort !== undefined ? ` nodePort ${p.nodePort}` : ''}`;
    if (!pa || !pb) {
      out.push(pa ? { path, before: text(pa) } : { path, after: text(pb as NonNullable<typeof pb>) });
      continue;
    }
    out.push(
      ...scalar(`${path}.name`, pa.name, pb.name),
      ...scalar(`${path}.protocol`, pa.protocol, pb.protocol),
      ...scalar(`${path}.port`, pa.port, pb.port),
      ...scalar(`${path}.nodePort`, pa.nodePort, pb.nodePort),
    );
  }
  out.push(
    ...list('spec.externalIPs', a.externalIPs.map(ipText), b.externalIPs.map(ipText)),
    ...list('status.loadBalancer.ingress', a.loadBalancerIPs.map(ipText), b.loadBalancerIPs.map(ipText)),
    ...list(
      'spec.loadBalancerSourceRanges',
      a.loadBalancerSourceRanges.map(cidrText),
      b.loadBalancerSourceRanges.map(cidrText),
    ),
    ...scalar('spec.externalTrafficPolicy', a.externalTrafficPolicy, b.externalTrafficPolicy),
    ...scalar('spec.internalTrafficPolicy', a.internalTrafficPolicy, b.internalTrafficPolicy),
  );
  if (a.sessionAffinityTimeoutSeconds !== b.sessionAffinityTimeoutSeconds) {
    const affinity = (s: number | undefined) => (s === undefined ? 'None' : `ClientIP (${s} s)`);
    out.push({
      path: 'spec.sessionAffinity',
      before: affinity(a.sessionAffinityTimeoutSeconds),
      after: affinity(b.sessionAffinityTimeoutSeconds),
    });
  }
  out.push(
    ...scalar('spec.healthCheckNodePort', a.healthCheckNodePort, b.healthCheckNodePort),
    ...scalar('metadata.annotations[kproxy.io/ipvs-scheduler]', a.ipvsScheduler, b.ipvsScheduler),
  );
  return out;
}

const conditions = (e: Endpoint) =>
  [
    e.conditions.ready ? 'ready' : 'not ready',
    ...(e.conditions.serving ? ['serving'] : []),
    ...(e.conditions.terminating ? ['terminating'] : []),
    ...(e.nodeName ? [`node ${e.nodeName}`] : []),
  ].join(', ');

function sliceSummary(s: EndpointSlice): FieldChange[] {
  return s.endpoints.map((e) => ({ path: `endpoint ${e.address.text}`, after: conditions(e) }));
}

function sliceFields(a: EndpointSlice, b: EndpointSlice): FieldChange[] {
  const out: FieldChange[] = [
    ...scalar('metadata.labels[kubernetes.io/service-name]', a.serviceName, b.serviceName),
    ...scalar('addressType', a.addressType, b.addressType),
  ];
  for (const [name, pa, pb] of pairs(a.ports, b.ports, (p) => `${p.name || '(unnamed)'}/${p.protocol}`)) {
    if (!pa || !pb)
      out.push(
        pa ? { path: `ports[${name}]`, before: `${pa.port}` } : { path: `ports[${name}]`, after: `${pb?.port}` },
      );
    else out.push(...scalar(`ports[${name}].port`, pa.port, pb.port));
  }
  for (const [ip, ea, eb] of pairs(a.endpoints, b.endpoints, (e) => e.address.text)) {
    const path = `endpoint ${ip}`;
    if (!ea || !eb) {
      out.push(ea ? { path, before: conditions(ea) } : { path, after: conditions(eb as Endpoint) });
      continue;
    }
    if (ea === eb) continue;
    out.push(
      ...scalar(`${path} ready`, ea.conditions.ready, eb.conditions.ready),
      ...scalar(`${path} serving`, ea.conditions.serving, eb.conditions.serving),
      ...scalar(`${path} terminating`, ea.conditions.terminating, eb.conditions.terminating),
      ...scalar(`${path} nodeName`, ea.nodeName, eb.nodeName),
      ...scalar(`${path} zone`, ea.zone, eb.zone),
      ...scalar(`${path} hints.forZones`, ea.hints?.forZones, eb.hints?.forZones),
      ...scalar(`${path} hints.forNodes`, ea.hints?.forNodes, eb.hints?.forNodes),
    );
  }
  return out;
}

function nodeFields(a: Node, b: Node): FieldChange[] {
  const out: FieldChange[] = [];
  for (const label of [...new Set([...Object.keys(a.labels), ...Object.keys(b.labels)])].sort())
    out.push(...scalar(`metadata.labels[${label}]`, a.labels[label], b.labels[label]));
  out.push(
    ...list('status.addresses', a.addresses.map(ipText), b.addresses.map(ipText)),
    ...list('spec.podCIDRs', a.podCIDRs.map(cidrText), b.podCIDRs.map(cidrText)),
    ...scalar('being removed', a.beingRemoved, b.beingRemoved),
  );
  return out;
}
