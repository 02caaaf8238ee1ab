/**
 * @module model/ipvs-schedulers
 * The IPVS scheduler names the Linux kernel knows (`ip_vs_<name>` modules), and the Service
 * annotation through which a Service may choose its own scheduler in IPVS mode. A fixed list: a
 * name reaches an `ipvsadm` line only after passing it (and a check that the kernel offers it).
 */

/** Every scheduler in Linux's net/netfilter/ipvs (6.x), upstream's default `rr` first. */
export const IPVS_SCHEDULERS = [
  'rr',
  'wrr',
  'lc',
  'wlc',
  'lblc',
  'lblcr',
  'dh',
  'sh',
  'sed',
  'nq',
  'fo',
  'ovf',
  'mh',
  'twos',
] as const;

export type IpvsScheduler = (typeof IPVS_SCHEDULERS)[number];

export const DEFAULT_IPVS_SCHEDULER: IpvsScheduler = 'rr';

/** kproxy's own (upstream has no per-Service scheduler): the Service's virtual servers use this scheduler. */
export const IPVS_SCHEDULER_ANNOTATION = 'kproxy.io/ipvs-scheduler';

export function isIpvsScheduler(name: string): name is IpvsScheduler {
  return (IPVS_SCHEDULERS as readonly string[]).includes(name);
}
