/**
 * @module backends/ipvs/render/drift
 * What differs between the desired IPVS state and what the kernel holds, for a person (`kproxy
 * diff`): the lines of the `ipvsadm -R` batch a sync would run, the kube-ipvs0 addresses it would
 * add or remove, and the helper tables' differences (the nftables mode's descriptions, since they
 * are nftables tables). Pure.
 */
import { describeTableDrift } from '../../nftables/render/drift.ts';
import type { ListedTable } from '../../nftables/render/observed.ts';
import type { Ruleset } from '../../nftables/render/ruleset.ts';
import { DUMMY_INTERFACE } from './syntax.ts';

export interface IpvsDriftInput {
  /** Per family, the desired helper table and what the kernel holds of it. */
  readonly helper: readonly { readonly desired: Ruleset; readonly observed: ListedTable | undefined }[];
  /** The planned batch, without the deletions of real servers that finished draining (progress, not drift). */
  readonly ipvsLines: readonly string[];
  readonly addresses: { readonly add: readonly string[]; readonly remove: readonly string[] };
}

export function describeIpvsDrift(input: IpvsDriftInput): string[] {
  const out = input.ipvsLines.map(describeLine);
  for (const a of input.addresses.add) out.push(`${DUMMY_INTERFACE} lacks the address ${a}`);
  for (const a of input.addresses.remove) out.push(`${DUMMY_INTERFACE} also holds ${a}, which no virtual server uses`);
  for (const h of input.helper) out.push(...describeTableDrift(h.desired, h.observed));
  return out;
}

/** One batch line (render/syntax.ts `line`) in words: `-a -t 10.96.0.10:80 -r 10.244.0.5:8080 -m -w 1`. */
function describeLine(l: string): string {
  const m = /^(-[AEDaed]) (.+?)(?: -r (\S+))?( -[smwbp].*)?$/.exec(l);
  if (!m) return `IPVS: ${l}`;
  const [, op, service, server, params = ''] = m;
  const vs = `IPVS virtual server ${service}`;
  const wants = params.trim();
  switch (op) {
    case '-A':
      return `${vs} is missing (wants ${wants})`;
    case '-E':
      return `${vs} differs (wants ${wants})`;
    case '-D':
      return `${vs} is not desired (stale)`;
    case '-a':
      return `${vs} lacks real server ${server}`;
    case '-e':
      return / -w 0$/.test(l)
        ? `${vs}: real server ${server} is no endpoint any more (a sync drains it: weight 0)`
        : `${vs}: real server ${server} differs (wants ${wants})`;
    default:
      return `${vs}: real server ${server} is not desired`;
  }
}
