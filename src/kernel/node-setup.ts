/**
 * @module kernel/node-setup
 * What upstream kube-proxy does to the node before it proxies (cmd/kube-proxy/app/server_linux.go,
 * conntrack.go, and the iptables proxier's sysctl checks): oom_score_adj, the conntrack sysctls
 * (nf_conntrack_max from maxPerCore × CPUs with a floor of min, the TCP and UDP timeouts,
 * tcp_be_liberal), route_localnet where localhost NodePorts need it, and the br_netfilter warning.
 *
 * Every step is logged (set, already so, skipped, or failed and why) and none stops kproxy: a
 * value the kernel will not take here is a warning, the rules work without it. `--init-only` runs
 * just this (an init container with the privileges the main one does not need).
 *
 * The files are injected: the process's own /proc and /sys by default, a fake in tests. The
 * values written are numbers computed here, never text from the configuration.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { NodeSetupStep, ProxyConfig } from '../config/proxy-config.ts';
import type { Logger } from '../util/log.ts';

export interface NodeFiles {
  /** The file's first line, or undefined when it does not exist (a module not loaded). */
  read(path: string): string | undefined;
  /** Throws when the kernel refuses (EACCES, EROFS, EOPNOTSUPP...). */
  write(path: string, value: string): void;
  /** CPUs, for nf_conntrack_max = maxPerCore × CPUs. */
  cpus(): number;
}

export const procFiles: NodeFiles = {
  read(path) {
    try {
      return readFileSync(path, 'utf8').split('\n')[0]?.trim();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  },
  write(path, value) {
    writeFileSync(path, `${value}\n`);
  },
  cpus: () => availableParallelism(),
};

export type StepOutcome = 'set' | 'unchanged' | 'skipped' | 'failed' | 'warning';

export interface StepResult {
  readonly path: string;
  readonly outcome: StepOutcome;
  readonly want?: number;
  readonly was?: string;
}

const NETFILTER = '/proc/sys/net/netfilter';
export const PATHS = {
  oomScoreAdj: '/proc/self/oom_score_adj',
  conntrackMax: `${NETFILTER}/nf_conntrack_max`,
  conntrackHashsize: '/sys/module/nf_conntrack/parameters/hashsize',
  tcpEstablished: `${NETFILTER}/nf_conntrack_tcp_timeout_established`,
  tcpCloseWait: `${NETFILTER}/nf_conntrack_tcp_timeout_close_wait`,
  tcpBeLiberal: `${NETFILTER}/nf_conntrack_tcp_be_liberal`,
  udpTimeout: `${NETFILTER}/nf_conntrack_udp_timeout`,
  udpStreamTimeout: `${NETFILTER}/nf_conntrack_udp_timeout_stream`,
  routeLocalnet: '/proc/sys/net/ipv4/conf/all/route_localnet',
  bridgeCallIptables: '/proc/sys/net/bridge/bridge-nf-call-iptables',
} as const;

/** nf_conntrack_max as upstream computes it: max(maxPerCore × CPUs, min); 0 leaves it alone. */
export function conntrackMax(maxPerCore: number, min: number, cpus: number): number {
  return maxPerCore > 0 ? Math.max(maxPerCore * cpus, min) : 0;
}

export function setUpNode(config: ProxyConfig, files: NodeFiles, log: Logger): StepResult[] {
  const results: StepResult[] = [];
  const skip = new Set<NodeSetupStep>(config.nodeSetup.skip);
  const set = (path: string, want: number, why: string): boolean => {
    let was: string | undefined;
    try {
      was = files.read(path);
    } catch (err) {
      log.warn({ path, err: errText(err) }, `cannot read ${path}; leaving it (${why})`);
      results.push({ path, outcome: 'failed', want });
      return false;
    }
    if (was === undefined) {
      log.warn({ path }, `${path} does not exist (is the nf_conntrack module loaded?); cannot set ${want} (${why})`);
      results.push({ path, outcome: 'failed', want });
      return false;
    }
    if (was === String(want)) {
      log.info({ path, value: want }, `${path} is already ${want} (${why})`);
      results.push({ path, outcome: 'unchanged', want, was });
      return true;
    }
    try {
      files.write(path, String(want));
    } catch (err) {
      log.warn(
        { path, was, want, err: errText(err) },
        `cannot set ${path} to ${want} (${why}): ${errText(err)}; it stays ${was}${hint(path)}`,
      );
      results.push({ path, outcome: 'failed', want, was });
      return false;
    }
    log.info({ path, was, value: want }, `set ${path} to ${want} (${why})`);
    results.push({ path, outcome: 'set', want, was });
    return true;
  };
  const skipped = (step: NodeSetupStep): boolean => {
    if (!skip.has(step)) return false;
    log.info({ step }, `node setup: ${step} skipped (--skip-node-setup)`);
    results.push({ path: step, outcome: 'skipped' });
    return true;
  };

  if (!skipped('oom-score-adj')) set(PATHS.oomScoreAdj, config.nodeSetup.oomScoreAdj, 'oomScoreAdj');

  if (!skipped('conntrack')) {
    const ct = config.nodeSetup.conntrack;
    const max = conntrackMax(ct.maxPerCore, ct.min, files.cpus());
    if (
      max > 0 &&
      set(PATHS.conntrackMax, max, `conntrack.maxPerCore ${ct.maxPerCore} × ${files.cpus()} CPUs, min ${ct.min}`)
    ) {
      // The hash table is sized for max/4 entries per bucket chain, as upstream does.
      const hashsize = Number(safeRead(files, PATHS.conntrackHashsize) ?? Number.NaN);
      if (hashsize < max / 4) set(PATHS.conntrackHashsize, Math.floor(max / 4), 'nf_conntrack_max / 4');
    }
    const seconds: [string, number, string][] = [
      [PATHS.tcpEstablished, ct.tcpEstablishedTimeoutSeconds, 'conntrack.tcpEstablishedTimeout'],
      [PATHS.tcpCloseWait, ct.tcpCloseWaitTimeoutSeconds, 'conntrack.tcpCloseWaitTimeout'],
      [PATHS.udpTimeout, ct.udpTimeoutSeconds, 'conntrack.udpTimeout'],
      [PATHS.udpStreamTimeout, ct.udpStreamTimeoutSeconds, 'conntrack.udpStreamTimeout'],
    ];
    // 0 leaves the kernel's value, as upstream.
    for (const [path, value, why] of seconds) if (value > 0) set(path, value, why);
    if (ct.tcpBeLiberal) set(PATHS.tcpBeLiberal, 1, 'conntrack.tcpBeLiberal');
  }

  // Localhost NodePorts DNAT 127.0.0.1 to a pod: the kernel routes such packets only with route_localnet.
  const localhostNodePorts = config.mode === 'iptables' && config.iptables.localhostNodePorts;
  if (localhostNodePorts && !skipped('route-localnet')) set(PATHS.routeLocalnet, 1, 'iptables.localhostNodePorts');

  // Upstream's iptables and IPVS proxiers warn when bridged pod traffic would bypass netfilter.
  if (config.mode !== 'nftables') {
    const v = safeRead(files, PATHS.bridgeCallIptables);
    if (v !== '1') {
      log.warn(
        { path: PATHS.bridgeCallIptables, value: v ?? null },
        'Missing br-netfilter module or unset sysctl br-nf-call-iptables, proxy may not work as intended',
      );
      results.push({ path: PATHS.bridgeCallIptables, outcome: 'warning', ...(v !== undefined ? { was: v } : {}) });
    }
  }
  return results;
}

function safeRead(files: NodeFiles, path: string): string | undefined {
  try {
    return files.read(path);
  } catch {
    return undefined;
  }
}

/** Why a write is refused, where the kernel's reason is known. */
function hint(path: string): string {
  if (path === PATHS.oomScoreAdj) return ' (lowering it needs CAP_SYS_RESOURCE)';
  if (path === PATHS.conntrackMax)
    return ' (outside the host network namespace the kernel keeps nf_conntrack_max read-only: set it on the host, or run with hostNetwork)';
  if (path === PATHS.conntrackHashsize)
    return ' (only the host network namespace may resize the table, and /sys must be writable)';
  return '';
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
