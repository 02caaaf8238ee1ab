/**
 * @module backends/nftables/kernel/netlink-dump
 * Reads what a sync compares of kproxy's table straight from the kernel over netlink: per chain
 * its rule count and the first rule's comment (the fingerprint), and the elements of the sets
 * and maps named, decoded to the renderer's element text. Same content as reducing `nft -j list
 * table` (render/observed.ts), without nft's cache and printing of every element: at 10,000
 * Services × 10 endpoints that listing takes ~5 s, almost all of it the 147k map elements.
 *
 * Decoding needs each set's key and data types; the declarations come from nft (`nft -j -t`, no
 * elements, milliseconds). Only the types kproxy declares are decoded; a set of any other type,
 * or an element that cannot be read, makes the dump `undecodable` and the caller reads through
 * nft instead, so a wrong reading can never pass for a match. Asked with digest seeds, it answers
 * each set's elements as their digest (render/elements-digest.ts, ADR 0014) instead of listing
 * them: a restart at 50,000 Services then hands over a few bytes per set, not ~730k texts.
 *
 * Runs in the process whose network namespace holds the table (spawner-child.ts, or `kproxy
 * sync` itself).
 */
import { parseIp } from '../../../model/ip.ts';
import {
  attr,
  attrs,
  encodeStringAttr,
  netfilterDump,
  netfilterGet,
  stringAttr,
  type Attr,
} from '../../../kernel/netlink.ts';
import {
  DATA,
  FIELD_SIZE,
  fieldWidth,
  GEN_ID,
  NFNL_SUBSYS_NFTABLES,
  NFPROTO,
  NFT_MSG,
  PROTOCOL_NUMBER,
  RULE,
  SET_ELEM_INTERVAL_END,
  SETELEM,
  SETELEM_LIST,
  VERDICT,
  VERDICT_CODE,
} from './nf-tables-abi.ts';
import { elementsDigest, type DigestSeeds, type ElementsDigest } from '../render/elements-digest.ts';

/** Reads of a table that a commit kept overlapping before giving up on a consistent one. */
const DUMP_TRIES = 3;
/** libnftnl's rule user data: the comment. */
const UDATA_RULE_COMMENT = 0;

export interface DumpSet {
  readonly name: string;
  /** nft's type names of the key's fields (`ipv4_addr`, `inet_proto`, …). */
  readonly keyType: readonly string[];
  /** The data's type names, for a data map. */
  readonly dataType?: readonly string[];
  readonly verdictMap: boolean;
  readonly interval: boolean;
}

export interface DumpRequest {
  readonly family: 'ip' | 'ip6';
  readonly table: string;
  readonly sets: readonly DumpSet[];
  /** Answer each set's elements as their digest under these seeds, not listed. */
  readonly digestSeeds?: DigestSeeds;
}

export type DumpResult =
  | {
      readonly chains: Record<string, { ruleCount: number; fingerprint?: string }>;
      /** Each set's elements, listed or (with `digestSeeds`) as their digest. */
      readonly elements: Record<string, string[] | ElementsDigest>;
      /** The ruleset generation the whole dump saw; absent when commits kept landing during it. */
      readonly generation?: number;
    }
  | { readonly undecodable: string };

const PROTOCOL_NAME: Record<number, string> = Object.fromEntries(
  Object.entries(PROTOCOL_NUMBER).map(([name, n]) => [n, name]),
);
const VERDICT_NAME: Record<number, string> = Object.fromEntries(
  Object.entries(VERDICT_CODE).map(([name, n]) => [n, name]),
);

class Undecodable extends Error {}

export function dumpTable(req: DumpRequest): DumpResult {
  try {
    for (let tries = 1; ; tries++) {
      // A dump is many reads; a commit between two of them would mix two rulesets.
      const before = nftGeneration();
      const chains = dumpRules(req);
      const elements = Object.fromEntries(
        req.sets.map((s) => {
          const listed = dumpElements(req, s);
          return [s.name, req.digestSeeds ? elementsDigest(listed, req.digestSeeds) : listed];
        }),
      );
      const generation = nftGeneration();
      if (generation === before) return { chains, elements, generation };
      if (tries === DUMP_TRIES) return { chains, elements };
    }
  } catch (e) {
    if (e instanceof Undecodable) return { undecodable: e.message };
    throw e;
  }
}

/**
 * The kernel's nftables ruleset generation in this network namespace: every committed
 * transaction (of any table, anyone's) bumps it, so an unchanged number means an unchanged ruleset.
 */
export function nftGeneration(): number {
  const answer = attrs(netfilterGet((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG.GETGEN, 0, []));
  const id = attr(answer, GEN_ID);
  if (!id || id.length < 4) throw new Error('nftables generation: no NFTA_GEN_ID in the answer');
  return id.readUInt32BE(0);
}

function dumpRules(req: DumpRequest): Record<string, { ruleCount: number; fingerprint?: string }> {
  const chains: Record<string, { ruleCount: number; fingerprint?: string }> = {};
  netfilterDump(
    (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG.GETRULE,
    NFPROTO[req.family],
    [encodeStringAttr(RULE.TABLE, req.table)],
    (msg) => {
      const a = attrs(msg);
      if (stringAttr(attr(a, RULE.TABLE)) !== req.table) return;
      const chain = stringAttr(attr(a, RULE.CHAIN)) ?? '';
      const seen = (chains[chain] ??= { ruleCount: 0 });
      if (seen.ruleCount === 0) {
        const comment = ruleComment(attr(a, RULE.USERDATA));
        if (comment !== undefined) seen.fingerprint = comment;
      }
      seen.ruleCount++;
    },
  );
  return chains;
}

/** The comment in libnftnl's rule user data: type, length, value records. */
function ruleComment(udata: Buffer | undefined): string | undefined {
  let at = 0;
  while (udata && at + 2 <= udata.length) {
    const type = udata[at] as number;
    const len = udata[at + 1] as number;
    if (type === UDATA_RULE_COMMENT) return stringAttr(udata.subarray(at + 2, at + 2 + len));
    at += 2 + len;
  }
  return undefined;
}

interface RawElement {
  /** Key text ('' in one-field interval sets, decoded later from `bound`). */
  readonly key: string;
  readonly bound?: Buffer;
  readonly intervalEnd: boolean;
  /** Data text (a value or a verdict). */
  readonly data?: string;
}

/** Where an attribute's payload lies in the answer: [start, end); end 0 when absent. */
interface Span {
  start: number;
  end: number;
}

function dumpElements(req: DumpRequest, set: DumpSet): string[] {
  for (const t of [...set.keyType, ...(set.dataType ?? [])]) {
    if (FIELD_SIZE[t] === undefined) throw new Undecodable(`set ${set.name}: type ${t}`);
  }
  const bounds = set.interval && set.keyType.length === 1;
  const raw: RawElement[] = [];
  const key: Span = { start: 0, end: 0 };
  const keyEnd: Span = { start: 0, end: 0 };
  const data: Span = { start: 0, end: 0 };
  netfilterDump(
    (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG.GETSETELEM,
    NFPROTO[req.family],
    [encodeStringAttr(SETELEM_LIST.TABLE, req.table), encodeStringAttr(SETELEM_LIST.SET, set.name)],
    (msg) => {
      // Walked by offsets, not as attribute objects: ~150k elements at 10k Services.
      const list = attr(attrs(msg), SETELEM_LIST.ELEMENTS);
      if (!list) return;
      for (let at = 0; at + 4 <= list.length; at += align(list.readUInt16LE(at))) {
        const elemEnd = Math.min(at + list.readUInt16LE(at), list.length);
        key.end = keyEnd.end = data.end = 0;
        let verdict = false;
        let intervalEnd = false;
        for (let a = at + 4; a + 4 <= elemEnd; a += align(list.readUInt16LE(a))) {
          const end = Math.min(a + list.readUInt16LE(a), elemEnd);
          const type = list.readUInt16LE(a + 2) & 0x3fff;
          if (type === SETELEM.KEY) firstAttr(list, a + 4, end, key);
          else if (type === SETELEM.KEY_END) firstAttr(list, a + 4, end, keyEnd);
          else if (type === SETELEM.DATA) verdict = firstAttr(list, a + 4, end, data) === DATA.VERDICT;
          else if (type === SETELEM.FLAGS && a + 8 <= end)
            intervalEnd = (list.readUInt32BE(a + 4) & SET_ELEM_INTERVAL_END) !== 0;
        }
        if (key.end === 0) throw new Undecodable(`set ${set.name}: an element without a key`);
        const dataText =
          data.end === 0
            ? undefined
            : verdict
              ? verdictText(set, attrs(list.subarray(data.start, data.end)))
              : fieldsText(set.dataType, list, data, undefined, set.name);
        raw.push({
          key: bounds ? '' : fieldsText(set.keyType, list, key, keyEnd.end === 0 ? undefined : keyEnd, set.name),
          ...(bounds ? { bound: Buffer.from(list.subarray(key.start, key.end)) } : {}),
          intervalEnd,
          ...(dataText === undefined ? {} : { data: dataText }),
        });
      }
    },
  );
  if (bounds) return rangesFromBounds(set, raw);
  return raw.map((e) => (e.data === undefined ? e.key : `${e.key} : ${e.data}`));
}

function align(len: number): number {
  return (Math.max(len, 4) + 3) & ~3;
}

/** Sets `span` to the payload of the first attribute inside [from, to); returns its type. */
function firstAttr(b: Buffer, from: number, to: number, span: Span): number {
  if (from + 4 > to) return 0;
  span.start = from + 4;
  span.end = Math.min(from + b.readUInt16LE(from), to);
  return b.readUInt16LE(from + 2) & 0x3fff;
}

function verdictText(set: DumpSet, v: Attr[]): string {
  const code = attr(v, VERDICT.CODE)?.readInt32BE(0);
  const name = code === undefined ? undefined : VERDICT_NAME[code];
  if (name === 'jump' || name === 'goto') return `${name} ${stringAttr(attr(v, VERDICT.CHAIN)) ?? ''}`;
  if (!name) throw new Undecodable(`set ${set.name}: verdict ${code}`);
  return name;
}

/** A key or data value of one or more fields; with `end`, each field is a range (concatenated intervals). */
function fieldsText(
  types: readonly string[] | undefined,
  b: Buffer,
  at: Span,
  end: Span | undefined,
  set: string,
): string {
  if (!types) throw new Undecodable(`set ${set}: data it does not declare`);
  let text = '';
  let lo = at.start;
  let hi = end?.start ?? 0;
  for (const t of types) {
    const size = FIELD_SIZE[t] as number;
    if (lo + size > at.end || (end && hi + size > end.end)) throw new Undecodable(`set ${set}: short element`);
    if (text !== '') text += ' . ';
    text +=
      end && b.compare(b, hi, hi + size, lo, lo + size) !== 0
        ? rangeText(t, b.subarray(lo, lo + size), b.subarray(hi, hi + size))
        : fieldText(t, b, lo, size);
    const width = fieldWidth(size, types.length);
    lo += width;
    hi += width;
  }
  return text;
}

function fieldText(type: string, b: Buffer, at = 0, size = b.length): string {
  switch (type) {
    case 'ipv4_addr':
      return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
    case 'ipv6_addr': {
      const text = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(at + i * 2).toString(16)).join(':');
      return parseIp(text)?.text ?? text;
    }
    case 'inet_proto':
      return PROTOCOL_NAME[b[at] as number] ?? String(b[at]);
    case 'inet_service':
      return String(b.readUInt16BE(at));
    default:
      // `integer` fields kproxy declares come from numgen: host byte order.
      return size === 4 ? String(b.readUInt32LE(at)) : String(b[at]);
  }
}

/** An inclusive range [lo, hi] of one field as nft lists it: a prefix when it is one, else `lo-hi`. */
function rangeText(type: string, lo: Buffer, hi: Buffer): string {
  if (type === 'ipv4_addr' || type === 'ipv6_addr') {
    const len = prefixLength(lo, hi);
    if (len !== undefined) return `${fieldText(type, lo)}/${len}`;
  }
  return `${fieldText(type, lo)}-${fieldText(type, hi)}`;
}

/** The prefix length when [lo, hi] is exactly one prefix. */
function prefixLength(lo: Buffer, hi: Buffer): number | undefined {
  const bits = lo.length * 8;
  let len = 0;
  while (len < bits && bitAt(lo, len) === bitAt(hi, len)) len++;
  for (let i = len; i < bits; i++) if (bitAt(lo, i) !== 0 || bitAt(hi, i) !== 1) return undefined;
  return len;
}

function bitAt(b: Buffer, i: number): number {
  return ((b[i >> 3] as number) >> (7 - (i & 7))) & 1;
}

/**
 * A one-field interval set holds each range as its start and, flagged, the first value after it
 * (none when the range runs to the last value). Paired back into ranges, in order.
 */
function rangesFromBounds(set: DumpSet, raw: readonly RawElement[]): string[] {
  const type = set.keyType[0] as string;
  const bound = (e: RawElement): Buffer => e.bound as Buffer;
  const sorted = [...raw].sort(
    (a, b) => Buffer.compare(bound(a), bound(b)) || (a.intervalEnd ? -1 : 0) - (b.intervalEnd ? -1 : 0),
  );
  const out: string[] = [];
  let start: RawElement | undefined;
  const close = (endExclusive: Buffer | undefined): void => {
    if (!start) return;
    const lo = bound(start);
    const hi = endExclusive ? minusOne(endExclusive) : Buffer.alloc(lo.length, 0xff);
    const text = hi.equals(lo) ? fieldText(type, lo) : rangeText(type, lo, hi);
    out.push(start.data === undefined ? text : `${text} : ${start.data}`);
    start = undefined;
  };
  for (const e of sorted) {
    if (e.intervalEnd) close(bound(e));
    else if (start) throw new Undecodable(`set ${set.name}: a range without its end`);
    else start = e;
  }
  close(undefined);
  return out;
}

function minusOne(b: Buffer): Buffer {
  const out = Buffer.from(b);
  for (let i = out.length - 1; i >= 0; i--) {
    const v = out[i] as number;
    out[i] = (v + 255) & 0xff;
    if (v !== 0) break;
  }
  return out;
}
