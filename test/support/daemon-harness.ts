/**
 * Glue for the daemon's end-to-end tests (test/daemon/e2e.test.ts): the daemon runs in THIS
 * (root) network namespace, where the fake API server listens on 127.0.0.1, and reaches the
 * kernel of a topology's node namespace through `exec: inNetns(node.ns)`. Health, metrics and
 * health-check NodePorts bind to 127.0.0.1 here too.
 *
 * Also: Kubernetes object builders (IPv4, namespace `e2e`), a JSON-lines log capture, HTTP and
 * Prometheus-text helpers, and the child-process variant (daemon-child.ts) for kill -9 tests.
 */
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { pino } from 'pino';
import { loadProxyConfig } from '../../src/config/load.ts';
import type { ProxyConfig } from '../../src/config/proxy-config.ts';
import { apiEventRecorder } from '../../src/daemon/events-api.ts';
import { startDaemon, type Daemon } from '../../src/daemon/daemon.ts';
import { startSpawner } from '../../src/kernel/spawner.ts';
import type { Exec } from '../../src/kernel/exec.ts';
import { apiSource, type Backoff, type ClusterSource } from '../../src/source/api-source.ts';
import { createTopology, type Topology } from '../../src/sandbox/topology.ts';
import type { Logger } from '../../src/util/log.ts';
import { connectionFor, type FakeApiServer } from './fake-apiserver.ts';
import type { ApiConnection } from '../../src/source/api-http.ts';

export const NODE = 'node-a';
export const NS = 'e2e';
export const CLUSTER_CIDR = '10.244.0.0/16,fd00:244::/56';
export const SERVICE_CIDR = '10.96.0.0/16';
/** Every pod of the e2e topology serves this TCP port. */
export const POD_PORT = 8080;
export const SYNC_PERIOD_MS = 2000;
/** Fast restarts of failed lists/watches, so tests of failures stay short. */
export const TEST_BACKOFF: Backoff = { initialMs: 100, maxMs: 300 };

/**
 * The `kproxy run` flags every e2e daemon gets (plus test-specific ones). The bind addresses are
 * not among them: as upstream, the configuration refuses port 0, so in-process and child daemons
 * get `127.0.0.1:0` (an ephemeral port) set on the loaded config instead (see `withEphemeralPorts`);
 * the real CLI, alone in the node namespace, gets fixed ports.
 */
export const DAEMON_FLAGS: readonly string[] = [
  `--hostname-override=${NODE}`,
  `--cluster-cidr=${CLUSTER_CIDR}`,
  '--iptables-min-sync-period=100ms',
  `--iptables-sync-period=${SYNC_PERIOD_MS}ms`,
];

/** Health and metrics on ephemeral ports of 127.0.0.1 (several daemons at once, in the root namespace). */
export function withEphemeralPorts(config: ProxyConfig): ProxyConfig {
  return { ...config, healthzBindAddress: '127.0.0.1:0', metricsBindAddress: '127.0.0.1:0' };
}

export function daemonConfig(extra: readonly string[] = []): ProxyConfig {
  const { config } = loadProxyConfig({
    argv: [...DAEMON_FLAGS, ...extra],
    hostname: 'unused',
    readFile: () => {
      throw new Error('no config file in e2e tests');
    },
    commandFlags: ['manifests'],
  });
  return withEphemeralPorts(config);
}

// ---------------------------------------------------------------------------------------------
// Logs

export type LogLine = { level: number; msg: string } & Record<string, unknown>;

export interface CapturedLog {
  readonly log: Logger;
  readonly lines: LogLine[];
}

export function captureLog(level = 'debug'): CapturedLog {
  const lines: LogLine[] = [];
  const log = pino(
    { level, base: undefined },
    { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) },
  );
  return { log, lines };
}

/** Parses JSON log lines as they arrive on a stream (child processes log to stderr). */
export function collectJsonLines(stream: NodeJS.ReadableStream | null | undefined, into: LogLine[]): void {
  let buf = '';
  stream?.setEncoding('utf8');
  stream?.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const text = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (text.trim() === '') continue;
      try {
        into.push(JSON.parse(text) as LogLine);
      } catch {
        into.push({ level: 50, msg: text });
      }
    }
  });
}

export const syncLines = (lines: readonly LogLine[]): LogLine[] => lines.filter((l) => l.msg === 'sync');

/** Compact rendering of log lines for assertion messages. */
export function showLog(lines: readonly LogLine[], last = 40): string {
  return lines
    .slice(-last)
    .map((l) => JSON.stringify(l))
    .join('\n');
}

// ---------------------------------------------------------------------------------------------
// Waiting

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns true; throws with `describe()` (if given) on timeout. */
export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  opts: { intervalMs?: number; describe?: () => string | Promise<string> } = {},
): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await check()) return Date.now() - started;
    if (Date.now() - started > timeoutMs) {
      const detail = opts.describe ? `: ${await opts.describe()}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await sleep(opts.intervalMs ?? 50);
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP and metrics

export interface HttpAnswer {
  readonly status: number;
  readonly headers: Headers;
  readonly body: string;
}

export async function httpGet(url: string): Promise<HttpAnswer> {
  const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
  return { status: res.status, headers: res.headers, body: await res.text() };
}

/** Sum of the samples of `name` (exact sample name, e.g. `..._count`) whose labels include `labels`. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  let sum: number | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const pair of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      have.set(pair[1] ?? '', pair[2] ?? '');
    if (!Object.entries(labels).every(([k, v]) => have.get(k) === v)) continue;
    sum = (sum ?? 0) + Number(m[4]);
  }
  return sum;
}

/** A TCP port nothing listens on in this namespace right now. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = srv.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

// ---------------------------------------------------------------------------------------------
// Kernel state in the node namespace

/** `nft -a list table ip kproxy` (handles included), or undefined when there is no such table. */
export async function kproxyTable(topo: Topology): Promise<string | undefined> {
  const r = await topo.execIn(topo.node, 'nft', ['-a', 'list', 'table', 'ip', 'kproxy'], { allowFailure: true });
  return r.exitCode === 0 ? r.stdout : undefined;
}

/** The kernel's handle of the `ip kproxy` table (changes when the table is deleted and re-created). */
export async function kproxyTableHandle(topo: Topology): Promise<number | undefined> {
  const r = await topo.execIn(topo.node, 'nft', ['-j', 'list', 'tables'], { allowFailure: true });
  if (r.exitCode !== 0) return undefined;
  const doc = JSON.parse(r.stdout) as { nftables: { table?: { family: string; name: string; handle: number } }[] };
  return doc.nftables.find((e) => e.table?.family === 'ip' && e.table.name === 'kproxy')?.table?.handle;
}

export async function kproxyTables(topo: Topology): Promise<string[]> {
  const out = await topo.nft(['list', 'tables']);
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => / kproxy$/.test(l));
}

/** Every iptables table of the node namespace emptied, both flavors and families, as on a fresh node. */
export async function flushIptables(topo: Topology): Promise<void> {
  for (const tool of ['iptables-nft', 'iptables-legacy', 'ip6tables-nft', 'ip6tables-legacy'])
    for (const table of ['mangle', 'nat', 'filter']) {
      await topo.execIn(topo.node, tool, ['-t', table, '-F'], { allowFailure: true });
      await topo.execIn(topo.node, tool, ['-t', table, '-X'], { allowFailure: true });
    }
}

/** Removes kproxy's tables from the node namespace and forgets its connections (between tests). */
export async function resetNode(topo: Topology): Promise<void> {
  for (const family of ['ip', 'ip6']) {
    await topo.execIn(topo.node, 'nft', ['delete', 'table', family, 'kproxy'], { allowFailure: true });
  }
  await topo.flushConntrack().catch(() => {});
}

// ---------------------------------------------------------------------------------------------
// Objects (IPv4 Services; the Node is dual-stack like the topology)

type Obj = Record<string, unknown>;

export function clusterIP(i: number): string {
  return `10.96.0.${i}`;
}

export function nodeObject(topo: Topology): Obj {
  return {
    metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE } },
    spec: { podCIDRs: [topo.podCidr.v4, topo.podCidr.v6] },
    status: {
      addresses: [
        { type: 'InternalIP', address: topo.node.v4 },
        { type: 'InternalIP', address: topo.node.v6 },
      ],
    },
  };
}

export function serviceCIDRObject(): Obj {
  return { metadata: { name: 'kubernetes' }, spec: { cidrs: [SERVICE_CIDR] } };
}

export function service(name: string, index: number, extra: { spec?: Obj; status?: Obj; metadata?: Obj } = {}): Obj {
  return {
    metadata: { name, namespace: NS, ...extra.metadata },
    spec: {
      type: 'ClusterIP',
      clusterIP: clusterIP(index),
      clusterIPs: [clusterIP(index)],
      ipFamilies: ['IPv4'],
      ipFamilyPolicy: 'SingleStack',
      ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: POD_PORT }],
      ...extra.spec,
    },
    ...(extra.status ? { status: extra.status } : {}),
  };
}

export interface EndpointRef {
  readonly pod: string;
  /** Default: this node. */
  readonly node?: string;
}

export function endpointSlice(
  topo: Topology,
  name: string,
  serviceName: string,
  eps: readonly (string | EndpointRef)[],
  extra: { annotations?: Record<string, string> } = {},
): Obj {
  return {
    metadata: {
      name,
      namespace: NS,
      labels: { 'kubernetes.io/service-name': serviceName },
      ...(extra.annotations ? { annotations: extra.annotations } : {}),
    },
    addressType: 'IPv4',
    ports: [{ name: 'http', protocol: 'TCP', port: POD_PORT }],
    endpoints: eps.map((e) => {
      const ref = typeof e === 'string' ? { pod: e } : e;
      return {
        addresses: [topo.pod(ref.pod).v4],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: ref.node ?? NODE,
      };
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// The daemon, in process

export interface InProcessDaemon {
  readonly daemon: Daemon;
  readonly source: ClusterSource;
  readonly lines: LogLine[];
  readonly healthzUrl: string;
  readonly metricsUrl: string;
  metrics(): Promise<string>;
  stop(): Promise<void>;
}

export interface InProcessOptions {
  readonly server: FakeApiServer;
  readonly topo: Topology;
  readonly flags?: readonly string[];
  /** Wraps the exec that reaches the node namespace (e.g. to inject failures). */
  readonly wrapExec?: (inner: Exec) => Exec;
  /** The API source's restart backoff; default TEST_BACKOFF (fast). */
  readonly backoff?: Backoff;
  /** The connection the source and the event recorder use; default connectionFor(server). */
  readonly connection?: ApiConnection;
  /** Log level captured; default debug. */
  readonly logLevel?: string;
  /** Delete stale conntrack entries through persistent helpers in the node namespace, as `kproxy run` does. */
  readonly conntrackHelpers?: boolean;
}

/** The same assembly as `kproxy run` (api source, API event recorder), with the kernel in the node namespace. */
export async function startInProcess(o: InProcessOptions): Promise<InProcessDaemon> {
  const { log, lines } = captureLog(o.logLevel);
  const config = daemonConfig(o.flags);
  const connection = o.connection ?? connectionFor(o.server);
  const source = apiSource({ connection, nodeName: config.nodeName, log, backoff: o.backoff ?? TEST_BACKOFF });
  // Tools run as `kproxy run` runs them, through the spawner, here inside the node namespace.
  const spawner = startSpawner(['ip', 'netns', 'exec', o.topo.node.ns]);
  const inner = spawner.exec;
  const daemon = await startDaemon({
    config,
    source,
    events: apiEventRecorder(connection, config.nodeName, log),
    log,
    exec: o.wrapExec ? o.wrapExec(inner) : inner,
    kernelCall: spawner.call,
    serviceHealthAddresses: ['127.0.0.1'],
    ...(o.conntrackHelpers ? { conntrackHelperPrefix: ['ip', 'netns', 'exec', o.topo.node.ns] } : {}),
  });
  const healthzUrl = daemon.healthz?.url ?? '';
  const metricsUrl = daemon.metricsServer?.url ?? '';
  return {
    daemon,
    source,
    lines,
    healthzUrl,
    metricsUrl,
    metrics: async () => (await httpGet(`${metricsUrl}/metrics`)).body,
    stop: () => daemon.stop().finally(() => spawner.stop()),
  };
}

// ---------------------------------------------------------------------------------------------
// The daemon, as a child process (daemon-child.ts)

const CHILD = fileURLToPath(new URL('./daemon-child.ts', import.meta.url));
const COMPILE_CACHE = fileURLToPath(new URL('../../node_modules/.cache/kproxy-compile', import.meta.url));

export interface ChildDaemon {
  readonly proc: ResultPromise;
  readonly pid: number;
  readonly lines: LogLine[];
  /** Resolves with the child's exit (never rejects). */
  readonly exited: Promise<{ exitCode: number | undefined; signal: string | undefined; error?: string }>;
}

/**
 * Starts `node test/support/daemon-child.ts FLAGS...` with the API server and node namespace in
 * its environment. It logs JSON lines on stderr (collected into `lines`).
 */
export function spawnChild(server: FakeApiServer, topo: Topology, flags: readonly string[] = []): ChildDaemon {
  const proc = execa(process.execPath, [CHILD, ...DAEMON_FLAGS, ...flags], {
    env: {
      KPROXY_E2E_SERVER: server.url,
      KPROXY_E2E_NETNS: topo.node.ns,
      // As bin/kproxy does: a restarted child skips re-compiling what the previous one compiled.
      NODE_COMPILE_CACHE: process.env['NODE_COMPILE_CACHE'] ?? COMPILE_CACHE,
    },
    reject: false,
    stdout: 'ignore',
    stderr: 'pipe',
    stdin: 'ignore',
    buffer: false,
  });
  const lines: LogLine[] = [];
  collectJsonLines(proc.stderr, lines);
  const exited = proc.then(
    (r) => ({ exitCode: r.exitCode, signal: r.signal }),
    (err: unknown) => ({ exitCode: undefined, signal: undefined, error: String(err) }),
  );
  if (proc.pid === undefined) throw new Error('the daemon child did not start');
  return { proc, pid: proc.pid, lines, exited };
}

/**
 * The sandbox the daemon tests drive: a client pod `cli`, endpoint pods serving TCP 8080 (named as
 * given: `a`, `b`, …) and one outside client `ext`.
 */
export function daemonTopology(endpointPods: readonly string[]): Promise<Topology> {
  return createTopology({
    pods: [{ name: 'cli', tcpPorts: [], udpPorts: [] }, ...endpointPods.map((name) => ({ name }))],
    clients: [{ name: 'ext' }],
    tcpPorts: [8080],
    udpPorts: [],
  });
}
