/**
 * @module backends/iptables/render/plan
 * What one sync writes. A full sync compares the desired ruleset with what iptables-save shows
 * and writes every chain that differs, deletes kproxy's per-service chains nothing wants any more,
 * and inserts missing jump rules (each compared by its exact text, never added twice); when all
 * matches it writes nothing. A partial sync writes the chains it is told to, without reading.
 */
import { isKproxyServiceChain } from './names.ts';
import { type ChainRef, restoreText } from './restore.ts';
import type { SavedTables } from './saved.ts';
import type { IptChain, IptRuleset, JumpRule } from './types.ts';

export type Rewrite =
  /** Full: every chain that differs from `observed`, stale service chains, missing jumps. */
  | 'all-differing'
  /**
   * Partial: the desired chains with these names (in every table that has them), written without
   * reading; names in `deleteChains` (or in `chains`) that nothing desires are per-service chains to delete.
   */
  | { readonly chains: ReadonlySet<string>; readonly deleteChains?: ReadonlySet<string> };

export interface SyncPlan {
  /** iptables-restore --noflush input; empty when nothing changes. */
  readonly text: string;
  readonly changes: number;
  readonly chainsWritten: number;
  readonly chainsDeleted: number;
  readonly jumpsAdded: number;
  /** Duplicate jump rules removed (someone added ours twice). */
  readonly jumpsDeleted: number;
}

function sameRules(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function planSync(desired: IptRuleset, observed: SavedTables | undefined, rewrite: Rewrite): SyncPlan {
  const write: IptChain[] = [];
  const remove: ChainRef[] = [];
  const addJumps: JumpRule[] = [];
  const deleteJumps: JumpRule[] = [];
  const wanted = new Set(desired.chains.map((c) => `${c.table}\u0000${c.name}`));
  const desiredNames = new Set(desired.chains.map((c) => c.name));

  if (rewrite === 'all-differing') {
    for (const c of desired.chains) {
      const have = observed?.get(c.table)?.get(c.name);
      if (!have || !sameRules(have, c.rules)) write.push(c);
    }
    for (const [table, chains] of observed ?? []) {
      for (const name of chains.keys())
        if (isKproxyServiceChain(name) && !wanted.has(`${table}\u0000${name}`)) remove.push({ table, name });
    }
    const counted = new Map<string, number>();
    for (const j of desired.jumps) {
      const key = `${j.table}\u0000${j.chain}\u0000${j.rule}`;
      if (counted.has(key)) continue; // a jump listed twice is still one rule
      const have = (observed?.get(j.table)?.get(j.chain) ?? []).filter((r) => r === j.rule).length;
      counted.set(key, have);
      if (have === 0) addJumps.push(j);
      for (let i = 1; i < have; i++) deleteJumps.push(j);
    }
  } else {
    for (const c of desired.chains) if (rewrite.chains.has(c.name)) write.push(c);
    const stale = new Set([...(rewrite.deleteChains ?? []), ...rewrite.chains]);
    for (const name of stale) {
      if (desiredNames.has(name)) continue;
      if (!isKproxyServiceChain(name)) {
        if (rewrite.deleteChains?.has(name))
          throw new Error(`${name} is not a per-service chain: kproxy does not delete it`);
        continue;
      }
      remove.push({ table: 'nat', name });
    }
  }

  const changes = write.length + remove.length + addJumps.length + deleteJumps.length;
  return {
    text: changes === 0 ? '' : restoreText(desired.family, write, { deleteChains: remove, addJumps, deleteJumps }),
    changes,
    chainsWritten: write.length,
    chainsDeleted: remove.length,
    jumpsAdded: addJumps.length,
    jumpsDeleted: deleteJumps.length,
  };
}
