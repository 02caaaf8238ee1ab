/**
 * @module backends/nftables/backend
 * nftables mode behind the seam: keeps each family's table as the sum of its service ports'
 * fragments between syncs, so a partial sync swaps the changed Services' fragments and commits
 * exactly the delta; a full sync re-renders everything and plans against what the kernel really
 * holds (adopting it at start, repairing drift). Every sync is ONE `nft -f -` transaction for both
 * families: the kernel takes all of it or none of it.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Family } from '../../model/cluster.ts';
import {
  nodeStateOf,
  type BackendDependencies,
  type FamilyState,
  type ProxyBackend,
  type SyncReport,
  type SyncRequest,
} from '../../proxy/backend.ts';
import type { Exec } from '../../kernel/exec.ts';
import { portCount } from '../../proxy/service-ports-map.ts';
import { appendAll } from '../../util/arrays.ts';
import type { Problem } from '../../util/problems.ts';
import { NftablesApplier } from './kernel/apply.ts';
import { Nft } from './kernel/nft.ts';
import { planTransaction } from './render/diff.ts';
import { describeTableDrift } from './render/drift.ts';
import { fragmentContext, renderNftables, TABLE } from './render/layout.ts';
import type { Ruleset } from './render/ruleset.ts';
import { renderServicePort, type FragmentContext, type ServicePortFragment } from './render/service-port.ts';
import { nftFamily, type Fragment } from './render/syntax.ts';
import { TableState } from './render/table-state.ts';

/** Every this many light checks, one also compares set and map definitions (the others: chain handles). */
const DEEP_CHECK_EVERY = 20;

/** Every this many full syncs, one reads every rule back (the others read chains, sets and maps). */
const COMPLETE_READ_EVERY = 10;

interface Committed {
  readonly contextKey: string;
  readonly table: TableState;
}

export class NftablesProxyBackend implements ProxyBackend {
  private readonly applier: NftablesApplier;
  /** Per family, the table as last committed; absent: unknown (start, failure), the next sync is full. */
  private readonly committed = new Map<Family, Committed>();
  private fullSyncs = 0;
  /** The family states of the last successful sync (immutable: identity means same content). */
  private lastSynced = new WeakSet<FamilyState>();
  /** Bumped when a sync starts and ends: a light check that overlapped one is not trusted. */
  private generation = 0;

  private readonly exec: Exec;

  constructor(deps: Pick<BackendDependencies, 'exec' | 'kernelCall'> & Partial<Pick<BackendDependencies, 'log'>>) {
    this.exec = deps.exec;
    this.applier = new NftablesApplier(new Nft(deps.exec), deps.kernelCall, deps.log);
  }

  /** Reads kproxy's tables of both families now: a restart's first sync plans against this reading. */
  readKernelAhead(): void {
    for (const family of ['ip', 'ip6'] as const) this.applier.prefetch({ family, table: TABLE });
  }

  async sync(request: SyncRequest): Promise<SyncReport> {
    this.generation++;
    try {
      return await this.syncNow(request);
    } finally {
      this.generation++;
    }
  }

  /**
   * The periodic light consistency check (docs/adr/0007), every `intervalMs`: kproxy's chains are
   * all there with the handles they had after the last sync (`nft -j list chains`: 0.15 s at
   * 10,000 Services, where `nft list tables` builds nft's whole cache and takes 8 s; catches a
   * deleted or re-created table or chain and `nft flush ruleset`), and on every
   * {@link DEEP_CHECK_EVERY}th check the chains, sets and maps declared compared with what was last
   * committed (not rules or elements: reading those back costs seconds at 10,000 Services; the
   * periodic full sync compares elements). A difference calls
   * `onLost`, and the reconciler runs a full sync, which restores and reports the drift. A check
   * that overlaps a sync is discarded.
   */
  watchForFlush(onLost: () => void, intervalMs: number): () => void {
    let busy = false;
    let checks = 0;
    /** Chain handles (`family name` → handle) seen after the sync of `baselineGeneration`. */
    let baseline = new Map<string, number>();
    let baselineGeneration = -1;
    const check = async (): Promise<boolean> => {
      const generation = this.generation;
      const families = [...this.committed.keys()].map((f) => (f === 'ipv4' ? 'ip' : 'ip6'));
      const handles = await this.chainHandles(families);
      if (generation !== this.generation || generation % 2 === 1) return true;
      // No table at all (deleted, or `nft flush ruleset`).
      if (families.some((f) => ![...handles.keys()].some((k) => k.startsWith(`${f} `)))) return false;
      // The first check after a sync takes the baseline; later ones compare with it.
      if (baselineGeneration !== generation) {
        baseline = handles;
        baselineGeneration = generation;
      } else if (handles.size !== baseline.size || [...handles].some(([k, h]) => baseline.get(k) !== h)) return false;
      if (++checks % DEEP_CHECK_EVERY !== 0) return true;
      const matched = await this.applier.declarationsMatch([...this.committed.values()].map((c) => c.table.ruleset()));
      return matched || generation !== this.generation || generation % 2 === 1;
    };
    const timer = setInterval(() => {
      if (busy || this.committed.size === 0 || this.generation % 2 === 1) return;
      busy = true;
      check()
        .then((ok) => {
          if (!ok) onLost();
        })
        .catch(() => {
          // nft failed to list: the next check (or sync) will tell.
        })
        .finally(() => {
          busy = false;
        });
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** The handles of kproxy's chains in these nft families, by `family name`. */
  private async chainHandles(families: readonly string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const family of families) {
      const r = await this.exec('nft', ['-j', 'list', 'chains', family]);
      if (r.exitCode !== 0) throw new Error(`nft list chains ${family}: ${r.stderr.trim()}`);
      const doc = JSON.parse(r.stdout) as {
        nftables?: { chain?: { table?: string; name?: string; handle?: number } }[];
      };
      for (const e of doc.nftables ?? []) {
        if (e.chain?.table === TABLE && e.chain.handle !== undefined)
          out.set(`${family} ${e.chain.name}`, e.chain.handle);
      }
    }
    return out;
  }

  private async syncNow(request: SyncRequest): Promise<SyncReport> {
    const commands: Fragment[] = [];
    /** Tables the kernel does not hold yet: the applier creates them (in stages). */
    const created: Ruleset[] = [];
    let changes = 0;
    const next = new Map<Family, Committed>();
    const problems: Problem[] = [];
    let full = false;
    let drift = false;
    const servicePorts: number[] = [];
    for (const family of request.families) {
      const ctx = fragmentContext(family.context, portCount(family.services));
      const contextKey = JSON.stringify([family.context, ctx.endpointShards]);
      const was = this.committed.get(family.context.family);
      let table: TableState;
      if (request.full || !was || was.contextKey !== contextKey) {
        full = true;
        const committed = was?.table.ruleset();
        // Reading everything back is the costly part of a full sync: a periodic one reads chains,
        // sets and maps only, and everything only now and then. A complete read runs while the
        // desired state renders.
        const complete = !committed || this.fullSyncs % COMPLETE_READ_EVERY === 0;
        const reading = complete
          ? await this.applier.startObserving({ family: nftFamily(family.context.family), table: TABLE })
          : undefined;
        const kept = was?.contextKey === contextKey ? was.table : undefined;
        table = new TableState(family.context, renderAll(family, ctx, kept), ctx);
        const rs = table.ruleset();
        const observed = reading
          ? await reading.against(rs)
          : await this.applier.observeLight(rs, committed as Ruleset);
        const plan = planTransaction(rs, observed);
        if (was && was.contextKey === contextKey && request.changed.size === 0 && plan.commands.length > 0) {
          drift = true;
        }
        if (plan.summary.kind === 'create') created.push(rs);
        else appendAll(commands, plan.commands);
        changes += plan.commands.length;
      } else {
        table = was.table;
        const removed: string[] = [];
        const added: ServicePortFragment[] = [];
        for (const key of request.changed) {
          // A Service's port keys all start with its key and a colon (`ns/name:port`).
          for (const sp of table.portsOfService(key)) removed.push(sp);
          for (const sp of family.services.get(key) ?? []) added.push(renderServicePort(sp, ctx));
        }
        const update = table.update(removed, added);
        appendAll(commands, update);
        changes += update.length;
      }
      next.set(family.context.family, { contextKey, table });
      appendAll(problems, table.problems());
      servicePorts.push(table.size);
    }
    // Until the kernel has taken the transaction nothing is known: a failure leaves every family unknown.
    this.committed.clear();
    await this.applier.apply(commands, created);
    for (const [family, c] of next) this.committed.set(family, c);
    this.lastSynced = new WeakSet(request.families);
    if (full) this.fullSyncs++;
    return { kind: full ? 'full' : 'partial', changes, drift, problems, detail: { servicePorts } };
  }

  /**
   * Right after a sync of these families: the kernel applied the transaction whole, so what is
   * left to check is that nothing replaced or removed kproxy's objects since — their declarations,
   * not every rule and element (reading those back costs more than the sync at 10,000 Services).
   */
  async matches(families: readonly FamilyState[]): Promise<boolean> {
    const rulesets = families.map((f) => {
      const c = this.committed.get(f.context.family);
      return c && this.lastSynced.has(f) ? c.table.ruleset() : rulesetOf(f);
    });
    return this.applier.declarationsMatch(rulesets);
  }

  async describeDrift(families: readonly FamilyState[]): Promise<string[]> {
    const out: string[] = [];
    for (const family of families) {
      const rs = rulesetOf(family);
      appendAll(out, describeTableDrift(rs, await this.applier.observe(rs)));
    }
    return out;
  }

  async cleanup(): Promise<string[]> {
    this.committed.clear();
    return (await this.applier.cleanup()).map((f) => `table ${f} kproxy`);
  }
}

/**
 * Every port's fragment. A port equal to its fragment's in `kept` (rendered in the same context)
 * keeps that fragment, as rendering is pure: a periodic full sync (every 30 s by default) then
 * neither renders the unchanged ports again nor holds two copies of them while it runs.
 */
function renderAll(family: FamilyState, ctx: FragmentContext, kept?: TableState): ServicePortFragment[] {
  const out: ServicePortFragment[] = [];
  for (const ports of family.services.values())
    for (const sp of ports) {
      const was = kept?.get(sp.key);
      // With the new port in it: the old one's objects (its endpoint lists) can go.
      out.push(was && isDeepStrictEqual(was.sp, sp) ? { ...was, sp } : renderServicePort(sp, ctx));
    }
  return out;
}

/** The complete desired ruleset of a family (`kproxy sync`'s final check). */
function rulesetOf(family: FamilyState): Ruleset {
  return renderNftables(nodeStateOf(family)).ruleset;
}
