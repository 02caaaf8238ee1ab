/**
 * @module backends/nftables/kernel/apply
 * Brings kproxy's nftables tables to the desired rulesets: reads what the kernel holds, plans
 * the difference for every family, and commits all of it as ONE nft transaction. If the commit
 * fails the kernel keeps the previous rules untouched (nft transactions are all-or-nothing).
 */
import type { Nft } from './nft.ts';
import type { Ruleset, Transaction } from '../render/ruleset.ts';
import type { NftFamily } from '../render/syntax.ts';
import type { Fragment } from '../render/syntax.ts';
import {
  lightObservedTable,
  parseObservedTable,
  sameSetSpec,
  type ObservedChain,
  type ObservedSet,
  type ObservedTable,
} from '../render/observed.ts';
import { chainFingerprint, isDynamic } from '../render/ruleset.ts';
import type { KernelCall } from '../../../kernel/kernel-calls.ts';
import type { Logger } from '../../../util/log.ts';
import type { DumpRequest, DumpResult } from './netlink-dump.ts';
import { planTransaction, setsToList, type PlanSummary } from '../render/diff.ts';
import type { DigestSeeds } from '../render/elements-digest.ts';
import { TABLE } from '../render/layout.ts';
import { createCommands, stagedCreateCommands } from '../render/ruleset.ts';
import { elementLoadChunks, loadableOverNetlink, type ElementLoad } from './netlink-elements.ts';
import { appendAll } from '../../../util/arrays.ts';

export interface FamilySyncReport {
  readonly family: NftFamily;
  readonly summary: PlanSummary;
  readonly reason?: string;
  /** Commands planned for this family (0: the kernel already matched). */
  readonly commands: number;
}

export interface SyncReport {
  readonly families: readonly FamilySyncReport[];
  /** Commands committed (0 when the kernel already matched). */
  readonly commands: number;
}

/** A reading of a table, and the ruleset generation it is known to show (netlink reads only). */
interface Reading {
  readonly observed: ObservedTable | undefined;
  readonly generation?: number;
  /** A netlink dump's request and the one generation it saw: digested sets are listed from there. */
  readonly dumped?: { readonly request: DumpRequest; readonly generation: number };
}

export class NftablesApplier {
  private readonly nft: Nft;
  private readonly kernelCall: KernelCall | undefined;
  /** Readings started ahead of the sync that takes them, by `family table`. */
  private readonly prefetched = new Map<string, Promise<Reading>>();
  private readonly log: Pick<Logger, 'warn'> | undefined;
  /** Netlink reads answer sets as digests under these (random: nobody outside can aim at a collision). */
  private readonly seeds: DigestSeeds = randomSeeds();
  /**
   * `kernelCall`: reads the table over netlink (netlink-dump.ts) instead of `nft -j list table`,
   * and loads a new table's elements over netlink (netlink-elements.ts); `log` hears when that
   * load failed and nft did the create instead.
   */
  constructor(nft: Nft, kernelCall?: KernelCall, log?: Pick<Logger, 'warn'>) {
    this.nft = nft;
    this.kernelCall = kernelCall;
    this.log = log;
  }

  /**
   * Plans every family against what the kernel holds now and commits the difference atomically
   * (a table the kernel does not hold yet is created as `apply` creates it).
   */
  async sync(rulesets: readonly Ruleset[], options: { check?: boolean } = {}): Promise<SyncReport> {
    const families: FamilySyncReport[] = [];
    const commands: Fragment[] = [];
    const created: Ruleset[] = [];
    for (const rs of rulesets) {
      const observed = await this.observe(rs);
      const plan = planTransaction(rs, observed);
      if (plan.summary.kind === 'create' && !options.check) created.push(rs);
      else appendAll(commands, plan.commands);
      families.push({
        family: rs.family,
        summary: plan.summary,
        commands: plan.commands.length,
        ...(plan.reason ? { reason: plan.reason } : {}),
      });
    }
    await (options.check ? this.nft.apply(commands, options) : this.apply(commands, created));
    return { families, commands: families.reduce((n, f) => n + f.commands, 0) };
  }

  /**
   * Commits commands planned elsewhere (a partial sync's), atomically, and creates the tables of
   * `created`, which the kernel does not hold: in stages when their elements can go over netlink
   * (`createStaged`), else in the same transaction.
   */
  async apply(commands: Transaction, created: readonly Ruleset[] = []): Promise<void> {
    // What was read ahead shows the kernel before this commit: nobody may take it after.
    this.prefetched.clear();
    if (created.length > 0 && this.kernelCall) await this.createStaged(created, commands, this.kernelCall);
    else await this.nft.apply([...commands, ...created.flatMap(createCommands)]);
  }

  /**
   * Creates tables the kernel does not hold (with `others`, the other families' changes, in the
   * first commit): nft commits each table without its base chains (no packet reaches it) and
   * the elements of its large sets; those go over netlink, where nft would spend ~1 s parsing
   * them at 10,000 Services; the last nft commit adds the base chains, and with them the whole
   * ruleset takes effect at once. If any step fails the new tables are deleted, so the kernel is
   * back to holding none of them; when it was the netlink load (the library missing, the child
   * gone, a refusal), nft creates them in one transaction instead, as without netlink. Any other
   * error goes on (the caller retries with a full sync).
   */
  private async createStaged(created: readonly Ruleset[], others: Transaction, kernelCall: KernelCall): Promise<void> {
    const staged = created.map((rs) => ({ rs, ...stagedCreateCommands(rs, (s) => loadableOverNetlink(s.spec)) }));
    // Nothing for netlink (small tables): one transaction, as any other.
    if (staged.every((s) => s.bulk.length === 0))
      return this.nft.apply([...others, ...created.flatMap(createCommands)]);
    try {
      await this.nft.apply([...others, ...staged.flatMap((s) => s.unhooked)]);
      for (const { rs, bulk } of staged) {
        const load: ElementLoad = {
          family: rs.family,
          table: rs.table,
          sets: bulk.map(({ spec, elements }) => ({
            name: spec.name,
            keyType: spec.keyType,
            ...(spec.dataType ? { dataType: spec.dataType } : {}),
            verdictMap: spec.verdictMap,
            elements,
          })),
        };
        if (load.sets.length > 0) await loadOverNetlink(kernelCall, load);
      }
      await this.nft.apply(staged.flatMap((s) => s.hooks));
    } catch (e) {
      for (const { rs } of staged) await this.nft.deleteTable(rs.family, rs.table).catch(() => false);
      if (!(e instanceof ElementLoadError)) throw e;
      this.log?.warn({ err: e.message }, 'new table: its elements could not go over netlink; nft creates it whole');
      // `others` were committed with the first stage.
      await this.nft.apply(created.flatMap(createCommands));
    }
  }

  /**
   * What the kernel holds in kproxy's table of `desired`'s family, or undefined if nothing: every
   * set that differs from `desired` with its elements listed, the others possibly as a digest.
   */
  async observe(desired: Ruleset): Promise<ObservedTable | undefined> {
    return (await this.startObserving(desired)).against(desired);
  }

  /** What the kernel holds in kproxy's table of this family, every set's elements listed. */
  async observeListed(where: TableRef): Promise<ObservedTable | undefined> {
    return (await (await this.read(where, { listed: true })).result).observed;
  }

  /**
   * Starts reading the table and resolves as soon as the read is under way: over netlink, the
   * dump then runs in the spawner's child while this process renders (a full sync's render and
   * read overlap: ~1 s each at 10,000 Services). `against(desired)` is the reading, in which sets
   * the dump gave as a digest are listed when they differ from the desired ones. A reading
   * prefetched for this table is taken instead when the kernel's ruleset generation shows nothing
   * was committed since it was made.
   */
  async startObserving(
    where: TableRef,
  ): Promise<{ readonly against: (desired: Ruleset) => Promise<ObservedTable | undefined> }> {
    const early = this.prefetched.get(tableKey(where));
    this.prefetched.delete(tableKey(where));
    const reading = early && this.kernelCall ? this.ifStillCurrent(early, where, this.kernelCall) : this.read(where);
    const result = (await reading).result;
    // Awaited later, after the render: a failure must not count as unhandled meanwhile.
    result.catch(() => undefined);
    return { against: async (desired) => this.listDiffering(await result, desired) };
  }

  /**
   * The reading with the elements of its digested sets that differ from `desired` listed, read
   * in the generation the dump saw; when the kernel has moved on since, the whole table again.
   */
  private async listDiffering(reading: Reading, desired: Ruleset): Promise<ObservedTable | undefined> {
    const observed = reading.observed;
    const names = observed ? setsToList(desired, observed) : [];
    if (!observed || names.length === 0) return observed;
    const { dumped } = reading;
    if (dumped && this.kernelCall) {
      const { family, table, sets: all } = dumped.request;
      const request: DumpRequest = { family, table, sets: all.filter((s) => names.includes(s.name)) };
      const dump = await this.kernelCall<DumpResult>('readNftTable', request).catch(() => undefined);
      if (dump && !('undecodable' in dump) && dump.generation === dumped.generation) {
        const sets = new Map(observed.sets);
        for (const name of names) {
          const elements = dump.elements[name];
          const seen = observed.sets.get(name);
          if (seen && Array.isArray(elements)) sets.set(name, { spec: seen.spec, elements: new Set(elements) });
        }
        return { chains: observed.chains, sets };
      }
    }
    return this.observeListed(desired);
  }

  /**
   * Starts reading a table now, for the next {@link startObserving} of it: at start the daemon
   * reads what the kernel holds while its caches fill, instead of after they have (1-2 s at
   * 10,000 Services). Only over netlink, whose readings carry the ruleset generation.
   */
  prefetch(where: TableRef): void {
    if (!this.kernelCall) return;
    const reading = this.read(where).then((r) => r.result);
    reading.catch(() => undefined);
    this.prefetched.set(tableKey(where), reading);
  }

  /** The prefetched reading if the kernel's ruleset generation still is the one it showed, else a new one. */
  private async ifStillCurrent(
    early: Promise<Reading>,
    where: TableRef,
    kernelCall: KernelCall,
  ): Promise<{ readonly result: Promise<Reading> }> {
    const now = kernelCall<number>('nftGeneration', null);
    const result = Promise.all([early, now]).then(
      async ([r, generation]) =>
        r.generation !== undefined && r.generation === generation ? r : (await this.read(where)).result,
      async () => (await this.read(where)).result,
    );
    return { result };
  }

  /** A reading under way: over netlink when it can (sets as digests unless `listed`), else through nft. */
  private async read(
    where: TableRef,
    options: { listed?: boolean } = {},
  ): Promise<{ readonly result: Promise<Reading> }> {
    const byNetlink = this.kernelCall
      ? await this.startNetlinkRead(where, this.kernelCall, options.listed ? undefined : this.seeds)
      : undefined;
    return byNetlink ?? { result: this.readByNft(where).then((observed) => ({ observed })) };
  }

  private async readByNft(where: TableRef): Promise<ObservedTable | undefined> {
    const listing = await this.nft.listTable(where.family, where.table);
    return listing === undefined ? undefined : parseObservedTable(listing);
  }

  /**
   * The reading from the declarations (`nft -t`: no rules, no elements) and a netlink dump of the
   * rules' fingerprints and the elements. Undefined when the table declares nothing (absent or
   * empty: nft tells them apart); a result that falls back to nft when the dump cannot decode it.
   * The reading carries the ruleset generation when the dump saw the one current before the
   * declarations were listed (nothing was committed in between). With `seeds`, the dump gives
   * each set's elements as their digest.
   * (The result is wrapped: an async function would wait for a promise it returned.)
   */
  private async startNetlinkRead(
    where: TableRef,
    kernelCall: KernelCall,
    seeds: DigestSeeds | undefined,
  ): Promise<{ readonly result: Promise<Reading> } | undefined> {
    const generation = kernelCall<number>('nftGeneration', null).catch(() => undefined);
    const listings = await Promise.all(
      (['chains', 'sets', 'maps'] as const).map((kind) => this.nft.listObjects(kind, where.family, true)),
    );
    const declared = parseObservedTable({ nftables: listings.flatMap(itemsOf) }, where.table);
    if (declared.chains.size === 0 && declared.sets.size === 0) return undefined;
    // Sets the packet path fills (affinity: nft lists `timeout`, not `dynamic`) are never compared.
    const withElements = [...declared.sets.values()].filter(
      (s) => !isDynamic(s.spec) && !s.spec.flags.includes('timeout'),
    );
    const request: DumpRequest = {
      family: where.family,
      table: where.table,
      sets: withElements.map(({ spec }) => ({
        name: spec.name,
        keyType: spec.keyType,
        ...(spec.dataType ? { dataType: spec.dataType } : {}),
        verdictMap: spec.verdictMap,
        interval: spec.flags.includes('interval'),
      })),
      ...(seeds ? { digestSeeds: seeds } : {}),
    };
    // Sent now (the call writes its request before it first waits); read when it is answered.
    const dumping = kernelCall<DumpResult>('readNftTable', request);
    const byNft = async (): Promise<Reading> => ({ observed: await this.readByNft(where) });
    return {
      // A dump that fails (libraries missing, the child gone) or cannot decode: nft reads instead.
      result: dumping.then(async (dump) => {
        if ('undecodable' in dump) return byNft();
        const before = await generation;
        const observed = observedFrom(declared, dump);
        const dumped = dump.generation === undefined ? {} : { dumped: { request, generation: dump.generation } };
        return before !== undefined && dump.generation === before
          ? { observed, generation: before, ...dumped }
          : { observed, ...dumped };
      }, byNft),
    };
  }

  /** What the kernel holds, without reading its rules; chains' contents are assumed to be `committed`. */
  async observeLight(rs: Ruleset, committed: Ruleset): Promise<ObservedTable | undefined> {
    const listings = await Promise.all(
      (['chains', 'sets', 'maps'] as const).map((kind) => this.nft.listObjects(kind, rs.family)),
    );
    const known = new Map(
      committed.chains.map((c) => [
        c.name,
        { ruleCount: c.rules.length, ...(c.rules.length > 0 ? { fingerprint: chainFingerprint(c) } : {}) },
      ]),
    );
    return lightObservedTable(listings, rs.table, known);
  }

  /**
   * True when the kernel holds exactly the desired rulesets (nothing left to plan). `light`: right
   * after committing them, check chains, sets and maps without reading every rule back.
   */
  async matches(rulesets: readonly Ruleset[], options: { light?: boolean } = {}): Promise<boolean> {
    for (const rs of rulesets) {
      const observed = options.light ? await this.observeLight(rs, rs) : await this.observe(rs);
      if (!observed || planTransaction(rs, observed).commands.length > 0) return false;
    }
    return true;
  }

  /**
   * True when the kernel holds every chain, set and map of the rulesets with the same definition,
   * read without rules or elements (milliseconds at any size): the check right after kproxy's own
   * transaction, which the kernel applied whole, and the periodic deep check.
   */
  async declarationsMatch(rulesets: readonly Ruleset[]): Promise<boolean> {
    for (const rs of rulesets) {
      const listings = await Promise.all(
        (['chains', 'sets', 'maps'] as const).map((kind) => this.nft.listObjects(kind, rs.family, true)),
      );
      const seen = parseObservedTable({ nftables: listings.flatMap(itemsOf) }, rs.table);
      if (rs.chains.some((c) => !seen.chains.has(c.name)) || seen.chains.size !== rs.chains.length) return false;
      for (const set of rs.sets) {
        const s = seen.sets.get(set.spec.name);
        if (!s || !sameSetSpec(s.spec, set.spec)) return false;
      }
      if (seen.sets.size !== rs.sets.length) return false;
    }
    return true;
  }

  /** Removes kproxy's tables (and nothing else); returns the families that had one. */
  async cleanup(): Promise<NftFamily[]> {
    const removed: NftFamily[] = [];
    for (const family of ['ip', 'ip6'] as const) {
      if (await this.nft.deleteTable(family, TABLE)) removed.push(family);
    }
    return removed;
  }
}

/** Which table: a family's kproxy table (a Ruleset is one). */
export interface TableRef {
  readonly family: NftFamily;
  readonly table: string;
}

const tableKey = (where: TableRef): string => `${where.family} ${where.table}`;

/** The netlink load of a new table's elements failed (nft may still create the table). */
class ElementLoadError extends Error {}

/** Elements per message to the tool child (~1.5 MB of JSON): see `elementLoadChunks`. */
const ELEMENTS_PER_CALL = 32_768;

async function loadOverNetlink(kernelCall: KernelCall, load: ElementLoad): Promise<void> {
  try {
    for (const chunk of elementLoadChunks(load, ELEMENTS_PER_CALL)) await kernelCall<number>('loadNftElements', chunk);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    throw new ElementLoadError(`${load.family} ${load.table}: ${message}`);
  }
}

/** The declarations with the dump's rule counts, fingerprints and elements. */
function observedFrom(declared: ObservedTable, dump: Exclude<DumpResult, { undecodable: string }>): ObservedTable {
  const chains = new Map<string, ObservedChain>();
  for (const [name, chain] of declared.chains) {
    const rules = dump.chains[name];
    chains.set(name, {
      ...(chain.base ? { base: chain.base } : {}),
      ruleCount: rules?.ruleCount ?? 0,
      ...(rules?.fingerprint !== undefined ? { fingerprint: rules.fingerprint } : {}),
    });
  }
  const sets = new Map<string, ObservedSet>();
  for (const [name, set] of declared.sets) {
    const elements = dump.elements[name] ?? [];
    sets.set(
      name,
      Array.isArray(elements) ? { spec: set.spec, elements: new Set(elements) } : { spec: set.spec, digest: elements },
    );
  }
  return { chains, sets };
}

function itemsOf(listing: unknown): unknown[] {
  const items = (listing as { nftables?: unknown } | null)?.nftables;
  return Array.isArray(items) ? items : [];
}

/** Fresh random digest seeds (one pair per applier). */
function randomSeeds(): DigestSeeds {
  const [a, b] = crypto.getRandomValues(new Uint32Array(2));
  return [a as number, b as number];
}
