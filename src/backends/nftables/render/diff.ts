/**
 * @module backends/nftables/render/diff
 * Plans the one transaction that turns what the kernel holds into the desired ruleset, touching
 * only what differs: chains are flushed and refilled only when their fingerprint or rule count
 * differ, set and map elements are added and deleted one by one; a set read as a digest that sums
 * up exactly the desired elements is left alone (the reader lists the others: `setsToList`). Pure.
 */
import { elementKey, type Element, type Fragment } from './syntax.ts';
import type { Chain, Ruleset } from './ruleset.ts';
import { chainFingerprint, Commands, createCommands, isDynamic, TransactionBuilder } from './ruleset.ts';
import type { ObservedTable } from './observed.ts';
import { sameSetSpec } from './observed.ts';
import { holdsExactly } from './elements-digest.ts';

export interface PlanSummary {
  readonly kind: 'create' | 'replace' | 'update';
  readonly chainsAdded: number;
  readonly chainsChanged: number;
  readonly chainsDeleted: number;
  readonly elementsAdded: number;
  readonly elementsDeleted: number;
}

export interface Plan {
  readonly commands: readonly Fragment[];
  readonly summary: PlanSummary;
  /** Why a full replace was needed, for the log. */
  readonly reason?: string;
}

export function planTransaction(desired: Ruleset, observed: ObservedTable | undefined): Plan {
  if (!observed) return fullPlan('create', desired);
  const incompatible = incompatibility(desired, observed);
  if (incompatible) return replacePlan(desired, incompatible);

  const tx = new TransactionBuilder(desired.family, desired.table);
  for (const chain of desired.chains) {
    const seen = observed.chains.get(chain.name);
    if (!seen) tx.addChain(chain);
    else if (!sameContent(chain, seen.ruleCount, seen.fingerprint)) tx.replaceChain(chain);
  }
  const desiredChains = new Set(desired.chains.map((ch) => ch.name));
  for (const name of observed.chains.keys()) if (!desiredChains.has(name)) tx.deleteChain(name);

  for (const set of desired.sets) {
    const seen = observed.sets.get(set.spec.name);
    if (!seen) tx.addSet(set.spec);
    if (isDynamic(set.spec)) continue;
    if (seen && 'digest' in seen) {
      if (holdsExactly(seen.digest, set.elements)) continue;
      throw new Error(`set ${set.spec.name}: read as a digest that differs; its elements must be listed to plan`);
    }
    // One pass each way over up to ~150k elements (10k Services): no intermediate copies.
    const existing = seen?.elements ?? NONE;
    const adds = set.elements.filter((e) => !existing.has(e));
    // Every existing element is wanted when the others are the rest of the (distinct) wanted ones:
    // then no set of the wanted is built (most sets, after a restart or a periodic full sync).
    if (existing.size === set.elements.length - adds.length && distinctSorted(set.elements)) {
      tx.addElements(set.spec.name, adds);
      continue;
    }
    const wanted = new Set<Element>(set.elements);
    const deletes: string[] = [];
    for (const text of existing) {
      if (wanted.has(text)) continue;
      // A map element is deleted by its key alone.
      const key = elementKey(text);
      // An element someone else wrote that the plan could not name safely: replace the table instead.
      if (!KEY_TEXT.test(key))
        return replacePlan(desired, `set ${set.spec.name} holds an element kproxy did not write`);
      deletes.push(key);
    }
    tx.deleteElements(set.spec.name, deletes);
    tx.addElements(set.spec.name, adds);
  }
  const desiredSets = new Set(desired.sets.map((s) => s.spec.name));
  for (const [name, seen] of observed.sets) if (!desiredSets.has(name)) tx.deleteSet(seen.spec);

  return { commands: tx.commands(), summary: { kind: 'update', ...tx.counts } };
}

const NONE: ReadonlySet<string> = new Set();

/**
 * The sets of `observed` read as a digest whose elements a plan against `desired` needs listed:
 * those the desired ruleset keeps (same definition, not filled by packets) with other elements.
 */
export function setsToList(desired: Ruleset, observed: ObservedTable): string[] {
  const out: string[] = [];
  for (const set of desired.sets) {
    const seen = observed.sets.get(set.spec.name);
    if (!seen || !('digest' in seen) || isDynamic(set.spec) || !sameSetSpec(seen.spec, set.spec)) continue;
    if (!holdsExactly(seen.digest, set.elements)) out.push(set.spec.name);
  }
  return out;
}

/** Sorted without repeats (a ruleset's elements are sorted: repeats would be neighbours). */
function distinctSorted(elements: readonly Element[]): boolean {
  for (let i = 1; i < elements.length; i++)
    if (!((elements[i - 1] as Element) < (elements[i] as Element))) return false;
  return true;
}

function replacePlan(desired: Ruleset, reason: string): Plan {
  const c = new Commands(desired.family, desired.table);
  const plan = fullPlan('replace', desired);
  return { ...plan, commands: [c.deleteTable(), ...plan.commands], reason };
}

function fullPlan(kind: 'create' | 'replace', desired: Ruleset): Plan {
  const elements = desired.sets.reduce((n, s) => n + (isDynamic(s.spec) ? 0 : s.elements.length), 0);
  return {
    commands: createCommands(desired),
    summary: {
      kind,
      chainsAdded: desired.chains.length,
      chainsChanged: 0,
      chainsDeleted: 0,
      elementsAdded: elements,
      elementsDeleted: 0,
    },
  };
}

export function sameContent(chain: Chain, ruleCount: number, fingerprint: string | undefined): boolean {
  if (chain.rules.length !== ruleCount) return false;
  return chain.rules.length === 0 || fingerprint === chainFingerprint(chain);
}

/** Differences a flush-and-refill cannot repair: then the table is replaced whole, atomically. */
export function incompatibility(desired: Ruleset, observed: ObservedTable): string | undefined {
  for (const chain of desired.chains) {
    const seen = observed.chains.get(chain.name);
    if (!seen) continue;
    const a = chain.base;
    const b = seen.base;
    if (
      Boolean(a) !== Boolean(b) ||
      (a && b && (a.type !== b.type || a.hook !== b.hook || a.priority !== b.priority))
    ) {
      return `chain ${chain.name} has a different hook`;
    }
  }
  for (const set of desired.sets) {
    const seen = observed.sets.get(set.spec.name);
    if (seen && !sameSetSpec(seen.spec, set.spec)) return `set ${set.spec.name} has a different definition`;
  }
  return undefined;
}

// What a key of kproxy's sets can look like: addresses, prefixes, protocol names, ports.
const KEY_TEXT = /^[A-Za-z0-9.:/ -]+$/;

/** An element someone else wrote that the plan could not name safely: replace the table instead. */
export function unrecognisedElement(observed: ObservedTable): string | undefined {
  for (const [name, set] of observed.sets) {
    // A set still read as a digest needs no element named: it holds the desired ones, or goes whole.
    if (!('elements' in set)) continue;
    for (const text of set.elements) {
      if (!KEY_TEXT.test(elementKey(text))) return `set ${name} holds an element kproxy did not write`;
    }
  }
  return undefined;
}
