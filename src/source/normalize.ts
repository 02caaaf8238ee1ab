/**
 * @module source/normalize
 * Untrusted Kubernetes objects (any JSON shape) → validated model objects. Pure. `normalizeObject`
 * validates one object (the API source calls it per watch event, so a sync never re-validates the
 * cluster); `buildSnapshot` is a loop over it for a whole list (the manifest source).
 *
 * Policy: a malformed *required* piece (identity, ClusterIPs, a port, a list over its limit, any
 * loadBalancerSourceRange) skips the whole object with a problem; a malformed element of an
 * *optional* list (an externalIP, an LB ingress IP, an endpoint, an endpoint port) is dropped with
 * a problem and the rest is kept. Objects upstream kube-proxy ignores on purpose (headless,
 * ExternalName, another proxy's Services, FQDN slices, other Nodes, unknown kinds) are skipped
 * silently. Problems quote bad values through `quote()`: one line of printable ASCII, truncated.
 */
import type {
  Cidr,
  ClusterSnapshot,
  Endpoint,
  EndpointConditions,
  EndpointPort,
  EndpointSlice,
  IpAddress,
  Node,
  Protocol,
  Service,
  ServiceCIDR,
  ServicePortSpec,
  TrafficPolicy,
} from '../model/cluster.ts';
import { cidrContains, parseCidr, parseIp } from '../model/ip.ts';
import {
  IPVS_SCHEDULER_ANNOTATION,
  IPVS_SCHEDULERS,
  isIpvsScheduler,
  type IpvsScheduler,
} from '../model/ipvs-schedulers.ts';
import type { Problem } from '../util/problems.ts';
import { appendAll } from '../util/arrays.ts';

/** The cluster autoscaler's taint on a Node it is about to remove. */
export const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';
export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const TRIGGER_TIME_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';
export const DEFAULT_SESSION_AFFINITY_TIMEOUT_SECONDS = 10800;

/** List sizes above these skip the whole object. Most are the API server's own limits. */
export const LIMITS = {
  clusterIPs: 2,
  servicePorts: 100,
  externalIPs: 100,
  loadBalancerSourceRanges: 1000,
  loadBalancerIngress: 100,
  sliceEndpoints: 1000,
  slicePorts: 100,
  endpointAddresses: 100,
  endpointHints: 8,
  nodeAddresses: 100,
  podCIDRs: 2,
  nodeTaints: 1000,
  serviceCIDRs: 2,
} as const;

// ---------------------------------------------------------------------------------------------
// Validators (Kubernetes `apimachinery/pkg/util/validation` rules)

const LABEL = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
const DNS1123_LABEL = new RegExp(`^${LABEL}$`);
const DNS1123_SUBDOMAIN = new RegExp(`^${LABEL}(\\.${LABEL})*$`);
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** Lower-case alphanumerics and '-', starting and ending alphanumeric, at most 63 (namespaces). */
export function isDns1123Label(s: string): boolean {
  return s.length <= 63 && DNS1123_LABEL.test(s);
}

/** Dot-separated DNS-1123 labels, at most 253 (EndpointSlice, Node, ServiceCIDR names). */
export function isDns1123Subdomain(s: string): boolean {
  return s.length <= 253 && DNS1123_SUBDOMAIN.test(s);
}

/** A DNS-1123 label that starts with a letter (Service names). */
export function isDns1035Label(s: string): boolean {
  return s.length <= 63 && DNS1035_LABEL.test(s);
}

/** IANA_SVC_NAME (port names): 1-15 of [-a-z0-9], at least one letter, no leading/trailing/double '-'. */
export function isIanaSvcName(s: string): boolean {
  return (
    s.length >= 1 &&
    s.length <= 15 &&
    /^[-a-z0-9]+$/.test(s) &&
    /[a-z]/.test(s) &&
    !s.startsWith('-') &&
    !s.endsWith('-') &&
    !s.includes('--')
  );
}

/** A label value (zones): empty, or ≤63 of [-A-Za-z0-9_.] starting and ending alphanumeric. */
export function isLabelValue(s: string): boolean {
  return s.length <= 63 && LABEL_VALUE.test(s);
}

/** A value for a problem message: JSON, non-printable and non-ASCII escaped, at most ~80 chars. */
export function quote(value: unknown, max = 80): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = `<unprintable ${Array.isArray(value) ? 'array' : typeof value}>`;
  }
  text = text.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return text.length > max ? `${text.slice(0, max)}...` : text;
}

/**
 * Addresses the API server refuses for externalIPs and endpoints (unspecified, loopback,
 * link-local unicast and multicast) plus IPv4-mapped IPv6, which families would disagree on.
 * A Service claiming 127.0.0.1 or 169.254.169.254 would otherwise capture node-local traffic.
 */
const SPECIAL_RANGES: readonly Cidr[] = [
  '0.0.0.0/32',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '224.0.0.0/24',
  '::/128',
  '::1/128',
  'fe80::/10',
  'ff02::/16',
  '::ffff:0:0/96',
].map((text) => {
  const c = parseCidr(text);
  if (!c) throw new Error(`bad built-in CIDR ${text}`);
  return c;
});

function isSpecialIp(ip: IpAddress): boolean {
  return SPECIAL_RANGES.some((c) => cidrContains(c, ip));
}

// ---------------------------------------------------------------------------------------------
// Field reader: a value of the untrusted object with the path it came from.

/** A malformed piece: thrown by readers, caught per object (skip it) or per list element (drop it). */
class Invalid extends Error {
  readonly path: string;
  constructor(path: string, message: string) {
    super(message);
    this.path = path;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

class Field {
  readonly value: unknown;
  /** Where the value sits: the parent and the key or index under it (the root has neither). */
  readonly #parent: Field | undefined;
  readonly #step: string | number;
  /** Made on demand: most fields are valid, and only problems need their path. */
  #path: string | undefined;

  constructor(value: unknown, parent?: Field, step: string | number = '') {
    this.value = value;
    this.#parent = parent;
    this.#step = step;
  }

  get path(): string {
    if (this.#path === undefined) {
      const base = this.#parent?.path ?? '';
      const step = this.#step;
      if (typeof step === 'number') this.#path = `${base}[${step}]`;
      else if (this.#parent === undefined) this.#path = step;
      else this.#path = PLAIN_KEY.test(step) ? `${base}${base ? '.' : ''}${step}` : `${base}[${JSON.stringify(step)}]`;
    }
    return this.#path;
  }

  /** Absent: missing or null (JSON null and a missing key mean the same to the API). */
  get absent(): boolean {
    return this.value === undefined || this.value === null;
  }

  /** Absent, or the empty string, which Kubernetes defaulting treats as unset. */
  get unset(): boolean {
    return this.absent || this.value === '';
  }

  invalid(message: string): Invalid {
    return new Invalid(this.path, message);
  }

  /** A member; own properties only. Reading from an absent object gives absent; from a non-object, an error. */
  get(key: string): Field {
    if (this.absent) return new Field(undefined, this, key);
    const o = this.record();
    return new Field(Object.hasOwn(o, key) ? o[key] : undefined, this, key);
  }

  record(): Record<string, unknown> {
    if (!isRecord(this.value)) throw this.invalid(`must be an object, got ${quote(this.value)}`);
    return this.value;
  }

  /** The elements; absent is empty. More than `limit` elements is an error naming the limit. */
  list(limit: number): Field[] {
    if (this.absent) return [];
    if (!Array.isArray(this.value)) throw this.invalid(`must be a list, got ${quote(this.value)}`);
    if (this.value.length > limit) {
      throw this.invalid(`has ${this.value.length} elements, more than the limit of ${limit}`);
    }
    return this.value.map((v: unknown, i) => new Field(v, this, i));
  }

  optString(): string | undefined {
    if (this.absent) return undefined;
    if (typeof this.value !== 'string') throw this.invalid(`must be a string, got ${quote(this.value)}`);
    return this.value;
  }

  string(): string {
    const s = this.optString();
    if (s === undefined) throw this.invalid('is required');
    return s;
  }

  optBool(): boolean | undefined {
    if (this.absent) return undefined;
    if (typeof this.value !== 'boolean') throw this.invalid(`must be true or false, got ${quote(this.value)}`);
    return this.value;
  }

  /** An integer in [min, max]; absent → undefined. Numeric strings are not numbers. */
  optInt(min: number, max: number): number | undefined {
    if (this.absent) return undefined;
    const v = this.value;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw this.invalid(`must be an integer from ${min} to ${max}, got ${quote(v)}`);
    }
    return v;
  }

  int(min: number, max: number): number {
    const n = this.optInt(min, max);
    if (n === undefined) throw this.invalid('is required');
    return n;
  }

  /** One of `allowed`; unset → `fallback`. */
  oneOf<T extends string>(allowed: readonly T[], fallback: T): T {
    if (this.unset) return fallback;
    const s = this.optString();
    const found = allowed.find((a) => a === s);
    if (found === undefined) throw this.invalid(`must be one of ${allowed.join(', ')}, got ${quote(s)}`);
    return found;
  }

  /** A string passing `check`; unset → undefined. */
  optName(check: (s: string) => boolean, what: string): string | undefined {
    if (this.unset) return undefined;
    const s = this.string();
    if (!check(s)) throw this.invalid(`${quote(s)} is not ${what}`);
    return s;
  }

  ip(): IpAddress {
    const s = this.string();
    const ip = parseIp(s);
    if (!ip) throw this.invalid(`${quote(s)} is not an IP address`);
    return ip;
  }

  /** An IP that may be claimed by a Service or an endpoint (see SPECIAL_RANGES). */
  ordinaryIp(): IpAddress {
    const ip = this.ip();
    if (isSpecialIp(ip))
      throw this.invalid(`${quote(this.value)} is an unspecified, loopback, link-local or IPv4-mapped address`);
    return ip;
  }

  cidr(): Cidr {
    const s = this.string();
    const c = parseCidr(s);
    if (!c) throw this.invalid(`${quote(s)} is not a CIDR`);
    return c;
  }
}

/**
 * Problems about one object's elements; `each` reads list elements, dropping (and reporting)
 * malformed ones. Kept apart until the object is accepted: a skipped object gets one problem, not
 * also "element dropped" notes about an object that was dropped anyway.
 */
class Reporter {
  readonly kind: string;
  readonly object: string;
  readonly problems: Problem[] = [];

  constructor(kind: string, object: string) {
    this.kind = kind;
    this.object = object;
  }

  add(path: string, message: string): void {
    this.problems.push({ kind: this.kind, object: this.object, path, message });
  }

  /** `read` returns undefined to drop an element silently, or throws Invalid to drop it with a problem. */
  each<T>(items: readonly Field[], read: (f: Field) => T | undefined): T[] {
    const out: T[] = [];
    for (const f of items) {
      try {
        const v = read(f);
        if (v !== undefined) out.push(v);
      } catch (err) {
        if (!(err instanceof Invalid)) throw err;
        this.add(err.path, `${err.message}; element dropped`);
      }
    }
    // Exact size: a pushed-to array keeps room for 17 elements, and these live as long as the object.
    return out.length === 0 ? out : out.slice();
  }
}

// ---------------------------------------------------------------------------------------------
// Kinds

const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];
const POLICIES: readonly TrafficPolicy[] = ['Cluster', 'Local'];

interface Identity {
  readonly namespace: string;
  readonly name: string;
}

function readServicePort(f: Field, portCount: number, hasNodePorts: boolean): ServicePortSpec {
  const nameField = f.get('name');
  const name = nameField.optString() ?? '';
  if (name === '' ? portCount > 1 : !isIanaSvcName(name)) {
    throw nameField.invalid(
      name === ''
        ? 'is required when a Service has more than one port'
        : `${quote(name)} is not a valid port name (IANA_SVC_NAME)`,
    );
  }
  const protocol = f.get('protocol').oneOf(PROTOCOLS, 'TCP');
  const port = f.get('port').int(1, 65535);
  const nodePortField = f.get('nodePort');
  // 0 is "not allocated" (the Go zero value).
  const nodePort = nodePortField.value === 0 ? undefined : nodePortField.optInt(1, 65535);
  return hasNodePorts && nodePort !== undefined ? { name, protocol, port, nodePort } : { name, protocol, port };
}

function readService(root: Field, id: Identity, r: Reporter): Service | undefined {
  const labels = root.get('metadata').get('labels');
  if (!labels.absent && Object.hasOwn(labels.record(), SERVICE_PROXY_NAME_LABEL)) return undefined;

  const spec = root.get('spec');
  spec.record();
  const typeField = spec.get('type');
  const type = typeField.oneOf(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'] as const, 'ClusterIP');
  if (type === 'ExternalName') return undefined;

  const ipList = spec.get('clusterIPs').list(LIMITS.clusterIPs);
  const single = spec.get('clusterIP');
  const ipFields = ipList.length > 0 ? ipList : single.unset ? [] : [single];
  const firstIp = ipFields[0];
  if (!firstIp) throw single.invalid('is required (no ClusterIP allocated)');
  if (firstIp.value === 'None') return undefined; // headless
  const clusterIPs = ipFields.map((f) => f.ip());
  if (clusterIPs.length === 2 && clusterIPs[0]?.family === clusterIPs[1]?.family) {
    throw spec.get('clusterIPs').invalid('must hold at most one address per family');
  }

  const portFields = spec.get('ports').list(LIMITS.servicePorts);
  const hasNodePorts = type !== 'ClusterIP';
  const ports = portFields.map((f) => readServicePort(f, portFields.length, hasNodePorts));
  const names = new Set<string>();
  const numbers = new Set<string>();
  ports.forEach((p, i) => {
    const f = portFields[i] ?? spec;
    if (names.has(p.name)) throw f.get('name').invalid(`duplicate port name ${quote(p.name)}`);
    const key = `${p.protocol}/${p.port}`;
    if (numbers.has(key)) throw f.get('port').invalid(`duplicate port ${p.port}/${p.protocol}`);
    names.add(p.name);
    numbers.add(key);
  });

  const externalIPs = r.each(spec.get('externalIPs').list(LIMITS.externalIPs), (f) => f.ordinaryIp());

  // All or nothing: dropping one bad range would leave the others and so widen access.
  const loadBalancerSourceRanges = spec
    .get('loadBalancerSourceRanges')
    .list(LIMITS.loadBalancerSourceRanges)
    .map((f) => {
      try {
        return f.cidr();
      } catch (err) {
        if (err instanceof Invalid) throw f.invalid(`${err.message} (a bad range must not widen access)`);
        throw err;
      }
    });

  const ingress = root.get('status').get('loadBalancer').get('ingress').list(LIMITS.loadBalancerIngress);
  const loadBalancerIPs = r.each(ingress, (f) => {
    if (f.get('ipMode').optString() === 'Proxy') return undefined;
    const ip = f.get('ip');
    return ip.unset ? undefined : ip.ordinaryIp();
  });

  const externalTrafficPolicy = spec.get('externalTrafficPolicy').oneOf(POLICIES, 'Cluster');
  const internalTrafficPolicy = spec.get('internalTrafficPolicy').oneOf(POLICIES, 'Cluster');

  const affinity = spec.get('sessionAffinity').oneOf(['None', 'ClientIP'] as const, 'None');
  const sessionAffinityTimeoutSeconds =
    affinity === 'ClientIP'
      ? (spec.get('sessionAffinityConfig').get('clientIP').get('timeoutSeconds').optInt(1, 86400) ??
        DEFAULT_SESSION_AFFINITY_TIMEOUT_SECONDS)
      : undefined;

  let healthCheckNodePort: number | undefined;
  if (type === 'LoadBalancer' && externalTrafficPolicy === 'Local') {
    const f = spec.get('healthCheckNodePort');
    healthCheckNodePort = f.value === 0 ? undefined : f.optInt(1, 65535);
  }

  const ipvsScheduler = readIpvsScheduler(root.get('metadata').get('annotations'), r);

  return {
    namespace: id.namespace,
    name: id.name,
    type,
    clusterIPs,
    ports,
    externalIPs,
    loadBalancerIPs,
    loadBalancerSourceRanges,
    externalTrafficPolicy,
    internalTrafficPolicy,
    ...(sessionAffinityTimeoutSeconds !== undefined ? { sessionAffinityTimeoutSeconds } : {}),
    ...(healthCheckNodePort !== undefined ? { healthCheckNodePort } : {}),
    ...(ipvsScheduler !== undefined ? { ipvsScheduler } : {}),
  };
}

/**
 * The annotation `kproxy.io/ipvs-scheduler` (IPVS mode): one of the kernel's scheduler names. Any
 * other value only costs the Service its choice: it keeps the default scheduler, with a problem.
 */
function readIpvsScheduler(annotations: Field, r: Reporter): IpvsScheduler | undefined {
  // Malformed annotations are the API server's to refuse; here they only mean "no choice".
  if (!isRecord(annotations.value)) return undefined;
  const f = annotations.get(IPVS_SCHEDULER_ANNOTATION);
  if (f.unset) return undefined;
  if (typeof f.value === 'string' && isIpvsScheduler(f.value)) return f.value;
  r.add(
    f.path,
    `${quote(f.value)} is not an IPVS scheduler (one of ${IPVS_SCHEDULERS.join(', ')}); the Service uses the default scheduler`,
  );
  return undefined;
}

function readHints(f: Field): Endpoint['hints'] {
  if (f.absent) return undefined;
  f.record();
  const names = (list: string, check: (s: string) => boolean, what: string): string[] =>
    f
      .get(list)
      .list(LIMITS.endpointHints)
      .map((h) => {
        const name = h.get('name');
        const s = name.optName(check, what);
        if (s === undefined) throw name.invalid('is required');
        return s;
      });
  const forZones = names('forZones', (s) => s !== '' && isLabelValue(s), 'a zone name');
  const forNodes = names('forNodes', isDns1123Subdomain, 'a node name');
  return forZones.length === 0 && forNodes.length === 0 ? undefined : { forZones, forNodes };
}

/** The eight possible conditions, shared by all endpoints (one object each was ~5 MiB at 100k endpoints). */
const CONDITIONS: readonly EndpointConditions[] = Array.from({ length: 8 }, (_, i) =>
  Object.freeze({ ready: (i & 4) !== 0, serving: (i & 2) !== 0, terminating: (i & 1) !== 0 }),
);

function readEndpoint(f: Field, addressType: 'IPv4' | 'IPv6', r: Reporter): Endpoint {
  const addressesField = f.get('addresses');
  const first = addressesField.list(LIMITS.endpointAddresses)[0];
  if (!first) throw addressesField.invalid('must hold at least one address');
  const address = first.ordinaryIp();
  if (address.family !== (addressType === 'IPv4' ? 'ipv4' : 'ipv6')) {
    throw first.invalid(`${quote(first.value)} is not an ${addressType} address`);
  }

  const cond = f.get('conditions');
  const ready = cond.get('ready').optBool() ?? true;
  // The API documents nil serving as true (and upstream reads it so), independent of ready.
  const serving = cond.get('serving').optBool() ?? true;
  const terminating = cond.get('terminating').optBool() ?? false;

  const nodeName = f.get('nodeName').optName(isDns1123Subdomain, 'a node name (DNS-1123 subdomain)');
  const zone = f.get('zone').optName(isLabelValue, 'a zone name (label value)');

  // Bad hints drop only the hints: the endpoint then has none, so topology filtering is off (wider, never narrower).
  let hints: Endpoint['hints'];
  try {
    hints = readHints(f.get('hints'));
  } catch (err) {
    if (!(err instanceof Invalid)) throw err;
    r.add(err.path, `${err.message}; the endpoint's hints are ignored`);
  }

  const conditions = CONDITIONS[(ready ? 4 : 0) + (serving ? 2 : 0) + (terminating ? 1 : 0)] as EndpointConditions;
  // One literal per common shape, neither spread (an object more each) nor assigned afterwards (a
  // property added to an object goes to a separate store, ~40 bytes more): ~100k endpoints at 10k Services.
  const endpoint: { -readonly [K in keyof Endpoint]: Endpoint[K] } =
    nodeName === undefined
      ? zone === undefined
        ? { address, conditions }
        : { address, conditions, zone }
      : zone === undefined
        ? { address, conditions, nodeName }
        : { address, conditions, nodeName, zone };
  if (hints !== undefined) endpoint.hints = hints;
  return endpoint;
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

function readTriggerTime(annotations: Field): Date | undefined {
  if (annotations.absent || !isRecord(annotations.value)) return undefined;
  const v = Object.hasOwn(annotations.value, TRIGGER_TIME_ANNOTATION)
    ? annotations.value[TRIGGER_TIME_ANNOTATION]
    : undefined;
  if (typeof v !== 'string' || !RFC3339.test(v)) return undefined;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

function readEndpointSlice(root: Field, id: Identity, r: Reporter): EndpointSlice | undefined {
  const addressTypeField = root.get('addressType');
  const addressType = addressTypeField.string();
  if (addressType === 'FQDN') return undefined;
  if (addressType !== 'IPv4' && addressType !== 'IPv6') {
    throw addressTypeField.invalid(`must be IPv4, IPv6 or FQDN, got ${quote(addressType)}`);
  }

  const meta = root.get('metadata');
  const serviceNameField = meta.get('labels').get(SERVICE_NAME_LABEL);
  const serviceName = serviceNameField.optName(isDns1035Label, 'a Service name (DNS-1035 label)');
  if (serviceName === undefined) throw serviceNameField.invalid('is required: the slice names no Service');

  const portFields = root.get('ports').list(LIMITS.slicePorts);
  const endpointFields = root.get('endpoints').list(LIMITS.sliceEndpoints);

  const seenPortNames = new Set<string>();
  const ports = r.each(portFields, (f): EndpointPort | undefined => {
    const portField = f.get('port');
    if (portField.absent) return undefined; // upstream skips ports without a number
    const nameField = f.get('name');
    const name = nameField.optString() ?? '';
    if (name !== '' && !isIanaSvcName(name))
      throw nameField.invalid(`${quote(name)} is not a valid port name (IANA_SVC_NAME)`);
    if (seenPortNames.has(name)) throw nameField.invalid(`duplicate port name ${quote(name)}`);
    const protocol = f.get('protocol').oneOf(PROTOCOLS, 'TCP');
    const port = portField.int(1, 65535);
    seenPortNames.add(name);
    return { name, protocol, port };
  });

  const endpoints = r.each(endpointFields, (f) => readEndpoint(f, addressType, r));
  const triggerTime = readTriggerTime(meta.get('annotations'));

  return {
    namespace: id.namespace,
    name: id.name,
    serviceName,
    addressType,
    ports,
    endpoints,
    ...(triggerTime !== undefined ? { triggerTime } : {}),
  };
}

function readNode(root: Field, id: Identity, r: Reporter): Node {
  const labelsField = root.get('metadata').get('labels');
  const labels = labelsField.absent
    ? {}
    : Object.fromEntries(
        Object.entries(labelsField.record()).filter((e): e is [string, string] => typeof e[1] === 'string'),
      );

  const status = root.get('status');
  const typed = r.each(status.get('addresses').list(LIMITS.nodeAddresses), (f) => {
    const type = f.get('type').optString();
    return type === 'InternalIP' || type === 'ExternalIP' ? { type, ip: f.get('address').ip() } : undefined;
  });
  const ofType = (type: string): IpAddress[] => typed.filter((a) => a.type === type).map((a) => a.ip);

  const spec = root.get('spec');
  const cidrList = spec.get('podCIDRs').list(LIMITS.podCIDRs);
  const single = spec.get('podCIDR');
  const cidrFields = cidrList.length > 0 ? cidrList : single.unset ? [] : [single];
  const podCIDRs = r.each(cidrFields, (f) => f.cidr());

  // Upstream's node eligibility for /healthz: not being deleted, not marked for scale-down.
  const deleting = !root.get('metadata').get('deletionTimestamp').unset;
  const taints = spec.get('taints').absent ? [] : spec.get('taints').list(LIMITS.nodeTaints);
  const markedForRemoval = taints.some((t) => t.get('key').value === TO_BE_DELETED_TAINT);

  return {
    name: id.name,
    labels,
    addresses: [...ofType('InternalIP'), ...ofType('ExternalIP')],
    podCIDRs,
    beingRemoved: deleting || markedForRemoval,
  };
}

function readServiceCIDR(root: Field, id: Identity, r: Reporter): ServiceCIDR {
  const cidrs = r.each(root.get('spec').get('cidrs').list(LIMITS.serviceCIDRs), (f) => f.cidr());
  return { name: id.name, cidrs };
}

// ---------------------------------------------------------------------------------------------
// Dispatch

interface KindSpec<T> {
  readonly kind: string;
  readonly namespaced: boolean;
  readonly nameCheck: (s: string) => boolean;
  readonly nameRule: string;
  readonly read: (root: Field, id: Identity, r: Reporter) => T | undefined;
}

const SERVICE: KindSpec<Service> = {
  kind: 'Service',
  namespaced: true,
  nameCheck: isDns1035Label,
  nameRule: 'a DNS-1035 label',
  read: readService,
};
const ENDPOINT_SLICE: KindSpec<EndpointSlice> = {
  kind: 'EndpointSlice',
  namespaced: true,
  nameCheck: isDns1123Subdomain,
  nameRule: 'a DNS-1123 subdomain',
  read: readEndpointSlice,
};
const NODE: KindSpec<Node> = {
  kind: 'Node',
  namespaced: false,
  nameCheck: isDns1123Subdomain,
  nameRule: 'a DNS-1123 subdomain',
  read: readNode,
};
const SERVICE_CIDR: KindSpec<ServiceCIDR> = {
  kind: 'ServiceCIDR',
  namespaced: false,
  nameCheck: isDns1123Subdomain,
  nameRule: 'a DNS-1123 subdomain',
  read: readServiceCIDR,
};

/** The kinds kproxy reads, and what each normalizes to. */
export type ObjectKind = 'Service' | 'EndpointSlice' | 'Node' | 'ServiceCIDR';

export interface KindValues {
  Service: Service;
  EndpointSlice: EndpointSlice;
  Node: Node;
  ServiceCIDR: ServiceCIDR;
}

const SPECS: { readonly [K in ObjectKind]: KindSpec<KindValues[K]> } = {
  Service: SERVICE,
  EndpointSlice: ENDPOINT_SLICE,
  Node: NODE,
  ServiceCIDR: SERVICE_CIDR,
};

/**
 * Validate one object of a known kind: identity first (so problems can name it), then the body.
 * Returns undefined when the identity itself is unusable.
 */
function readObject<T>(
  spec: KindSpec<T>,
  root: Field,
  problems: Problem[],
): { key: string; value: T | undefined } | undefined {
  const meta = root.get('metadata');
  const rawName = isRecord(meta.value) && Object.hasOwn(meta.value, 'name') ? meta.value['name'] : undefined;
  const rawNs = isRecord(meta.value) && Object.hasOwn(meta.value, 'namespace') ? meta.value['namespace'] : undefined;
  const nsDefaulted = rawNs === undefined || rawNs === null || rawNs === '';
  const namespace = nsDefaulted ? 'default' : rawNs;
  const nameOk = typeof rawName === 'string' && spec.nameCheck(rawName);
  const nsOk = !spec.namespaced || (typeof namespace === 'string' && isDns1123Label(namespace));
  const shown = (ok: boolean, v: unknown): string => (ok && typeof v === 'string' ? v : quote(v, 40));
  const object = spec.namespaced ? `${shown(nsOk, namespace)}/${shown(nameOk, rawName)}` : shown(nameOk, rawName);

  const problem = (path: string, message: string): undefined => {
    problems.push({ kind: spec.kind, object, path, message });
    return undefined;
  };
  if (!isRecord(meta.value)) return problem('metadata', `must be an object, got ${quote(meta.value)}`);
  if (!nameOk) return problem('metadata.name', `${quote(rawName)} is not a valid name (${spec.nameRule})`);
  if (!nsOk) return problem('metadata.namespace', `${quote(rawNs)} is not a valid namespace (DNS-1123 label)`);
  if (typeof rawName !== 'string' || typeof namespace !== 'string') return undefined; // (narrowing; checked above)

  const id: Identity = { namespace: spec.namespaced ? namespace : '', name: rawName };
  const r = new Reporter(spec.kind, object);
  try {
    const value = spec.read(root, id, r);
    appendAll(problems, r.problems);
    return { key: object, value };
  } catch (err) {
    if (!(err instanceof Invalid)) throw err;
    problem(err.path, `${err.message}; ${spec.kind} skipped`);
    return { key: object, value: undefined };
  }
}

/** One object's verdict; see `normalizeObject`. */
export interface NormalizedObject<K extends ObjectKind = ObjectKind> {
  readonly kind: K;
  /**
   * `namespace/name` (namespaced kinds, an empty namespace read as `default`) or `name`: the
   * identity problems name. Undefined when the identity is unusable (with a problem) or the object
   * is none of kproxy's business (another node's Node; no problem).
   */
  readonly key: string | undefined;
  /**
   * The validated object; undefined when it was skipped: malformed (with a problem) or ignored on
   * purpose (headless, ExternalName, another proxy's Service, an FQDN slice; no problem).
   */
  readonly value: KindValues[K] | undefined;
  /** Problems about this object, including elements that were dropped from an accepted object. */
  readonly problems: Problem[];
}

/**
 * Validate one untrusted object whose kind the caller already knows (a watch or list of that
 * resource; list items carry no `kind`). Never throws on bad input. Only the Node named
 * `nodeName` is read. This is the whole of per-object validation: `buildSnapshot` is a loop over it.
 */
export function normalizeObject<K extends ObjectKind>(kind: K, raw: unknown, nodeName: string): NormalizedObject<K> {
  const problems: Problem[] = [];
  if (!isRecord(raw)) {
    problems.push({ kind, object: '(unknown)', path: '', message: `not an object: ${quote(raw)}` });
    return { kind, key: undefined, value: undefined, problems };
  }
  if (kind === 'Node') {
    // Other nodes' objects are none of our business, malformed or not.
    const meta = raw['metadata'];
    const name = isRecord(meta) && Object.hasOwn(meta, 'name') ? meta['name'] : undefined;
    if (typeof name === 'string' && name !== nodeName) return { kind, key: undefined, value: undefined, problems };
  }
  const entry = readObject(SPECS[kind], new Field(raw), problems);
  return { kind, key: entry?.key, value: entry?.value, problems };
}

/** Latest object per identity; `undefined` records "seen, but skipped" so it still replaces an earlier copy. */
type Latest<T> = Map<string, T | undefined>;

function store<T>(latest: Latest<T>, kind: string, key: string, value: T | undefined, problems: Problem[]): void {
  if (latest.has(key)) {
    problems.push({ kind, object: key, path: '', message: 'duplicate object; the later one wins' });
  }
  latest.set(key, value);
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function byNamespacedName(a: Identity, b: Identity): number {
  return compareText(a.namespace, b.namespace) || compareText(a.name, b.name);
}

/** Recognised (apiVersion, kind) pairs; everything else is ignored without a problem. */
function recognise(apiVersion: string, kind: string): ObjectKind | undefined {
  if (apiVersion === 'v1' && (kind === 'Service' || kind === 'Node')) return kind;
  if (apiVersion === 'discovery.k8s.io/v1' && kind === 'EndpointSlice') return kind;
  if ((apiVersion === 'networking.k8s.io/v1' || apiVersion === 'networking.k8s.io/v1beta1') && kind === 'ServiceCIDR')
    return kind;
  return undefined;
}

/**
 * A snapshot of already-validated objects, lists sorted by namespace then name (code-unit order)
 * so that equal input gives equal output whatever the order it arrived in.
 */
export function snapshotFrom(parts: {
  readonly services: Iterable<Service>;
  readonly endpointSlices: Iterable<EndpointSlice>;
  readonly node?: Node | undefined;
  readonly serviceCIDRs: Iterable<ServiceCIDR>;
}): ClusterSnapshot {
  // Copied now (a point-in-time view), sorted when first read: a partial sync reads only the node
  // and the ServiceCIDRs, and sorting 20k objects per change cost more than the change at 10k.
  const services = [...parts.services];
  const endpointSlices = [...parts.endpointSlices];
  let servicesSorted = false;
  let slicesSorted = false;
  return {
    get services() {
      if (!servicesSorted) services.sort(byNamespacedName);
      servicesSorted = true;
      return services;
    },
    get endpointSlices() {
      if (!slicesSorted) endpointSlices.sort(byNamespacedName);
      slicesSorted = true;
      return endpointSlices;
    },
    ...(parts.node !== undefined ? { node: parts.node } : {}),
    serviceCIDRs: [...parts.serviceCIDRs].sort((a, b) => compareText(a.name, b.name)),
  };
}

function present<T>(latest: Latest<T>): T[] {
  return [...latest.values()].filter((v): v is T => v !== undefined);
}

/**
 * Validate untrusted objects into a snapshot (`normalizeObject` on each). Only the Node named
 * `nodeName` is read; a duplicate (same kind, namespace and name) replaces the earlier copy and is
 * reported. Output lists are sorted as `snapshotFrom` sorts them.
 */
export function buildSnapshot(
  objects: unknown[],
  nodeName: string,
): { snapshot: ClusterSnapshot; problems: Problem[] } {
  const problems: Problem[] = [];
  const latest: { [K in ObjectKind]: Latest<KindValues[K]> } = {
    Service: new Map(),
    EndpointSlice: new Map(),
    Node: new Map(),
    ServiceCIDR: new Map(),
  };
  const keep = <K extends ObjectKind>(n: NormalizedObject<K>): void => {
    appendAll(problems, n.problems);
    if (n.key !== undefined) store(latest[n.kind], n.kind, n.key, n.value, problems);
  };

  for (const [i, raw] of objects.entries()) {
    const unknownObject = (path: string, message: string): void => {
      problems.push({ kind: '(unknown)', object: `objects[${i}]`, path, message });
    };
    if (!isRecord(raw)) {
      unknownObject('', `not an object: ${quote(raw)}`);
      continue;
    }
    const apiVersion = Object.hasOwn(raw, 'apiVersion') ? raw['apiVersion'] : undefined;
    const kind = Object.hasOwn(raw, 'kind') ? raw['kind'] : undefined;
    if (typeof apiVersion !== 'string' || apiVersion === '') {
      unknownObject('apiVersion', `missing or not a string: ${quote(apiVersion)}`);
      continue;
    }
    if (typeof kind !== 'string' || kind === '') {
      unknownObject('kind', `missing or not a string: ${quote(kind)}`);
      continue;
    }
    const known = recognise(apiVersion, kind);
    if (known !== undefined) keep(normalizeObject(known, raw, nodeName));
  }

  const snapshot = snapshotFrom({
    services: present(latest.Service),
    endpointSlices: present(latest.EndpointSlice),
    node: latest.Node.get(nodeName),
    serviceCIDRs: present(latest.ServiceCIDR),
  });
  return { snapshot, problems };
}
