/**
 * @module backends/nftables/render/drift
 * What differs between the desired ruleset and what the kernel holds, for a person (`kproxy diff`):
 * the same comparisons `planTransaction` makes (chain fingerprints and rule counts, set
 * definitions and elements), each difference named. Pure.
 */
import { incompatibility, sameContent, unrecognisedElement } from './diff.ts';
import type { ObservedTable } from './observed.ts';
import { isDynamic, type Ruleset } from './ruleset.ts';
import { holdsExactly } from './elements-digest.ts';

/** At most this many elements are listed per set and direction; the rest are counted. */
const MAX_LISTED = 20;

export function describeTableDrift(desired: Ruleset, observed: ObservedTable | undefined): string[] {
  const table = `table ${desired.family} ${desired.table}`;
  if (!observed) return [`${table}: missing from the kernel`];
  const out: string[] = [];
  const whole = incompatibility(desired, observed) ?? unrecognisedElement(observed);
  if (whole) out.push(`${table}: ${whole} (a sync replaces the table)`);
  for (const chain of desired.chains) {
    const seen = observed.chains.get(chain.name);
    if (!seen) out.push(`${table}: chain ${chain.name} is missing`);
    else if (!sameContent(chain, seen.ruleCount, seen.fingerprint))
      out.push(
        seen.ruleCount !== chain.rules.length
          ? `${table}: chain ${chain.name} has ${seen.ruleCount} rule(s), ${chain.rules.length} desired`
          : `${table}: chain ${chain.name} has ${seen.ruleCount} rule(s) whose content differs (fingerprint ${seen.fingerprint ?? 'none'})`,
      );
  }
  const desiredChains = new Set(desired.chains.map((c) => c.name));
  for (const name of observed.chains.keys())
    if (!desiredChains.has(name)) out.push(`${table}: chain ${name} is not desired (stale)`);
  for (const set of desired.sets) {
    const seen = observed.sets.get(set.spec.name);
    const what = `${set.spec.verdictMap ? 'map' : 'set'} ${set.spec.name}`;
    if (!seen) {
      out.push(`${table}: ${what} is missing`);
      continue;
    }
    if (isDynamic(set.spec)) continue;
    if ('digest' in seen) {
      if (!holdsExactly(seen.digest, set.elements))
        out.push(`${table}: ${what} holds other elements (read as a digest)`);
      continue;
    }
    const wanted = new Set(set.elements);
    const missing = [...wanted].filter((t) => !seen.elements.has(t));
    const extra = [...seen.elements].filter((t) => !wanted.has(t));
    out.push(...listed(`${table}: ${what} lacks`, missing), ...listed(`${table}: ${what} also holds`, extra));
  }
  const desiredSets = new Set(desired.sets.map((s) => s.spec.name));
  for (const name of observed.sets.keys())
    if (!desiredSets.has(name)) out.push(`${table}: set ${name} is not desired (stale)`);
  return out;
}

function listed(prefix: string, items: readonly string[]): string[] {
  const out = items.slice(0, MAX_LISTED).map((t) => `${prefix} ${t}`);
  if (items.length > MAX_LISTED) out.push(`${prefix} … ${items.length - MAX_LISTED} more`);
  return out;
}
