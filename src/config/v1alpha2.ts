/**
 * @module config/v1alpha2
 * `kubeproxy.config.k8s.io/v1alpha2`: its fields (staging/src/k8s.io/kube-proxy/config/v1alpha2)
 * and their conversion to v1alpha1's field names, which `load.ts` resolves. Each converted value
 * keeps the path it was written at, so messages name the v1alpha2 field.
 *
 * What moved: `syncPeriod`/`minSyncPeriod` are top-level (every mode's), `linux.masqueradeAll`,
 * `linux.conntrack`, `linux.oomScoreAdj`, `detectLocal.clusterCIDRs`, and the health and metrics
 * servers are CIDR lists plus a port. kproxy serves each on one address, so a list converts to
 * the address it means (all, loopback, or one host) and anything else is refused by name.
 */
import { cidrContains, parseCidr, parseIp } from '../model/ip.ts';
import type { Cidr } from '../model/cluster.ts';
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

const masqueradeBit = int32;

export const V1ALPHA2_SCHEMA: Schema = {
  apiVersion: str,
  kind: str,
  featureGates: { type: 'boolMap' },
  clientConnection: CLIENT_CONNECTION,
  logging: LOGGING,
  hostnameOverride: str,
  nodeIPOverride: stringList,
  healthzBindAddresses: stringList,
  healthzBindPort: int32,
  metricsBindAddresses: stringList,
  metricsBindPort: int32,
  configHardFail: bool,
  bindAddressHardFail: bool,
  enableProfiling: bool,
  showHiddenMetricsForVersion: str,
  mode: str,
  linux: object({
    oomScoreAdj: int32,
    masqueradeAll: bool,
    conntrack: CONNTRACK,
  }),
  windows: object({ runAsService: bool }),
  iptables: object({ masqueradeBit, localhostNodePorts: bool }),
  ipvs: object({
    masqueradeBit,
    scheduler: str,
    excludeCIDRs: stringList,
    strictARP: bool,
    tcpTimeout: duration,
    tcpFinTimeout: duration,
    udpTimeout: duration,
  }),
  nftables: object({ masqueradeBit }),
  winkernel: WINKERNEL,
  detectLocalMode: str,
  detectLocal: object({ bridgeInterface: str, interfaceNamePrefix: str, clusterCIDRs: stringList }),
  nodePortAddresses: stringList,
  syncPeriod: duration,
  minSyncPeriod: duration,
  configSyncPeriod: duration,
};

/** v1alpha2 paths whose value moves to one or more v1alpha1 paths unchanged. */
const MOVED: Readonly<Record<string, readonly string[]>> = {
  syncPeriod: ['iptables.syncPeriod', 'ipvs.syncPeriod', 'nftables.syncPeriod'],
  minSyncPeriod: ['iptables.minSyncPeriod', 'ipvs.minSyncPeriod', 'nftables.minSyncPeriod'],
  'linux.masqueradeAll': ['iptables.masqueradeAll', 'nftables.masqueradeAll'],
  'linux.oomScoreAdj': ['oomScoreAdj'],
};

export const DEFAULT_HEALTHZ_BIND_PORT = 10256;
export const DEFAULT_METRICS_BIND_PORT = 10249;

/** The converted values by v1alpha1 path, and each one's v1alpha2 path where it differs. */
export function convertV1alpha2(
  values: ReadonlyMap<string, Value>,
  problems: string[],
): { values: Map<string, Value>; paths: Map<string, string> } {
  const out = new Map<string, Value>();
  const paths = new Map<string, string>();
  const put = (key: string, value: Value, from: string): void => {
    out.set(key, value);
    if (key !== from) paths.set(key, from);
  };
  for (const [path, value] of values) {
    const moved = MOVED[path];
    if (moved) for (const key of moved) put(key, value, path);
    else if (path.startsWith('linux.conntrack.')) put(path.slice('linux.'.length), value, path);
    else if (path === 'detectLocal.clusterCIDRs') put('clusterCIDR', (value as readonly string[]).join(','), path);
    else if (path === 'nodeIPOverride') {
      if ((value as readonly string[]).length > 0)
        problems.push(
          `nodeIPOverride: not supported: kproxy takes the node's IPs from its Node object (leave it unset)`,
        );
    } else if (!/^(healthz|metrics)Bind(Addresses|Port)$/.test(path)) put(path, value, path);
  }
  const healthz = serverAddress(values, 'healthz', DEFAULT_HEALTHZ_BIND_PORT, ['0.0.0.0/0', '::/0'], problems);
  if (healthz !== undefined) put('healthzBindAddress', healthz.address, healthz.path);
  const metrics = serverAddress(values, 'metrics', DEFAULT_METRICS_BIND_PORT, ['127.0.0.0/8', '::1/128'], problems);
  if (metrics !== undefined) put('metricsBindAddress', metrics.address, metrics.path);
  return { values: out, paths };
}

/**
 * `<server>BindAddresses` + `<server>BindPort` as one `IP:port`, or undefined when neither is set
 * (the v1alpha1 default then applies, which is the same server).
 */
function serverAddress(
  values: ReadonlyMap<string, Value>,
  server: 'healthz' | 'metrics',
  defaultPort: number,
  defaultCidrs: readonly string[],
  problems: string[],
): { address: string; path: string } | undefined {
  const listPath = `${server}BindAddresses`;
  const portPath = `${server}BindPort`;
  const list = values.get(listPath) as readonly string[] | undefined;
  const port = values.get(portPath) as number | undefined;
  if (list === undefined && port === undefined) return undefined;
  const where = list !== undefined && list.length > 0 ? listPath : portPath;
  if (port !== undefined && (port < 0 || port > 65535)) {
    problems.push(`${portPath}: must be a port number 0..65535, got ${port}`);
    return undefined;
  }
  const effectivePort = port === undefined || port === 0 ? defaultPort : port;
  const cidrs: Cidr[] = [];
  (list !== undefined && list.length > 0 ? list : defaultCidrs).forEach((text, i) => {
    const c = parseCidr(text);
    if (c === undefined) problems.push(`${listPath}[${i}]: invalid CIDR ${JSON.stringify(text)}`);
    else cidrs.push(c);
  });
  if (cidrs.length === 0) return undefined;
  const host = oneAddress(cidrs);
  if (host === undefined) {
    problems.push(
      `${listPath}: kproxy serves ${server} on one address: give 0.0.0.0/0 and/or ::/0 (every address), the loopback ranges (127.0.0.0/8, ::1/128), or one address (/32 or /128); got ${JSON.stringify(list)}`,
    );
    return undefined;
  }
  return { address: host.includes(':') ? `[${host}]:${effectivePort}` : `${host}:${effectivePort}`, path: where };
}

const LOOPBACK_V4 = parseIp('127.0.0.1');
const LOOPBACK_V6 = parseIp('::1');

/** The one listening address a CIDR list stands for, or undefined when it is not one kproxy can serve. */
function oneAddress(cidrs: readonly Cidr[]): string | undefined {
  // Every address: 0.0.0.0 (the v1alpha1 default's meaning), or :: when only IPv6 is asked for.
  if (cidrs.some((c) => c.prefixLength === 0)) {
    return cidrs.some((c) => c.prefixLength === 0 && c.family === 'ipv4') ? '0.0.0.0' : '::';
  }
  const loopback = (c: Cidr): boolean =>
    (LOOPBACK_V4 !== undefined && cidrContains(c, LOOPBACK_V4)) ||
    (LOOPBACK_V6 !== undefined && cidrContains(c, LOOPBACK_V6));
  if (cidrs.every(loopback)) return cidrs.some((c) => c.family === 'ipv4') ? '127.0.0.1' : '::1';
  const [only] = cidrs;
  if (cidrs.length === 1 && only && only.prefixLength === (only.family === 'ipv4' ? 32 : 128)) return only.address;
  return undefined;
}
