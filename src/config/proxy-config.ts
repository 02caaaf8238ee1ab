/**
 * @module config/proxy-config
 * The validated configuration every other module receives. Built once at the edge from flags and
 * an optional KubeProxyConfiguration file (`config/load.ts`); never read from the environment
 * anywhere else.
 */
import type { Cidr } from '../model/cluster.ts';
import type { IpvsScheduler } from '../model/ipvs-schedulers.ts';

/** Modes kproxy implements today. `nft` is accepted on input as an alias of `nftables`. */
export type ProxyMode = 'nftables' | 'iptables' | 'ipvs';

/**
 * Which iptables the host uses: `nft` (iptables-nft, nf_tables underneath) or `legacy`
 * (x_tables); `auto` detects it as upstream's image wrapper does. kproxy never mixes the two.
 */
export type IptablesFlavor = 'auto' | 'nft' | 'legacy';

/** How "traffic from inside the cluster" is recognised (upstream `detectLocalMode`). */
export type DetectLocalConfig =
  | { readonly mode: 'ClusterCIDR' }
  | { readonly mode: 'NodeCIDR' }
  | { readonly mode: 'BridgeInterface'; readonly bridgeInterface: string }
  | { readonly mode: 'InterfaceNamePrefix'; readonly interfaceNamePrefix: string }
  | { readonly mode: 'None' };

/** Which local addresses accept NodePort traffic (upstream `nodePortAddresses`). */
export type NodePortAddressesConfig =
  | { readonly kind: 'primary' }
  | { readonly kind: 'all' }
  | { readonly kind: 'cidrs'; readonly cidrs: readonly Cidr[] };

export interface ProxyConfig {
  readonly mode: ProxyMode;
  /** hostnameOverride if set, else the host name, lower-cased. */
  readonly nodeName: string;
  /** Parsed `clusterCIDR` (comma-separated, at most one per family). */
  readonly clusterCIDRs: readonly Cidr[];
  readonly detectLocal: DetectLocalConfig;
  readonly nodePortAddresses: NodePortAddressesConfig;
  readonly masqueradeAll: boolean;
  /** Bit of the packet mark that requests masquerade, 0..31 (default 14). */
  readonly masqueradeBit: number;
  readonly syncPeriodMs: number;
  readonly minSyncPeriodMs: number;
  readonly healthzBindAddress: string;
  /** Empty disables the metrics server. */
  readonly metricsBindAddress: string;
  /**
   * kproxy's own `--kernel-tool-timeout`: one run of nft, iptables-restore, ipvsadm or conntrack is
   * killed (and the sync fails) past this. Absent: DEFAULT_KERNEL_TOOL_TIMEOUT_MS (kernel/exec.ts).
   */
  readonly kernelToolTimeoutMs?: number;
  /** Upstream `-v`: 0 (info) .. 10. */
  readonly verbosity: number;
  /** iptables mode only. */
  readonly iptables: {
    /** NodePorts answer on 127.0.0.1 too (upstream default true; IPv4 only; needs route_localnet). */
    readonly localhostNodePorts: boolean;
    readonly flavor: IptablesFlavor;
  };
  /** IPVS mode only (the `ipvs:` section and the `--ipvs-*` flags). */
  readonly ipvs: IpvsConfig;
  /** What is done to the node at start (`--init-only` does only this): conntrack sysctls, oom_score_adj. */
  readonly nodeSetup: NodeSetupConfig;
  /** A health or metrics server that cannot bind stops kproxy (else it is logged and retried). */
  readonly bindAddressHardFail: boolean;
  /** `--logging-format` / `logging.format`: JSON lines, or pino-pretty text. */
  readonly loggingFormat: LoggingFormat;
}

export type LoggingFormat = 'text' | 'json';

/** Upstream's `conntrack` section; a 0 leaves the kernel's value. */
export interface ConntrackConfig {
  /** nf_conntrack_max = max(maxPerCore × CPUs, min); 0 leaves it (and ignores min). */
  readonly maxPerCore: number;
  readonly min: number;
  readonly tcpEstablishedTimeoutSeconds: number;
  readonly tcpCloseWaitTimeoutSeconds: number;
  /** nf_conntrack_tcp_be_liberal=1 when true; false leaves it. */
  readonly tcpBeLiberal: boolean;
  readonly udpTimeoutSeconds: number;
  readonly udpStreamTimeoutSeconds: number;
}

/** Node setup steps `--skip-node-setup` can leave out (kproxy's own flag). */
export type NodeSetupStep = 'oom-score-adj' | 'conntrack' | 'route-localnet';

export interface NodeSetupConfig {
  readonly skip: readonly NodeSetupStep[];
  readonly conntrack: ConntrackConfig;
  /** Written to /proc/self/oom_score_adj at start (upstream default -999). */
  readonly oomScoreAdj: number;
}

export interface IpvsConfig {
  /** Every virtual server's scheduler unless its Service's annotation names another (default rr). */
  readonly scheduler: IpvsScheduler;
  /** Virtual servers whose address lies in these are never deleted, even kproxy's own. */
  readonly excludeCIDRs: readonly Cidr[];
  /** arp_ignore=1 and arp_announce=2, so only the interface that owns an address answers ARP for it. */
  readonly strictARP: boolean;
  /** IPVS connection timeouts (`ipvsadm --set`), seconds; 0 leaves the kernel's value. */
  readonly tcpTimeoutSeconds: number;
  readonly tcpFinTimeoutSeconds: number;
  readonly udpTimeoutSeconds: number;
}
