/**
 * @module backends/nftables/render/ruleset
 * A whole nftables table as a value (chains with their rules, sets and maps with their elements),
 * and the commands that create or change it. A transaction is a plain list of commands that can
 * be printed as nft text (one command per line) or as nftables JSON, checked, or applied.
 */
import { createHash } from 'node:crypto';
import type { Element, Fragment, NftFamily, Rule } from './syntax.ts';
import { commentCheck, elementJson, identifier, lazyFragment, ruleJsonExpr, ruleText } from './syntax.ts';
import { appendAll } from '../../../util/arrays.ts';

export type Hook = 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';

export interface BaseChainSpec {
  readonly type: 'filter' | 'nat';
  readonly hook: Hook;
  readonly priority: number;
}

export interface Chain {
  readonly name: string;
  readonly base?: BaseChainSpec;
  readonly rules: readonly Rule[];
}

export type SetFlag = 'interval' | 'dynamic' | 'timeout';

export interface SetSpec {
  readonly name: string;
  /** nft data types of the key's parts, e.g. ['ipv4_addr', 'inet_proto', 'inet_service']. */
  readonly keyType: readonly string[];
  /** A verdict map rather than a set. */
  readonly verdictMap: boolean;
  /** A data map's data types, e.g. ['ipv4_addr', 'inet_service'] (endpoints). */
  readonly dataType?: readonly string[];
  /**
   * The declaration as `typeof KEY : DATA` expressions, for keys `type` cannot declare (numgen's
   * integer has no fixed-size type name); `keyType`/`dataType` are then what nft lists back.
   */
  readonly typeOf?: string;
  readonly flags: readonly SetFlag[];
  readonly timeoutSeconds?: number;
}

export interface NftSet {
  readonly spec: SetSpec;
  /** Ignored for dynamic sets: the kernel fills those from the packet path. */
  readonly elements: readonly Element[];
}

export interface Ruleset {
  readonly family: NftFamily;
  readonly table: string;
  readonly chains: readonly Chain[];
  readonly sets: readonly NftSet[];
}

export type Transaction = readonly Fragment[];

const fingerprints = new WeakMap<Chain, string>();

/**
 * A chain's fingerprint, carried as the comment of its first rule so a later sync can compare.
 * Memoised per chain object: a partial sync reuses the unchanged service ports' chains.
 */
export function chainFingerprint(chain: Chain): string {
  const known = fingerprints.get(chain);
  if (known) return known;
  const h = createHash('sha256');
  for (const r of chain.rules) h.update(ruleText(r)).update('\n');
  const fp = `sum:${h.digest('base64url').slice(0, 16)}`;
  fingerprints.set(chain, fp);
  return fp;
}

export function isDynamic(spec: SetSpec): boolean {
  return spec.flags.includes('dynamic');
}

/** Canonical text of a set's definition, to tell whether an existing set can be kept. */
export function setSpecText(spec: SetSpec): string {
  const data = spec.verdictMap ? ' : verdict' : spec.dataType ? ` : ${spec.dataType.join(' . ')}` : '';
  const type = `${spec.keyType.join(' . ')}${data}`;
  const flags = spec.flags.length > 0 ? ` flags ${[...spec.flags].sort().join(',')} ;` : '';
  const timeout = spec.timeoutSeconds !== undefined ? ` timeout ${spec.timeoutSeconds}s ;` : '';
  return `type ${type} ;${flags}${timeout}`;
}

/** Builds commands for one table; every name passes through `identifier`. */
export class Commands {
  private readonly family: NftFamily;
  private readonly table: string;

  constructor(family: NftFamily, table: string) {
    this.family = family;
    this.table = identifier(table);
  }

  private where(): string {
    return `${this.family} ${this.table}`;
  }

  private ref(extra: Record<string, unknown> = {}): Record<string, unknown> {
    return { family: this.family, table: this.table, ...extra };
  }

  /** `owner`: the table belongs to the netlink socket that adds it; the kernel deletes it when that closes. */
  addTable({ owner = false } = {}): Fragment {
    const table = { family: this.family, name: this.table };
    return owner
      ? {
          text: `add table ${this.where()} { flags owner ; }`,
          json: { add: { table: { ...table, flags: ['owner'] } } },
        }
      : { text: `add table ${this.where()}`, json: { add: { table } } };
  }

  deleteTable(): Fragment {
    return {
      text: `delete table ${this.where()}`,
      json: { delete: { table: { family: this.family, name: this.table } } },
    };
  }

  addChain(chain: Chain): Fragment {
    const name = identifier(chain.name);
    const b = chain.base;
    if (!b) return { text: `add chain ${this.where()} ${name}`, json: { add: { chain: this.ref({ name }) } } };
    return {
      text: `add chain ${this.where()} ${name} { type ${b.type} hook ${b.hook} priority ${b.priority} ; policy accept ; }`,
      json: { add: { chain: this.ref({ name, type: b.type, hook: b.hook, prio: b.priority, policy: 'accept' }) } },
    };
  }

  flushChain(name: string): Fragment {
    return { text: `flush chain ${this.where()} ${identifier(name)}`, json: { flush: { chain: this.ref({ name }) } } };
  }

  deleteChain(name: string): Fragment {
    return {
      text: `delete chain ${this.where()} ${identifier(name)}`,
      json: { delete: { chain: this.ref({ name }) } },
    };
  }

  addRule(chain: string, rule: Rule): Fragment {
    return lazyFragment(`add rule ${this.where()} ${identifier(chain)} ${ruleText(rule)}`, () => {
      const json: Record<string, unknown> = this.ref({ chain, expr: ruleJsonExpr(rule) });
      if (rule.comment !== undefined) json['comment'] = rule.comment;
      return { add: { rule: json } };
    });
  }

  addSet(spec: SetSpec): Fragment {
    const kind = spec.verdictMap || spec.dataType ? 'map' : 'set';
    const json: Record<string, unknown> = this.ref({
      name: spec.name,
      type: spec.keyType.length === 1 ? spec.keyType[0] : spec.keyType,
    });
    if (spec.verdictMap) json['map'] = 'verdict';
    // What nft 1.0.6 lists; its JSON parser refuses concatenated data (docs/adr/0008).
    if (spec.dataType) json['map'] = spec.dataType.join(' . ');
    // nft 1.0.6's JSON parser knows no `dynamic` flag; it marks sets updated from the packet path itself.
    const jsonFlags = spec.flags.filter((f) => f !== 'dynamic').sort();
    if (jsonFlags.length > 0) json['flags'] = jsonFlags;
    if (spec.timeoutSeconds !== undefined) json['timeout'] = spec.timeoutSeconds;
    return {
      text: `add ${kind} ${this.where()} ${identifier(spec.name)} { ${spec.typeOf ? `typeof ${spec.typeOf} ;` : setSpecText(spec)} }`,
      json: { add: { [kind]: json } },
    };
  }

  deleteSet(spec: SetSpec): Fragment {
    const kind = spec.verdictMap || spec.dataType ? 'map' : 'set';
    return {
      text: `delete ${kind} ${this.where()} ${identifier(spec.name)}`,
      json: { delete: { [kind]: this.ref({ name: spec.name }) } },
    };
  }

  /** One command for many elements: the kernel takes them in one batch (one per line in text). */
  addElements(set: string, elements: readonly Element[]): Fragment {
    return this.elements('add', set, elements);
  }

  /** Deleting a map element names only its key (`elementKey`). */
  deleteElements(set: string, keys: readonly string[]): Fragment {
    return this.elements('delete', set, keys);
  }

  private elements(op: 'add' | 'delete', set: string, elements: readonly Element[]): Fragment {
    const head = `${op} element ${this.where()} ${identifier(set)}`;
    const text =
      elements.length === 1 && elements[0] ? `${head} { ${elements[0]} }` : `${head} {\n\t${elements.join(',\n\t')}\n}`;
    return lazyFragment(text, () => ({ [op]: { element: this.ref({ name: set, elem: elements.map(elementJson) }) } }));
  }
}

/**
 * The changes of one sync, collected in any order and emitted in the one order the kernel accepts
 * within a single transaction: new sets and chains first (rules and elements refer to them),
 * flushes, element deletions, element additions, rules, and last the deletion of chains and sets
 * nothing refers to any more (Linux >= 5.x resolves these references within one transaction;
 * upstream kube-proxy deletes stale chains a second later only for older kernels).
 */
export class TransactionBuilder {
  private readonly c: Commands;
  private readonly newSets: Fragment[] = [];
  private readonly newChains: Fragment[] = [];
  private readonly flushes: Fragment[] = [];
  private readonly elementDeletes: Fragment[] = [];
  private readonly elementAdds: Fragment[] = [];
  private readonly rules: Fragment[] = [];
  private readonly staleFlushes: Fragment[] = [];
  private readonly staleDeletes: Fragment[] = [];
  readonly counts = { chainsAdded: 0, chainsChanged: 0, chainsDeleted: 0, elementsAdded: 0, elementsDeleted: 0 };

  constructor(family: NftFamily, table: string) {
    this.c = new Commands(family, table);
  }

  addChain(chain: Chain): void {
    this.newChains.push(this.c.addChain(chain));
    appendAll(this.rules, ruleCommands(this.c, chain));
    this.counts.chainsAdded++;
  }

  /** Flushes an existing chain and writes its rules again. */
  replaceChain(chain: Chain): void {
    this.flushes.push(this.c.flushChain(chain.name));
    appendAll(this.rules, ruleCommands(this.c, chain));
    this.counts.chainsChanged++;
  }

  deleteChain(name: string): void {
    this.staleFlushes.push(this.c.flushChain(name));
    this.staleDeletes.push(this.c.deleteChain(name));
    this.counts.chainsDeleted++;
  }

  addSet(spec: SetSpec): void {
    this.newSets.push(this.c.addSet(spec));
  }

  deleteSet(spec: SetSpec): void {
    this.staleDeletes.push(this.c.deleteSet(spec));
  }

  addElements(set: string, elements: readonly Element[]): void {
    if (elements.length === 0) return;
    this.elementAdds.push(this.c.addElements(set, elements));
    this.counts.elementsAdded += elements.length;
  }

  /** Map elements are deleted by key alone. */
  deleteElements(set: string, keys: readonly string[]): void {
    if (keys.length === 0) return;
    this.elementDeletes.push(this.c.deleteElements(set, keys));
    this.counts.elementsDeleted += keys.length;
  }

  commands(): Fragment[] {
    return [
      ...this.newSets,
      ...this.newChains,
      ...this.flushes,
      ...this.elementDeletes,
      ...this.elementAdds,
      ...this.rules,
      ...this.staleFlushes,
      ...this.staleDeletes,
    ];
  }
}

/** Every command that creates the ruleset from nothing, in an order nft accepts. */
export function createCommands(rs: Ruleset): Fragment[] {
  const c = new Commands(rs.family, rs.table);
  const out: Fragment[] = [c.addTable()];
  for (const chain of rs.chains) out.push(c.addChain(chain));
  for (const set of rs.sets) out.push(c.addSet(set.spec));
  appendAll(out, elementCommands(c, rs.sets));
  for (const chain of rs.chains) appendAll(out, ruleCommands(c, chain));
  return out;
}

/**
 * A create in stages that packets never see half done: `unhooked` is the whole table but its
 * base chains and without the elements of the sets `bulk` picks (a table with no base chain is
 * on no packet's path); those elements are loaded next, in any number of commits; `hooks` then
 * adds the base chains with their rules, and the ruleset takes effect in that one commit.
 */
export function stagedCreateCommands(
  rs: Ruleset,
  bulk: (set: NftSet) => boolean,
): { readonly unhooked: Fragment[]; readonly bulk: NftSet[]; readonly hooks: Fragment[] } {
  const c = new Commands(rs.family, rs.table);
  const regular = rs.chains.filter((ch) => !ch.base);
  const base = rs.chains.filter((ch) => ch.base);
  const bulkSets = rs.sets.filter((s) => !isDynamic(s.spec) && s.elements.length > 0 && bulk(s));
  const byNft = rs.sets.filter((s) => !bulkSets.includes(s));
  const unhooked: Fragment[] = [c.addTable()];
  for (const chain of regular) unhooked.push(c.addChain(chain));
  for (const set of rs.sets) unhooked.push(c.addSet(set.spec));
  appendAll(unhooked, elementCommands(c, byNft));
  for (const chain of regular) appendAll(unhooked, ruleCommands(c, chain));
  const hooks = base.map((chain) => c.addChain(chain));
  for (const chain of base) appendAll(hooks, ruleCommands(c, chain));
  return { unhooked, bulk: bulkSets, hooks };
}

function elementCommands(c: Commands, sets: readonly NftSet[]): Fragment[] {
  return sets
    .filter((set) => !isDynamic(set.spec) && set.elements.length > 0)
    .map((set) => c.addElements(set.spec.name, set.elements));
}

/** The rules of a chain, the first carrying the chain's fingerprint. */
export function ruleCommands(c: Commands, chain: Chain): Fragment[] {
  const fingerprint = chainFingerprint(chain);
  commentCheck(fingerprint);
  return chain.rules.map((r, i) => c.addRule(chain.name, i === 0 ? { ...r, comment: fingerprint } : r));
}

export function transactionText(tx: Transaction): string {
  return tx.map((f) => `${f.text}\n`).join('');
}

export function transactionJson(tx: Transaction): { nftables: unknown[] } {
  return { nftables: tx.map((f) => f.json) };
}
