/**
 * @module config/file
 * Decoding of a KubeProxyConfiguration file (`kubeproxy.config.k8s.io/v1alpha1`, YAML or JSON).
 * Mirrors upstream's two-pass decode: every known field is type-checked like Go's JSON decoder
 * would (a type mismatch is an error naming the field path), and unknown fields are only warned
 * about (strict decode fails, lenient decode succeeds with a warning). `null` leaves a field unset,
 * as it does in Go. Semantic validation (ranges, CIDRs, modes) happens in `load.ts`.
 */
import { parseDocument } from 'yaml';
import { parseGoDuration } from './duration.ts';

export const KUBE_PROXY_API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1';
export const KUBE_PROXY_KIND = 'KubeProxyConfiguration';

type Field =
  | { readonly type: 'string' }
  | { readonly type: 'bool' }
  | { readonly type: 'int'; readonly min: number; readonly max: number }
  | { readonly type: 'float' }
  | { readonly type: 'duration' }
  | { readonly type: 'stringList' }
  | { readonly type: 'boolMap' }
  /** Known, accepted as is, not looked into (e.g. `logging.options`). */
  | { readonly type: 'opaque' }
  | { readonly type: 'object'; readonly fields: Schema };
type Schema = Readonly<Record<string, Field>>;

const str: Field = { type: 'string' };
const bool: Field = { type: 'bool' };
const int32: Field = { type: 'int', min: -2147483648, max: 2147483647 };
const uint32: Field = { type: 'int', min: 0, max: 4294967295 };
const float: Field = { type: 'float' };
const duration: Field = { type: 'duration' };
const stringList: Field = { type: 'stringList' };
const opaque: Field = { type: 'opaque' };
const object = (fields: Schema): Field => ({ type: 'object', fields });

/** The v1alpha1 KubeProxyConfiguration fields (Linux and Windows). */
const SCHEMA: Schema = {
  apiVersion: str,
  kind: str,
  featureGates: { type: 'boolMap' },
  clientConnection: object({
    kubeconfig: str,
    acceptContentTypes: str,
    contentType: str,
    qps: float,
    burst: int32,
  }),
  logging: object({
    format: str,
    flushFrequency: opaque, // a Go duration string or nanoseconds
    verbosity: uint32,
    vmodule: opaque,
    options: opaque,
  }),
  hostnameOverride: str,
  bindAddress: str,
  healthzBindAddress: str,
  metricsBindAddress: str,
  bindAddressHardFail: bool,
  enableProfiling: bool,
  showHiddenMetricsForVersion: str,
  mode: str,
  iptables: object({
    masqueradeAll: bool,
    masqueradeBit: int32,
    localhostNodePorts: bool,
    syncPeriod: duration,
    minSyncPeriod: duration,
  }),
  ipvs: object({
    syncPeriod: duration,
    minSyncPeriod: duration,
    scheduler: str,
    excludeCIDRs: stringList,
    strictARP: bool,
    tcpTimeout: duration,
    tcpFinTimeout: duration,
    udpTimeout: duration,
  }),
  nftables: object({
    masqueradeAll: bool,
    masqueradeBit: int32,
    syncPeriod: duration,
    minSyncPeriod: duration,
  }),
  winkernel: object({
    networkName: str,
    sourceVip: str,
    enableDSR: bool,
    rootHnsEndpointName: str,
    forwardHealthCheckVip: bool,
  }),
  detectLocalMode: str,
  detectLocal: object({
    bridgeInterface: str,
    interfaceNamePrefix: str,
  }),
  clusterCIDR: str,
  nodePortAddresses: stringList,
  oomScoreAdj: int32,
  conntrack: object({
    maxPerCore: int32,
    min: int32,
    tcpEstablishedTimeout: duration,
    tcpCloseWaitTimeout: duration,
    tcpBeLiberal: bool,
    udpTimeout: duration,
    udpStreamTimeout: duration,
  }),
  configSyncPeriod: duration,
  portRange: str,
};

type Value = string | boolean | number | readonly string[];

/** Type-checked values of the fields present in the file, by dotted path (`nftables.syncPeriod`). */
export class FileValues {
  readonly #values: ReadonlyMap<string, Value>;

  constructor(values: ReadonlyMap<string, Value>) {
    this.#values = values;
  }

  has(path: string): boolean {
    return this.#values.has(path);
  }
  string(path: string): string | undefined {
    const v = this.#values.get(path);
    return typeof v === 'string' ? v : undefined;
  }
  bool(path: string): boolean | undefined {
    const v = this.#values.get(path);
    return typeof v === 'boolean' ? v : undefined;
  }
  /** Integers, floats, and durations (in milliseconds). */
  number(path: string): number | undefined {
    const v = this.#values.get(path);
    return typeof v === 'number' ? v : undefined;
  }
  list(path: string): readonly string[] | undefined {
    const v = this.#values.get(path);
    return Array.isArray(v) ? (v as readonly string[]) : undefined;
  }
}

export const EMPTY_FILE_VALUES = new FileValues(new Map());

/**
 * Decodes the text of a KubeProxyConfiguration. Type errors and a wrong apiVersion/kind go to
 * `problems` (as `path: message`), unknown fields to `warnings`.
 */
export function decodeKubeProxyConfiguration(text: string, problems: string[], warnings: string[]): FileValues {
  const doc = parseDocument(text, { prettyErrors: false });
  if (doc.errors.length > 0) {
    for (const e of doc.errors) problems.push(`cannot parse: ${firstLine(e.message)}`);
    return EMPTY_FILE_VALUES;
  }
  for (const w of doc.warnings) warnings.push(`config file: ${firstLine(w.message)}`);
  let root: unknown;
  try {
    root = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    problems.push(`cannot parse: ${firstLine(e instanceof Error ? e.message : String(e))}`);
    return EMPTY_FILE_VALUES;
  }
  if (root === null || root === undefined) {
    problems.push(`file is empty (expected a ${KUBE_PROXY_KIND})`);
    return EMPTY_FILE_VALUES;
  }
  if (!isPlainObject(root)) {
    problems.push(`expected a ${KUBE_PROXY_KIND} mapping, got ${describe(root)}`);
    return EMPTY_FILE_VALUES;
  }

  // Like upstream's codec, the type must be recognised before any field is looked at.
  const before = problems.length;
  checkTypeMeta(root, 'apiVersion', KUBE_PROXY_API_VERSION, problems);
  checkTypeMeta(root, 'kind', KUBE_PROXY_KIND, problems);
  if (problems.length > before) return EMPTY_FILE_VALUES;

  const values = new Map<string, Value>();
  walk(root, SCHEMA, '', values, problems, warnings);
  return new FileValues(values);
}

function checkTypeMeta(root: Record<string, unknown>, key: string, expected: string, problems: string[]): void {
  const v = root[key];
  if (v === undefined || v === null || v === '') problems.push(`${key}: required, must be ${JSON.stringify(expected)}`);
  else if (v !== expected) problems.push(`${key}: must be ${JSON.stringify(expected)}, got ${describe(v)}`);
}

function walk(
  obj: Record<string, unknown>,
  schema: Schema,
  prefix: string,
  out: Map<string, Value>,
  problems: string[],
  warnings: string[],
): void {
  for (const [key, raw] of Object.entries(obj)) {
    const path = prefix === '' ? key : `${prefix}.${key}`;
    const field = Object.hasOwn(schema, key) ? schema[key] : undefined;
    if (field === undefined) {
      warnings.push(`unknown field ${JSON.stringify(path)}`);
      continue;
    }
    // Go's decoder leaves a field at its zero value for null.
    if (raw === null || raw === undefined) continue;
    switch (field.type) {
      case 'string':
        if (typeof raw === 'string') out.set(path, raw);
        else problems.push(`${path}: expected a string, got ${describe(raw)}`);
        break;
      case 'bool':
        if (typeof raw === 'boolean') out.set(path, raw);
        else problems.push(`${path}: expected a boolean (true or false), got ${describe(raw)}`);
        break;
      case 'int':
        if (typeof raw !== 'number' || !Number.isInteger(raw))
          problems.push(`${path}: expected an integer, got ${describe(raw)}`);
        else if (raw < field.min || raw > field.max)
          problems.push(`${path}: integer out of range ${field.min}..${field.max}, got ${raw}`);
        else out.set(path, raw);
        break;
      case 'float':
        if (typeof raw === 'number' && Number.isFinite(raw)) out.set(path, raw);
        else problems.push(`${path}: expected a number, got ${describe(raw)}`);
        break;
      case 'duration': {
        if (typeof raw !== 'string') {
          problems.push(`${path}: expected a duration string such as "30s", "1m" or "500ms", got ${describe(raw)}`);
          break;
        }
        const ms = parseGoDuration(raw);
        if (ms === undefined)
          problems.push(`${path}: invalid duration ${JSON.stringify(raw)} (examples: "30s", "1m", "500ms", "1h2m")`);
        else out.set(path, ms);
        break;
      }
      case 'stringList': {
        if (!Array.isArray(raw)) {
          problems.push(`${path}: expected a list of strings, got ${describe(raw)}`);
          break;
        }
        const items: string[] = [];
        let ok = true;
        raw.forEach((item: unknown, i) => {
          if (typeof item === 'string') items.push(item);
          else {
            ok = false;
            problems.push(`${path}[${i}]: expected a string, got ${describe(item)}`);
          }
        });
        if (ok) out.set(path, items);
        break;
      }
      case 'boolMap':
        if (!isPlainObject(raw)) {
          problems.push(`${path}: expected a mapping of names to booleans, got ${describe(raw)}`);
          break;
        }
        for (const [name, v] of Object.entries(raw)) {
          if (typeof v === 'boolean') out.set(`${path}.${name}`, v);
          else problems.push(`${path}.${name}: expected a boolean (true or false), got ${describe(v)}`);
        }
        break;
      case 'opaque':
        break;
      case 'object':
        if (isPlainObject(raw)) walk(raw, field.fields, path, out, problems, warnings);
        else problems.push(`${path}: expected a mapping, got ${describe(raw)}`);
        break;
    }
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return `string ${JSON.stringify(v)}`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return `${typeof v} ${String(v)}`;
  if (isPlainObject(v)) return 'a mapping';
  return typeof v === 'object' ? 'an unsupported value' : typeof v;
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}
