/**
 * @module backends/iptables/render/types
 * What iptables mode renders and compares: chains of rules in iptables-save's canonical text, so
 * that what kproxy wants and what `iptables-save` prints compare as plain strings.
 */
import type { Family } from '../../../model/cluster.ts';
import type { LocalTrafficDetector, NodePortDestinations } from '../../../model/node-state.ts';

/** The tables kproxy writes to. */
export type IptTable = 'filter' | 'nat' | 'mangle';

/**
 * One rule, exactly as `iptables-save` prints it after the `-A CHAIN ` prefix, e.g.
 * `-d 10.96.0.10/32 -p tcp -m comment --comment "ns/svc:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-…`.
 */
export type RuleText = string;

export interface IptChain {
  readonly table: IptTable;
  readonly name: string;
  readonly rules: readonly RuleText[];
}

/** A rule kproxy keeps at the top of a built-in chain (INPUT, FORWARD, OUTPUT, PREROUTING, POSTROUTING). */
export interface JumpRule {
  readonly table: IptTable;
  readonly chain: string;
  readonly rule: RuleText;
}

/** Everything a service port puts into the tables; re-rendered only when its Service changes. */
export interface PortRules {
  /** The service port's key (`ns/name:port`). */
  readonly key: string;
  /** Its own chains: KUBE-SVC/SVL/EXT/FW/SEP-… (nat). */
  readonly chains: readonly IptChain[];
  /** Its rules in the shared chains (KUBE-SERVICES, KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES, …), in order. */
  readonly shared: readonly SharedRule[];
}

/** A service port's rule in a shared chain. */
export interface SharedRule {
  readonly table: IptTable;
  readonly chain: string;
  readonly rule: RuleText;
  /**
   * The frontend the rule serves (`10.96.0.10 . tcp . 80`, or `tcp . 30080` for a NodePort), as
   * nftables mode names it. When two service ports claim one frontend, only the first port's (by
   * key) rules for it are kept, as nftables mode keeps only the first port's map elements.
   */
  readonly frontend?: string;
}

/** The family-wide facts every rule depends on (a NodeState without its service ports, plus mode options). */
export interface IptablesContext {
  readonly family: Family;
  readonly nodeIPs: readonly string[];
  readonly localDetector: LocalTrafficDetector;
  readonly nodePortDestinations: NodePortDestinations;
  readonly masqueradeAll: boolean;
  readonly masqueradeMark: number;
  /** iptables.localhostNodePorts, already forced off for IPv6 and when nodePortAddresses excludes 127.0.0.1. */
  readonly localhostNodePorts: boolean;
  /** conntrack INVALID packets are dropped in KUBE-FORWARD unless nf_conntrack_tcp_be_liberal is set. */
  readonly dropInvalid: boolean;
}

/** One family's complete desired state. */
export interface IptRuleset {
  readonly family: Family;
  /** Every chain kproxy owns, skeleton and per-port, in restore order (filter, nat, mangle; skeleton first). */
  readonly chains: readonly IptChain[];
  readonly jumps: readonly JumpRule[];
}
