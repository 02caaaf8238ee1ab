/**
 * @module backends/iptables/render/restore
 * The text `iptables-restore --noflush` (`ip6tables-restore` for IPv6) reads, and the dump.
 * With --noflush, `:CHAIN - [0:0]` creates the chain or flushes it (both flavors), so a chain is
 * rewritten in full by its declaration and its `-A` lines, and a chain to delete is declared first
 * (flushed: nothing in it refers to other chains any more, and it exists even if it did not).
 */
import type { Family } from '../../../model/cluster.ts';
import { BUILTIN_CHAINS } from './names.ts';
import { chainName, foreignChainName } from './syntax.ts';
import type { IptChain, IptRuleset, IptTable, JumpRule, RuleText } from './types.ts';

export interface ChainRef {
  readonly table: IptTable;
  readonly name: string;
}

export interface RestoreOptions {
  /** Chains to flush and delete (`:CHAIN` then, after everything else, `-X CHAIN`). */
  readonly deleteChains?: readonly ChainRef[];
  /** Jump rules to insert, listed top first; each becomes `-I BUILTIN 1 …` (in reverse, so they end up in this order). */
  readonly addJumps?: readonly JumpRule[];
  /** Jump rules to delete (`-D CHAIN …`, the first match), from built-in or other software's chains. */
  readonly deleteJumps?: readonly JumpRule[];
  /** Chains to create empty (or flush) without rules. */
  readonly declareOnly?: readonly ChainRef[];
}

export const TABLE_ORDER: readonly IptTable[] = ['filter', 'nat', 'mangle'];

function checkRule(rule: RuleText): RuleText {
  if (/[\r\n]/.test(rule)) throw new Error(`rule text with a line break: ${JSON.stringify(rule)}`);
  return rule;
}

function checkBuiltin(family: Family, j: JumpRule): void {
  if (!(BUILTIN_CHAINS[j.table] as readonly string[] | undefined)?.includes(j.chain))
    throw new Error(`${family}: ${j.chain} is not a built-in chain of ${j.table}`);
}

/** `-A CHAIN rule`, or `-A CHAIN` for the empty rule. */
function append(chain: string, rule: RuleText): string {
  return rule === '' ? `-A ${chain}` : `-A ${chain} ${checkRule(rule)}`;
}

/** iptables-restore --noflush input: `chains` written in full, plus the options' changes; empty when nothing. */
export function restoreText(family: Family, chains: readonly IptChain[], opts: RestoreOptions = {}): string {
  const out: string[] = [];
  for (const table of TABLE_ORDER) {
    const written = chains.filter((c) => c.table === table);
    const deleted = (opts.deleteChains ?? []).filter((c) => c.table === table);
    const declared = (opts.declareOnly ?? []).filter((c) => c.table === table);
    const added = (opts.addJumps ?? []).filter((j) => j.table === table);
    const removed = (opts.deleteJumps ?? []).filter((j) => j.table === table);
    if (written.length + deleted.length + declared.length + added.length + removed.length === 0) continue;
    const seen = new Set<string>();
    const declare = (name: string, why: string) => {
      if (seen.has(name)) throw new Error(`${family} ${table}: chain ${name} ${why} and also elsewhere in one restore`);
      seen.add(name);
      out.push(`:${chainName(name)} - [0:0]`);
    };
    out.push(`*${table}`);
    for (const c of written) declare(c.name, 'written');
    for (const c of declared) declare(c.name, 'declared');
    for (const c of deleted) declare(c.name, 'deleted');
    // A jump may be deleted from any chain (someone else's included); one is added to built-in chains only.
    for (const j of removed) out.push(`-D ${foreignChainName(j.chain)} ${checkRule(j.rule)}`);
    for (const c of written) for (const r of c.rules) out.push(append(c.name, r));
    for (const j of [...added].reverse()) {
      checkBuiltin(family, j);
      out.push(`-I ${j.chain} 1 ${checkRule(j.rule)}`);
    }
    for (const c of deleted) out.push(`-X ${c.name}`);
    out.push('COMMIT');
  }
  return out.length === 0 ? '' : `${out.join('\n')}\n`;
}

/** The complete restore input for an empty kernel: chains declared, jumps and rules appended. */
function fullText(rs: IptRuleset): string {
  const out: string[] = [];
  for (const table of TABLE_ORDER) {
    const chains = rs.chains.filter((c) => c.table === table);
    const jumps = rs.jumps.filter((j) => j.table === table);
    if (chains.length === 0 && jumps.length === 0) continue;
    out.push(`*${table}`);
    for (const c of chains) out.push(`:${chainName(c.name)} - [0:0]`);
    for (const j of jumps) {
      checkBuiltin(rs.family, j);
      out.push(append(j.chain, j.rule));
    }
    for (const c of chains) for (const r of c.rules) out.push(append(c.name, r));
    out.push('COMMIT');
  }
  return out.map((l) => `${l}\n`).join('');
}

/**
 * What `kproxy dump --proxy-mode iptables` prints: per family a header line, then that family's
 * complete restore input for an empty kernel (jump rules appended, `-A`, in their final order).
 * Each section is accepted as-is by `iptables-restore --test` / `ip6tables-restore --test`.
 */
export function dumpText(rulesets: readonly IptRuleset[]): string {
  return rulesets
    .map((rs) => {
      const header = rs.family === 'ipv4' ? '# IPv4 (iptables-restore)' : '# IPv6 (ip6tables-restore)';
      return `${header}\n${fullText(rs)}`;
    })
    .join('');
}
