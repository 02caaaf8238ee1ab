/**
 * @module backends/iptables/render/drift
 * What differs between the desired ruleset and `iptables-save`, for a person (`kproxy diff`): the
 * comparisons a full sync's plan makes (`planSync(…, 'all-differing')`), each difference named,
 * chains down to their rules. Pure.
 */
import { isKproxyServiceChain } from './names.ts';
import type { SavedTables } from './saved.ts';
import type { IptRuleset } from './types.ts';

/** At most this many rules are listed per chain and direction; the rest are counted. */
const MAX_LISTED = 20;

export function describeIptablesDrift(desired: IptRuleset, observed: SavedTables): string[] {
  const fam = desired.family === 'ipv4' ? 'IPv4' : 'IPv6';
  const out: string[] = [];
  const wanted = new Set(desired.chains.map((c) => `${c.table}\u0000${c.name}`));
  for (const c of desired.chains) {
    const where = `${fam} ${c.table} ${c.name}`;
    const have = observed.get(c.table)?.get(c.name);
    if (!have) {
      out.push(`${where}: chain missing (${c.rules.length} rule(s) desired)`);
      continue;
    }
    if (have.length === c.rules.length && have.every((r, i) => r === c.rules[i])) continue;
    const missing = without(c.rules, have);
    const extra = without(have, c.rules);
    if (missing.length === 0 && extra.length === 0) {
      out.push(`${where}: the same rules in another order`);
      continue;
    }
    out.push(...listed(`${where}: lacks`, missing), ...listed(`${where}: also holds`, extra));
  }
  for (const [table, chains] of observed) {
    for (const name of chains.keys())
      if (isKproxyServiceChain(name) && !wanted.has(`${table}\u0000${name}`))
        out.push(`${fam} ${table} ${name}: chain not desired (stale)`);
  }
  const counted = new Set<string>();
  for (const j of desired.jumps) {
    const key = `${j.table}\u0000${j.chain}\u0000${j.rule}`;
    if (counted.has(key)) continue;
    counted.add(key);
    const have = (observed.get(j.table)?.get(j.chain) ?? []).filter((r) => r === j.rule).length;
    if (have === 0) out.push(`${fam} ${j.table} ${j.chain}: jump rule missing: ${j.rule}`);
    else if (have > 1) out.push(`${fam} ${j.table} ${j.chain}: jump rule present ${have} times: ${j.rule}`);
  }
  return out;
}

/** `a` without one occurrence of each rule of `b` (multiset difference), in `a`'s order. */
function without(a: readonly string[], b: readonly string[]): string[] {
  const left = new Map<string, number>();
  for (const r of b) left.set(r, (left.get(r) ?? 0) + 1);
  const out: string[] = [];
  for (const r of a) {
    const n = left.get(r) ?? 0;
    if (n > 0) left.set(r, n - 1);
    else out.push(r);
  }
  return out;
}

function listed(prefix: string, items: readonly string[]): string[] {
  const out = items.slice(0, MAX_LISTED).map((t) => `${prefix} ${t}`);
  if (items.length > MAX_LISTED) out.push(`${prefix} … ${items.length - MAX_LISTED} more`);
  return out;
}
