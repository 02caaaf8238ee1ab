/**
 * @module backends/nftables/render/table-state
 * kproxy's table as the sum of its service ports' fragments, kept between syncs so that a change
 * costs in proportion to the change: `update` swaps some fragments and returns exactly the
 * commands that move the kernel from the old table to the new one. Pure.
 *
 * Ownership: a frontend (address . protocol . port, or protocol . NodePort) belongs to the first
 * service port (by key) that claims it; only the owner's elements for it are in the table, and a
 * port's chain stays only while the port owns a frontend routed through it. Elements any number of
 * ports may add (ClusterIPs, hairpin pairs) are reference-counted.
 */
import type { Problem } from '../../../util/problems.ts';
import type { Element, Fragment } from './syntax.ts';
import { elementKey, nftFamily } from './syntax.ts';
import type { Chain, Ruleset } from './ruleset.ts';
import { chainFingerprint, TransactionBuilder } from './ruleset.ts';
import { affinitySetSpec, skeletonChains, skeletonSets, type TableContext } from './skeleton.ts';
import { TABLE, type SetName } from './names.ts';
import { appendAll } from '../../../util/arrays.ts';
import type { EndpointMaps, ServicePortFragment, SetElement } from './service-port.ts';

/** What a set of fragments puts in the table, by identity, for diffing. */
interface Contribution {
  readonly chains: Map<string, Chain>;
  /** `set \0 element text` → the element. */
  readonly elements: Map<string, SetElement>;
  readonly affinitySets: Map<string, number>;
}

const serviceOf = (f: ServicePortFragment) => `${f.sp.ref.namespace}/${f.sp.ref.name}`;
const elementId = (e: SetElement) => `${e.set}\u0000${e.element}`;

export class TableState {
  readonly context: TableContext;
  private readonly fragments = new Map<string, ServicePortFragment>();
  /** Service key (`namespace/name`) → the keys of its ports in the table (an array: most have one, and a Set costs ~400 bytes). */
  private readonly byService = new Map<string, readonly string[]>();
  /** Frontend → the keys of the ports claiming it, sorted: the first owns it. */
  private readonly claimants = new Map<string, string[]>();
  /** Frontends claimed by more than one port. */
  private readonly contested = new Set<string>();
  private readonly shared = new Map<string, { readonly element: SetElement; count: number }>();
  /** Shared DNAT chains by name, with how many ports route through each. */
  private readonly sharedChains = new Map<string, { readonly chain: Chain; count: number }>();

  readonly endpointMaps: EndpointMaps;
  /** The last `ruleset()`, until an update: a full sync and its check right after both want it. */
  private built: Ruleset | undefined;

  constructor(
    context: TableContext,
    fragments: Iterable<ServicePortFragment> = [],
    endpointMaps: EndpointMaps = { endpointLayout: 'maps', endpointShards: 1 },
  ) {
    this.context = context;
    this.endpointMaps = endpointMaps;
    for (const f of fragments) this.insert(f);
  }

  get size(): number {
    return this.fragments.size;
  }

  /**
   * Replaces the fragments of `removed` keys with `added` ones and returns the commands that turn
   * the old table into the new one, in an order the kernel accepts in one transaction.
   */
  update(removed: Iterable<string>, added: Iterable<ServicePortFragment>): Fragment[] {
    this.built = undefined;
    const adding = [...added];
    const removing = [...removed].filter((k) => this.fragments.has(k));
    // Every port whose contribution may change: the ones swapped, and the other claimants of any
    // frontend they touch (ownership may pass to or from them).
    const affected = new Set<string>([...removing, ...adding.map((f) => f.sp.key)]);
    for (const key of [...affected]) {
      for (const frontend of this.fragments.get(key)?.frontends.keys() ?? [])
        for (const k of this.claimants.get(frontend) ?? []) affected.add(k);
    }
    for (const f of adding)
      for (const frontend of f.frontends.keys()) for (const k of this.claimants.get(frontend) ?? []) affected.add(k);

    const before = this.contribution(affected);
    // Shared elements the swap may add or remove, with what they were before it.
    const touchedShared = new Set<string>();
    for (const key of affected)
      for (const e of this.fragments.get(key)?.sharedElements ?? []) touchedShared.add(elementId(e));
    for (const f of adding) for (const e of f.sharedElements) touchedShared.add(elementId(e));
    const sharedBefore = new Map([...touchedShared].map((id) => [id, this.shared.get(id)?.element]));
    const touchedChains = new Set<string>();
    for (const key of affected) for (const c of this.fragments.get(key)?.sharedChains ?? []) touchedChains.add(c.name);
    for (const f of adding) for (const c of f.sharedChains) touchedChains.add(c.name);
    const chainsBefore = new Map([...touchedChains].map((name) => [name, this.sharedChains.get(name)?.chain]));
    for (const key of removing) this.remove(key);
    for (const f of adding) {
      this.remove(f.sp.key);
      this.insert(f);
    }
    const after = this.contribution(affected);
    for (const id of touchedShared) {
      const was = sharedBefore.get(id);
      const is = this.shared.get(id)?.element;
      if (was) before.elements.set(id, was);
      if (is) after.elements.set(id, is);
    }
    for (const name of touchedChains) {
      const was = chainsBefore.get(name);
      const is = this.sharedChains.get(name)?.chain;
      if (was) before.chains.set(name, was);
      if (is) after.chains.set(name, is);
    }
    return this.commands(before, after);
  }

  /** The whole table (full syncs and dumps): the skeleton, then the ports in key order. */
  ruleset(): Ruleset {
    this.built ??= this.build();
    return this.built;
  }

  private build(): Ruleset {
    // Straight from the fragments (no identity maps: ~200k elements at 10k Services). Owned
    // frontends' elements are unique by construction; shared ones are already counted once.
    const bySet = new Map<SetName, Element[]>();
    const put = ({ set, element }: SetElement) => {
      const list = bySet.get(set);
      if (list) list.push(element);
      else bySet.set(set, [element]);
    };
    const chains: Chain[] = [];
    const affinitySets = new Map<string, number>();
    for (const f of this.fragmentsInKeyOrder()) {
      const key = f.sp.key;
      const owned = new Set<string>();
      for (const [frontend, elements] of f.frontends) {
        if (this.claimants.get(frontend)?.[0] !== key) continue;
        owned.add(frontend);
        for (const e of elements) put(e);
      }
      const kept = f.chains.filter((c) => c.frontends.some((fr) => owned.has(fr))).map((c) => c.chain);
      if (kept.length === 0) continue;
      appendAll(
        chains,
        kept.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
      );
      for (const [name, timeout] of f.affinitySets) affinitySets.set(name, timeout);
    }
    for (const s of this.shared.values()) put(s.element);
    const shared = [...this.sharedChains.values()].map((s) => s.chain).sort(byPickOrder);
    const family = nftFamily(this.context.family);
    return {
      family,
      table: TABLE,
      chains: [...skeletonChains(this.context), ...shared, ...chains],
      sets: [
        ...skeletonSets(this.context, bySet, this.endpointMaps),
        ...[...affinitySets].map(([name, timeout]) => affinitySetSpec(family, name, timeout)),
      ],
    };
  }

  /** Conflicts: every port that claims a frontend another port owns. */
  problems(): Problem[] {
    if (this.contested.size === 0) return [];
    const out: Problem[] = [];
    for (const key of [...this.fragments.keys()].sort()) {
      const f = this.fragments.get(key) as ServicePortFragment;
      for (const frontend of f.frontends.keys()) {
        const owner = this.claimants.get(frontend)?.[0];
        if (owner === undefined || owner === key) continue;
        out.push({
          kind: 'Service',
          object: `${f.sp.ref.namespace}/${f.sp.ref.name}`,
          path: '',
          message: `${frontend} is already used by Service port ${owner}; this port does not get it`,
        });
      }
    }
    return out;
  }

  /** The keys of a Service's ports in the table. */
  portsOfService(service: string): string[] {
    return [...(this.byService.get(service) ?? [])];
  }

  /** The service ports in the table, in no particular order (cheap: no sorting). */
  ports(): IterableIterator<ServicePortFragment['sp']> {
    const it = this.fragments.values();
    return (function* () {
      for (const f of it) yield f.sp;
    })();
  }

  /** The fragment of one service port, if the table has it. */
  get(key: string): ServicePortFragment | undefined {
    return this.fragments.get(key);
  }

  fragmentsInKeyOrder(): ServicePortFragment[] {
    return [...this.fragments.keys()].sort().map((k) => this.fragments.get(k) as ServicePortFragment);
  }

  private insert(f: ServicePortFragment): void {
    const key = f.sp.key;
    this.fragments.set(key, f);
    const service = serviceOf(f);
    const ports = this.byService.get(service) ?? [];
    if (!ports.includes(key)) this.byService.set(service, [...ports, key]);
    for (const frontend of f.frontends.keys()) {
      const list = this.claimants.get(frontend);
      if (!list) this.claimants.set(frontend, [key]);
      else {
        list.push(key);
        list.sort();
        this.contested.add(frontend);
      }
    }
    for (const e of f.sharedElements) {
      const id = elementId(e);
      const s = this.shared.get(id);
      if (s) s.count++;
      else this.shared.set(id, { element: e, count: 1 });
    }
    for (const chain of f.sharedChains) {
      const s = this.sharedChains.get(chain.name);
      if (s) s.count++;
      else this.sharedChains.set(chain.name, { chain, count: 1 });
    }
  }

  private remove(key: string): void {
    const f = this.fragments.get(key);
    if (!f) return;
    this.fragments.delete(key);
    const service = serviceOf(f);
    const ports = (this.byService.get(service) ?? []).filter((k) => k !== key);
    if (ports.length === 0) this.byService.delete(service);
    else this.byService.set(service, ports);
    for (const frontend of f.frontends.keys()) {
      const list = (this.claimants.get(frontend) ?? []).filter((k) => k !== key);
      if (list.length === 0) this.claimants.delete(frontend);
      else this.claimants.set(frontend, list);
      if (list.length <= 1) this.contested.delete(frontend);
    }
    for (const e of f.sharedElements) {
      const id = elementId(e);
      const s = this.shared.get(id);
      if (s && --s.count === 0) this.shared.delete(id);
    }
    for (const chain of f.sharedChains) {
      const s = this.sharedChains.get(chain.name);
      if (s && --s.count === 0) this.sharedChains.delete(chain.name);
    }
  }

  /** What the given ports put in the table now (owned frontends' elements, kept chains). */
  private contribution(keys: ReadonlySet<string>): Contribution {
    const out: Contribution = { chains: new Map(), elements: new Map(), affinitySets: new Map() };
    for (const key of keys) {
      const f = this.fragments.get(key);
      if (!f) continue;
      const owned = new Set<string>();
      for (const [frontend, elements] of f.frontends) {
        if (this.claimants.get(frontend)?.[0] !== key) continue;
        owned.add(frontend);
        for (const e of elements) out.elements.set(elementId(e), e);
      }
      let kept = 0;
      for (const c of f.chains) {
        if (!c.frontends.some((fr) => owned.has(fr))) continue;
        out.chains.set(c.chain.name, c.chain);
        kept++;
      }
      if (kept > 0) for (const [name, timeout] of f.affinitySets) out.affinitySets.set(name, timeout);
    }
    return out;
  }

  /** The commands from one contribution to another. */
  private commands(before: Contribution, after: Contribution): Fragment[] {
    const f = nftFamily(this.context.family);
    const tx = new TransactionBuilder(f, TABLE);
    for (const [name, timeout] of after.affinitySets)
      if (!before.affinitySets.has(name)) tx.addSet(affinitySetSpec(f, name, timeout).spec);
    for (const [name, chain] of after.chains) {
      const old = before.chains.get(name);
      if (!old) tx.addChain(chain);
      else if (
        old !== chain &&
        (old.rules.length !== chain.rules.length || chainFingerprint(old) !== chainFingerprint(chain))
      )
        tx.replaceChain(chain);
    }
    for (const name of before.chains.keys()) if (!after.chains.has(name)) tx.deleteChain(name);
    for (const [name, timeout] of before.affinitySets)
      if (!after.affinitySets.has(name)) tx.deleteSet(affinitySetSpec(f, name, timeout).spec);
    for (const [set, list] of bySet(before.elements, after.elements)) tx.deleteElements(set, list.map(elementKey));
    for (const [set, list] of bySet(after.elements, before.elements)) tx.addElements(set, list);
    return tx.commands();
  }
}

/** Shared DNAT chains by kind, then by endpoint count (`dnat-2` before `dnat-10`). */
function byPickOrder(a: Chain, b: Chain): number {
  const split = (name: string) => /^(.*?)(\d+)$/.exec(name) ?? ['', name, '0'];
  const [, ak = '', an = '0'] = split(a.name);
  const [, bk = '', bn = '0'] = split(b.name);
  return ak < bk ? -1 : ak > bk ? 1 : Number(an) - Number(bn);
}

/** The elements of `m` that `skip` does not have, grouped by set. */
function bySet(m: ReadonlyMap<string, SetElement>, skip: ReadonlyMap<string, SetElement>): Map<SetName, Element[]> {
  const out = new Map<SetName, Element[]>();
  for (const [id, e] of m) {
    if (skip.has(id)) continue;
    const list = out.get(e.set);
    if (list) list.push(e.element);
    else out.set(e.set, [e.element]);
  }
  return out;
}
