/**
 * @module backends/nftables/render/cidrs
 */
import type { Cidr } from '../../../model/cluster.ts';
import { cidrContains } from '../../../model/ip.ts';

/**
 * The CIDRs not inside another one of the list (duplicates once): the kernel refuses overlapping
 * intervals in one set ("conflicting intervals specified"), and the outer one already covers them.
 */
export function outermostCidrs(cidrs: readonly Cidr[]): Cidr[] {
  const covers = (a: Cidr, b: Cidr) =>
    a.prefixLength <= b.prefixLength && cidrContains(a, { family: b.family, text: b.address });
  const out: Cidr[] = [];
  for (const c of cidrs) {
    if (out.some((o) => covers(o, c))) continue;
    for (let i = out.length - 1; i >= 0; i--) if (covers(c, out[i] as Cidr)) out.splice(i, 1);
    out.push(c);
  }
  return out;
}
