/**
 * @module backends/nftables/render/observed
 * What kproxy's table holds in the kernel, read back from `nft -j list table` and reduced to what
 * a sync compares: each chain's hook and fingerprint (the first rule's comment) and rule count,
 * each set's definition and elements in the same canonical text the renderer writes.
 */
import { parseIp } from '../../../model/ip.ts';
import type { BaseChainSpec, Hook, SetFlag, SetSpec } from './ruleset.ts';
import { setSpecText } from './ruleset.ts';
import type { ElementsDigest } from './elements-digest.ts';

export interface ObservedChain {
  readonly base?: BaseChainSpec;
  readonly ruleCount: number;
  /** The first rule's comment; kproxy writes the chain fingerprint there. */
  readonly fingerprint?: string;
}

/** A set as read: its elements listed, or (a netlink read, ADR 0014) only their digest. */
export type ObservedSet = ListedSet | DigestedSet;

export interface ListedSet {
  readonly spec: SetSpec;
  readonly elements: ReadonlySet<string>;
}

export interface DigestedSet {
  readonly spec: SetSpec;
  readonly digest: ElementsDigest;
}

export interface ObservedTable {
  readonly chains: ReadonlyMap<string, ObservedChain>;
  readonly sets: ReadonlyMap<string, ObservedSet>;
}

/** A table read with every set's elements listed (through nft). */
export interface ListedTable extends ObservedTable {
  readonly sets: ReadonlyMap<string, ListedSet>;
}

type Json = Record<string, unknown>;

/** Parses `nft -j list table` output. Unknown shapes become "unrecognised" values, never a crash. */
export function parseObservedTable(listing: unknown, table?: string): ListedTable {
  const items = (listing as Json | null)?.['nftables'];
  const chains = new Map<string, { base?: BaseChainSpec; ruleCount: number; fingerprint?: string }>();
  const sets = new Map<string, ListedSet>();
  if (!Array.isArray(items)) return { chains, sets };
  for (const item of items as Json[]) {
    const object = (item['chain'] ?? item['rule'] ?? item['set'] ?? item['map']) as Json | undefined;
    if (table !== undefined && object?.['table'] !== table) continue;
    if (item['chain']) {
      const c = item['chain'] as Json;
      const name = String(c['name']);
      const base =
        typeof c['hook'] === 'string'
          ? { type: c['type'] as BaseChainSpec['type'], hook: c['hook'] as Hook, priority: Number(c['prio']) }
          : undefined;
      chains.set(name, { ...(base ? { base } : {}), ruleCount: 0 });
    } else if (item['rule']) {
      const r = item['rule'] as Json;
      const chain = chains.get(String(r['chain']));
      if (!chain) continue;
      if (chain.ruleCount === 0 && typeof r['comment'] === 'string') chain.fingerprint = r['comment'];
      chain.ruleCount++;
    } else if (item['set'] || item['map']) {
      const s = (item['set'] ?? item['map']) as Json;
      const spec = observedSpec(s, Boolean(item['map']));
      const elements = new Set<string>();
      for (const e of Array.isArray(s['elem']) ? (s['elem'] as unknown[]) : []) elements.add(elementText(e));
      sets.set(spec.name, { spec, elements });
    }
  }
  return { chains, sets };
}

function observedSpec(s: Json, isMap: boolean): SetSpec {
  const type = s['type'];
  const flags = (
    Array.isArray(s['flags']) ? (s['flags'] as string[]) : typeof s['flags'] === 'string' ? [s['flags']] : []
  ).filter((f): f is SetFlag => f === 'interval' || f === 'timeout' || f === 'dynamic');
  return {
    name: String(s['name']),
    keyType: Array.isArray(type) ? type.map(String) : [String(type)],
    verdictMap: isMap && s['map'] === 'verdict',
    ...(isMap && typeof s['map'] === 'string' && s['map'] !== 'verdict' ? { dataType: s['map'].split(' . ') } : {}),
    flags,
    ...(typeof s['timeout'] === 'number' ? { timeoutSeconds: s['timeout'] } : {}),
  };
}

/**
 * Whether an existing set can be kept for a desired definition. nft's JSON does not list the
 * `dynamic` flag, so it is left out of the comparison.
 */
export function sameSetSpec(observed: SetSpec, desired: SetSpec): boolean {
  const strip = (s: SetSpec): SetSpec => ({ ...s, flags: s.flags.filter((f) => f !== 'dynamic') });
  return setSpecText(strip(observed)) === setSpecText(strip(desired));
}

/** The renderer's element text for an element as nft's JSON lists it. */
export function elementText(e: unknown): string {
  if (Array.isArray(e) && e.length === 2)
    return `${valueText(e[0])} : ${isVerdict(e[1]) ? verdictText(e[1]) : valueText(e[1])}`;
  return valueText(e);
}

function valueText(v: unknown): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return parseIp(v)?.text ?? v;
  if (v && typeof v === 'object') {
    const o = v as Json;
    if (Array.isArray(o['concat'])) return (o['concat'] as unknown[]).map(valueText).join(' . ');
    if (o['prefix']) {
      const p = o['prefix'] as Json;
      return `${valueText(p['addr'])}/${String(p['len'])}`;
    }
    if (Array.isArray(o['range'])) return (o['range'] as unknown[]).map(valueText).join('-');
    if (o['elem']) return valueText((o['elem'] as Json)['val']);
  }
  return `<unrecognised ${JSON.stringify(v)}>`;
}

const VERDICTS = new Set(['accept', 'drop', 'return', 'continue', 'jump', 'goto']);

function isVerdict(v: unknown): boolean {
  return Boolean(v && typeof v === 'object' && !Array.isArray(v) && VERDICTS.has(Object.keys(v)[0] ?? ''));
}

function verdictText(v: unknown): string {
  if (v && typeof v === 'object') {
    const [kind, arg] = Object.entries(v as Json)[0] ?? [];
    if (kind === 'goto' || kind === 'jump') return `${kind} ${String((arg as Json)['target'])}`;
    if (kind) return kind;
  }
  return `<unrecognised ${JSON.stringify(v)}>`;
}

/**
 * What the kernel holds, read without its rules (listing ~100k rules back costs more than loading
 * them: 7 s at 10,000 Services): chain names and hooks, sets and maps with their elements. Each
 * chain's rule count and fingerprint are taken from `committed`, what kproxy last wrote there,
 * so a chain that is missing is recreated and every set is compared for real, but an edit inside
 * an existing chain is only found by a complete read.
 */
export function lightObservedTable(
  listings: readonly unknown[],
  table: string,
  committed: ReadonlyMap<string, { ruleCount: number; fingerprint?: string }>,
): ObservedTable | undefined {
  const merged = {
    nftables: listings.flatMap((l) => ((l as Json | null)?.['nftables'] as unknown[] | undefined) ?? []),
  };
  const seen = parseObservedTable(merged, table);
  if (seen.chains.size === 0) return undefined;
  const chains = new Map<string, ObservedChain>();
  for (const [name, chain] of seen.chains) {
    const known = committed.get(name);
    chains.set(name, {
      ...(chain.base ? { base: chain.base } : {}),
      ruleCount: known?.ruleCount ?? -1,
      ...(known?.fingerprint ? { fingerprint: known.fingerprint } : {}),
    });
  }
  return { chains, sets: seen.sets };
}
