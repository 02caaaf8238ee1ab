/**
 * @module daemon/daemon
 * `kproxy run` assembled from its parts: a cluster source, the proxier driven by a bounded-
 * frequency runner, health and metrics servers, health-check NodePorts and events. Every
 * dependency with an effect outside the process (the source, the program runner that reaches the
 * kernel, the event recorder) is passed in, so tests run the same daemon against a fake API
 * server and a network namespace.
 */
import type { ProxyConfig } from '../config/proxy-config.ts';
import { ConntrackChannel } from '../kernel/conntrack-channel.ts';
import { ctnetlinkOver } from '../kernel/ctnetlink-client.ts';
import { DEFAULT_KERNEL_TOOL_TIMEOUT_MS, withTimeout, type Exec } from '../kernel/exec.ts';
import { startSpawner, type Spawner } from '../kernel/spawner.ts';
import type { ClusterSource } from '../source/api-source.ts';
import type { Logger } from '../util/log.ts';
import type { EventRecorder } from './events.ts';
import { bindServer } from './bound-server.ts';
import { startHealthzServer } from './healthz-server.ts';
import type { RunningServer } from './http-listen.ts';
import { startMetricsServer } from './metrics-server.ts';
import { AuditLogWriter } from './audit-log.ts';
import type { FamilyState } from '../proxy/backend.ts';
import type { KernelCall } from '../kernel/kernel-calls.ts';
import { createProxyMetrics, type ProxyMetrics } from './metrics.ts';
import { Proxier } from '../proxy/proxier.ts';
import { loadProxyMode } from '../proxy/modes.ts';
import { FailureLog } from './failure-log.ts';
import { healthTimeoutForSyncPeriod, ProxyHealth } from './proxy-health.ts';
import { BoundedFrequencyRunner } from './runner.ts';
import { ServiceHealthServer } from './service-health.ts';

export interface DaemonOptions {
  readonly config: ProxyConfig;
  readonly source: ClusterSource;
  readonly events: EventRecorder;
  readonly log: Logger;
  /** Runs nft (and conntrack when ctnetlink is unavailable); default: the spawner child, in this process's network namespace. */
  readonly exec?: Exec;
  /** In-process kernel reads where the kernel is (with an injected `exec`: its counterpart, if any). */
  readonly kernelCall?: KernelCall;
  /** Addresses health-check NodePorts listen on; default: all. */
  readonly serviceHealthAddresses?: readonly string[];
  /** `--audit-log`: one JSON line per applied transaction, to `path` (`-`: stderr), rotated at `maxBytes`. */
  readonly auditLog?: { readonly path: string; readonly maxBytes: number };
  /**
   * Whether a persistent conntrack channel runs, and where its `conntrack -D` helpers (used when
   * ctnetlink is missing) run: a command prefix entering the node's network namespace
   * (`['ip', 'netns', 'exec', NS]`), or `[]` for this one. Default: `[]` when `exec` is not
   * injected; with an injected `exec` and no prefix, conntrack runs through `exec`. ctnetlink
   * itself runs where `kernelCall` runs (the spawner's child).
   */
  readonly conntrackHelperPrefix?: readonly string[];
  /** false: no ctnetlink channel, the `conntrack` tool only (as when the library is missing). Default true. */
  readonly ctnetlink?: boolean;
  /** Full re-render at least this often (default: upstream's FullSyncPeriod, 1 h). */
  readonly fullSyncPeriodMs?: number;
  /** The caller already started the source (so its first lists went out earlier): what start() returned. */
  readonly sourceStarted?: Promise<void>;
}

export interface Daemon {
  readonly healthz: RunningServer | null;
  readonly metricsServer: RunningServer | null;
  readonly metrics: ProxyMetrics;
  readonly health: ProxyHealth;
  readonly proxier: Proxier;
  /** Lets the sync in flight finish, then stops; kproxy's rules stay in the kernel. */
  stop(): Promise<void>;
}

export async function startDaemon(o: DaemonOptions): Promise<Daemon> {
  const { config, source, events, log } = o;
  // The source first: the API source's first lists go out while the rest of the daemon loads.
  const sourceStarted = o.sourceStarted ?? source.start();
  sourceStarted.catch(() => undefined);
  const mode = await loadProxyMode(config.mode);
  const metrics = createProxyMetrics({ defaultMetrics: true, syncFailuresMetric: mode.syncFailuresMetric });
  // Not eligible until this Node is seen (upstream): a node being removed gets no new traffic.
  const health = new ProxyHealth({
    healthTimeoutMs: healthTimeoutForSyncPeriod(config.syncPeriodMs),
    nodeEligible: false,
  });
  const bind = { hardFail: config.bindAddressHardFail, log };
  const healthz = await bindServer(
    () => startHealthzServer({ bindAddress: config.healthzBindAddress, health, metrics, logger: log }),
    bind,
  );
  const audit = o.auditLog
    ? new AuditLogWriter({ ...o.auditLog, mode: config.mode, failures: metrics.auditLogWriteFailuresTotal, log })
    : undefined;
  // `/rules` serves what the proxier last applied (nothing before it exists and has synced).
  let lastApplied = (): readonly FamilyState[] => [];
  const metricsServer = await bindServer(
    () =>
      startMetricsServer({
        bindAddress: config.metricsBindAddress,
        registry: metrics.registry,
        proxyMode: config.mode,
        rules: { mode, config, lastApplied: () => lastApplied() },
        logger: log,
      }),
    bind,
  );
  const serviceHealth = new ServiceHealthServer({
    nodeName: config.nodeName,
    ...(o.serviceHealthAddresses ? { addresses: o.serviceHealthAddresses } : {}),
    proxyHealthy: () => health.isHealthy(),
    onListenError: (e) => void events.record({ kind: 'Service', ...e.service }, 'Warning', e.reason, e.message),
    logger: log,
  });
  // Every kernel tool run is bounded: a hung nft or iptables-restore fails its sync instead of the daemon.
  // Tools are started by a small helper process (forking the daemon itself costs ~25 ms at 10k
  // Services), which serves nft through libnftables where it can.
  const spawner = o.exec
    ? undefined
    : startSpawner([], (channel) =>
        channel === 'libnftables'
          ? log.info('nft commands run in-process through libnftables')
          : log.warn({ reason: channel }, 'nft commands run through the nft tool (slower: a process per commit)'),
      );
  const exec = withTimeout(
    o.exec ?? (spawner as Spawner).exec,
    config.kernelToolTimeoutMs ?? DEFAULT_KERNEL_TOOL_TIMEOUT_MS,
  );
  const syncFailures = new FailureLog({ log, what: 'sync' });
  let stopping: Promise<void> | undefined;
  const helperPrefix = o.conntrackHelperPrefix ?? (o.exec ? undefined : []);
  const kernelCall = o.kernelCall ?? spawner?.call;
  // Opened before the first sync: a stale UDP flow is deleted right after the commit that made it
  // stale. ctnetlink (in the spawner's child, in the node's namespace) lists with the kernel's ids
  // and deletes by exact tuple; without the library, `conntrack` helpers (one deletion per line,
  // each walking the conntrack table) and `conntrack -L` do the same job slower.
  const ctnetlink = helperPrefix && kernelCall && o.ctnetlink !== false ? ctnetlinkOver(kernelCall) : undefined;
  let helpers: ConntrackChannel | undefined;
  const startHelpers = (prefix: readonly string[]): ConntrackChannel =>
    (helpers ??= new ConntrackChannel({ prefix, fallback: exec }).warm());
  if (helperPrefix && !ctnetlink) startHelpers(helperPrefix);
  void ctnetlink?.ready.then((why) => {
    if (why === undefined) {
      log.debug('conntrack: ctnetlink channel ready (stale UDP entries are deleted by exact tuple)');
      return;
    }
    log.warn(
      { reason: why },
      'conntrack: ctnetlink unavailable; stale UDP entries are deleted with the conntrack tool instead (slower: each deletion walks the conntrack table)',
    );
    if (helperPrefix && !stopping) startHelpers(helperPrefix);
  });
  // `conntrack -D` filters: the fallback of the ctnetlink channel, through helpers when they run.
  const conntrackDelete: Exec | undefined = helperPrefix
    ? (file, args, stdin, options) => {
        if (ctnetlink && !ctnetlink.available() && !stopping) startHelpers(helperPrefix);
        return (helpers?.exec ?? exec)(file, args, stdin, options);
      }
    : undefined;
  const backend = mode.createBackend({ config, exec, log, ...(kernelCall ? { kernelCall } : {}) });
  // What the kernel holds is read while the caches fill: a restart's first sync need not wait for it.
  backend.readKernelAhead?.();
  const proxier = new Proxier({
    config,
    source,
    backend,
    run: exec,
    ...(conntrackDelete ? { conntrackDelete } : {}),
    ...(ctnetlink ? { conntrackTable: ctnetlink } : {}),
    ...(o.fullSyncPeriodMs !== undefined ? { fullSyncPeriodMs: o.fullSyncPeriodMs } : {}),
    log,
    metrics,
    health,
    serviceHealth,
    ...(audit ? { audit } : {}),
  });
  lastApplied = () => proxier.lastApplied();
  const runner = new BoundedFrequencyRunner({
    name: 'sync-proxy-rules',
    // A run that did nothing (caches still filling, or a quiet periodic tick) gives its token back:
    // the first real sync starts the moment the caches have listed.
    fn: async () => {
      let r: Awaited<ReturnType<Proxier['sync']>>;
      try {
        r = await proxier.sync();
      } catch (err) {
        // Logged once per distinct error (no log storm while a fault lasts); retried with a backoff
        // from minSyncPeriod doubling up to syncPeriod, as a change or a periodic run may come sooner.
        syncFailures.failed(err);
        const backoff = Math.max(100, config.minSyncPeriodMs) * 2 ** Math.min(10, syncFailures.failures - 1);
        runner.retryAfter(Math.min(config.syncPeriodMs, backoff));
        return true;
      }
      syncFailures.succeeded();
      return r !== undefined && r.kind !== 'none';
    },
    minIntervalMs: config.minSyncPeriodMs,
    maxIntervalMs: config.syncPeriodMs,
    logger: log,
  });

  // Whether this node takes external traffic follows its Node object, read again only when it
  // changed: a snapshot of the whole cluster per change would cost ~3 ms at 50k Services.
  let nodeUnread = true;
  const readNode = (): void => {
    nodeUnread = false;
    const node = source.snapshot().node;
    health.setNodeEligible(node !== undefined && !node.beingRemoved);
  };
  source.onChange((change) => {
    proxier.noteChange(change);
    if (change.nodeChanged) nodeUnread = true;
    // As upstream: nothing is synced before the caches have listed (a change before that only queues).
    if (!source.isSynced()) return;
    if (nodeUnread) readNode();
    runner.run();
  });
  runner.start();
  await sourceStarted;
  if (source.isSynced()) {
    if (nodeUnread) readNode();
    runner.run();
  }
  // Someone else flushing kproxy's rules (firewalld reload, `iptables -F`) forces a full sync.
  const stopWatching = backend.watchForFlush?.(() => {
    log.warn('kproxy rules were flushed by someone else; resyncing in full');
    proxier.requestFull();
    runner.run();
  }, config.syncPeriodMs);
  void events.record(
    { kind: 'Node', name: config.nodeName, namespace: 'default' },
    'Normal',
    'Starting',
    'Starting kube-proxy.',
  );
  log.info(
    { mode: config.mode, node: config.nodeName, healthz: healthz.current?.url, metrics: metricsServer.current?.url },
    'kproxy started',
  );

  return {
    get healthz() {
      return healthz.current;
    },
    get metricsServer() {
      return metricsServer.current;
    },
    metrics,
    health,
    proxier,
    stop() {
      stopping ??= (async () => {
        stopWatching?.();
        await runner.stop();
        ctnetlink?.close();
        helpers?.close();
        spawner?.stop();
        await source.stop();
        await serviceHealth.close();
        await healthz.close();
        await metricsServer.close();
        await audit?.flush();
        log.info('kproxy stopped; rules left in place');
      })();
      return stopping;
    },
  };
}
