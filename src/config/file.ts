/**
 * @module config/file
 * Decoding of a KubeProxyConfiguration file (`kubeproxy.config.k8s.io/v1alpha1` or `v1alpha2`,
 * YAML or JSON). Mirrors upstream's decode: every known field is type-checked like Go's JSON
 * decoder would (a type mismatch is an error naming the field path). Unknown and duplicate fields
 * are errors in v1alpha2 (strict decoding) and only warnings in v1alpha1 (upstream falls back to a
 * lenient decoder for v1alpha1 alone). `null` leaves a field unset, as it does in Go.
 *
 * A v1alpha2 file is converted to v1alpha1's field names (config/v1alpha2.ts), remembering each
 * value's path in the file, so `load.ts` resolves one shape and still names the field as written.
 * Semantic validation (ranges, CIDRs, modes) happens in `load.ts`.
 */
import { isMap, isScalar, parseDocument } from 'yaml';
import { parseGoDuration } from './duration.ts';
import {
  bool,
  CLIENT_CONNECTION,
  CONNTRACK,
  WINKERNEL,
  duration,
  int32,
  LOGGING,
  object,
  str,
  stringList,
  type Schema,
  type Value,
} from './schema.ts';
import { convertV1alpha2, V1ALPHA2_SCHEMA } from './v1alpha2.ts';

export const KUBE_PROXY_GROUP = 'kubeproxy.config.k8s.io';
export const KUBE_PROXY_API_VERSION = `${KUBE_PROXY_GROUP}/v1alpha1`;
export const KUBE_PROXY_API_VERSION_V1ALPHA2 = `${KUBE_PROXY_GROUP}/v1alpha2`;
export const KUBE_PROXY_KIND = 'KubeProxyConfiguration';

export type ConfigVersion = 'v1alpha1' | 'v1alpha2';

/** The v1alpha1 KubeProxyConfiguration fields (Linux and Windows). */
const V1ALPHA1_SCHEMA: Schema = {
  apiVersion: str,
  kind: str,
  featureGates: { type: 'boolMap' },
  clientConnection: CLIENT_CONNECTION,
  logging: LOGGING,
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
  winkernel: WINKERNEL,
  detectLocalMode: str,
  detectLocal: object({
    bridgeInterface: str,
    interfaceNamePrefix: str,
  }),
  clusterCIDR: str,
  nodePortAddresses: stringList,
  oomScoreAdj: int32,
  conntrack: CONNTRACK,
  configSyncPeriod: duration,
  portRange: str,
};

/**
 * Type-checked values of the fields present in the file, by v1alpha1 dotted path
 * (`nftables.syncPeriod`), each with the path it was written at (the same in v1alpha1).
 */
export class FileValues {
  readonly #values: ReadonlyMap<string, Value>;
  readonly #paths: ReadonlyMap<string, string>;
  /** The file's apiVersion; absent for "no file". */
  readonly version: ConfigVersion | undefined;

  constructor(
    values: ReadonlyMap<string, Value>,
    version?: ConfigVersion,
    paths: ReadonlyMap<string, string> = new Map(),
  ) {
    this.#values = values;
    this.#paths = paths;
    this.version = version;
  }

  /** Where the value of `key` was written in the file, for messages. */
  path(key: string): string {
    return this.#paths.get(key) ?? key;
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
  /** `featureGates.*` as given. */
  featureGates(): Record<string, boolean> {
    const gates: Record<string, boolean> = {};
    for (const [k, v] of this.#values)
      if (k.startsWith('featureGates.') && typeof v === 'boolean') gates[k.slice(13)] = v;
    return gates;
  }
}

export const EMPTY_FILE_VALUES = new FileValues(new Map());

/**
 * Decodes the text of a KubeProxyConfiguration. Type errors, a wrong apiVersion/kind, and in
 * v1alpha2 unknown or duplicate fields go to `problems` (as `path: message`); in v1alpha1 unknown
 * and duplicate fields go to `warnings`.
 */
export function decodeKubeProxyConfiguration(text: string, problems: string[], warnings: string[]): FileValues {
  // Duplicate keys are told apart from other syntax errors: the version decides what they are.
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: false });
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
  const version = checkApiVersion(root['apiVersion'], problems);
  checkTypeMeta(root, 'kind', KUBE_PROXY_KIND, problems);
  if (version === undefined || problems.length > before) return EMPTY_FILE_VALUES;

  const strict = version === 'v1alpha2';
  // Unknown and duplicate fields: errors under strict decoding, warnings otherwise.
  const unknown = strict ? problems : warnings;
  for (const key of duplicateKeys(text)) unknown.push(`${key}: duplicate field`);
  const values = new Map<string, Value>();
  walk(root, strict ? V1ALPHA2_SCHEMA : V1ALPHA1_SCHEMA, '', values, problems, unknown);
  if (!strict) return new FileValues(values, version);
  const converted = convertV1alpha2(values, problems);
  return new FileValues(converted.values, version, converted.paths);
}

function checkApiVersion(v: unknown, problems: string[]): ConfigVersion | undefined {
  if (v === KUBE_PROXY_API_VERSION) return 'v1alpha1';
  if (v === KUBE_PROXY_API_VERSION_V1ALPHA2) return 'v1alpha2';
  const expected = `${JSON.stringify(KUBE_PROXY_API_VERSION)} or ${JSON.stringify(KUBE_PROXY_API_VERSION_V1ALPHA2)}`;
  if (v === undefined || v === null || v === '') problems.push(`apiVersion: required, must be ${expected}`);
  else problems.push(`apiVersion: must be ${expected}, got ${describe(v)}`);
  return undefined;
}

/** Dotted paths of the mapping keys given more than once (the last one wins, as in Go). */
function duplicateKeys(text: string): string[] {
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  return doc.errors.filter((e) => e.code === 'DUPLICATE_KEY').map((e) => duplicatePath(text, e.pos[0]));
}

/** The duplicated key at `offset`, with its parents' names, found by re-reading the document. */
function duplicatePath(text: string, offset: number): string {
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: false });
  return findKeyAt(doc.contents, offset, '') ?? `(at offset ${offset})`;
}

function findKeyAt(node: unknown, offset: number, prefix: string): string | undefined {
  if (!isMap(node)) return undefined;
  for (const pair of node.items) {
    const key = isScalar(pair.key) ? pair.key : undefined;
    const name = `${prefix}${prefix === '' ? '' : '.'}${String(key?.value)}`;
    if (key?.range && key.range[0] <= offset && offset < key.range[2]) return name;
    const inner = findKeyAt(pair.value, offset, name);
    if (inner !== undefined) return inner;
  }
  return undefined;
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
  unknown: string[],
): void {
  for (const [key, raw] of Object.entries(obj)) {
    const path = prefix === '' ? key : `${prefix}.${key}`;
    const field = Object.hasOwn(schema, key) ? schema[key] : undefined;
    if (field === undefined) {
      unknown.push(`unknown field ${JSON.stringify(path)}`);
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
      case 'presence':
        if (
          !(
            raw === '' ||
            (Array.isArray(raw) && raw.length === 0) ||
            (isPlainObject(raw) && Object.keys(raw).length === 0)
          )
        )
          out.set(path, true);
        break;
      case 'object':
        if (isPlainObject(raw)) walk(raw, field.fields, path, out, problems, unknown);
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
