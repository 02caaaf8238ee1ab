/**
 * @module backends/nftables/render/syntax
 * The only place nftables rule text and rule JSON are made. Every builder takes typed, validated
 * values and returns the same statement in both notations, so `nft -f` and `nft -j -f` load the
 * same ruleset and nothing user-controlled is ever pasted into rule text unchecked: identifiers
 * and strings are checked against strict patterns here and a violation throws (a programming
 * error, since the sources validate first).
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { Cidr, Family, Protocol } from '../../../model/cluster.ts';

/** One statement (or a whole command) in both notations. */
export interface Fragment {
  readonly text: string;
  readonly json: unknown;
}

export type NftFamily = 'ip' | 'ip6';

export function nftFamily(family: Family): NftFamily {
  return family === 'ipv4' ? 'ip' : 'ip6';
}

// Chain, set and map names: kproxy's own derived names only (see layout.ts).
const IDENTIFIER = /^[a-z][a-z0-9_./-]{0,127}$/;
// Interface names (IFNAMSIZ 16 with the NUL); `*` only as a trailing wildcard.
const IFNAME = /^[A-Za-z0-9_.-]{1,15}\*?$/;
const COMMENT = /^[A-Za-z0-9_.:/ =,@-]{0,128}$/;

export function identifier(name: string): string {
  if (!IDENTIFIER.test(name)) throw new Error(`invalid nftables identifier ${JSON.stringify(name)}`);
  return name;
}

function checkIp(ip: string): string {
  if (!isIPv4(ip) && !isIPv6(ip)) throw new Error(`invalid IP address ${JSON.stringify(ip)}`);
  return ip;
}

function checkPort(port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`invalid port ${port}`);
  return port;
}

function quoted(s: string, pattern: RegExp, what: string): string {
  if (!pattern.test(s)) throw new Error(`invalid ${what} ${JSON.stringify(s)}`);
  return `"${s}"`;
}

// ---------------------------------------------------------------------------------------------
// Values (the right-hand side of matches, and set elements)

export interface Value {
  readonly text: string;
  readonly json: unknown;
}

export const value = {
  ip: (ip: string): Value => ({ text: checkIp(ip), json: ip }),
  /** A CIDR; a full-length prefix is written as the bare address, as nft lists it back. */
  cidr: (c: Cidr): Value => {
    checkIp(c.address);
    const full = c.family === 'ipv4' ? 32 : 128;
    if (c.prefixLength === full) return { text: c.address, json: c.address };
    return { text: `${c.address}/${c.prefixLength}`, json: { prefix: { addr: c.address, len: c.prefixLength } } };
  },
  protocol: (p: Protocol): Value => {
    const name = p.toLowerCase();
    return { text: name, json: name };
  },
  port: (port: number): Value => ({ text: String(checkPort(port)), json: port }),
  number: (n: number): Value => {
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`invalid number ${n}`);
    return { text: String(n), json: n };
  },
  hex: (n: number): Value => {
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`invalid mark ${n}`);
    return { text: `0x${n.toString(16)}`, json: n };
  },
  ifname: (name: string): Value => ({ text: quoted(name, IFNAME, 'interface name'), json: name }),
  setRef: (name: string): Value => ({ text: `@${identifier(name)}`, json: `@${name}` }),
  keyword: (word: 'new' | 'dnat' | 'local'): Value => ({ text: word, json: word }),
  /** An anonymous set `{ a, b }`; a single value is written bare. */
  anonymousSet: (values: readonly Value[]): Value => {
    if (values.length === 1 && values[0]) return values[0];
    return { text: `{ ${values.map((v) => v.text).join(', ')} }`, json: { set: values.map((v) => v.json) } };
  },
  /** An anonymous set `{ a }` even of one value (nft refuses a concatenation matched against a bare value). */
  set: (values: readonly Value[]): Value => ({
    text: `{ ${values.map((v) => v.text).join(', ')} }`,
    json: { set: values.map((v) => v.json) },
  }),
  concat: (parts: readonly Value[]): Value => {
    if (parts.length === 1 && parts[0]) return parts[0];
    return { text: parts.map((p) => p.text).join(' . '), json: { concat: parts.map((p) => p.json) } };
  },
};

// ---------------------------------------------------------------------------------------------
// Expressions (the left-hand side of matches, and set keys)

export interface Expr {
  readonly text: string;
  readonly json: unknown;
}

const payload = (protocol: string, field: string): Expr => ({
  text: `${protocol} ${field}`,
  json: { payload: { protocol, field } },
});

export const expr = {
  saddr: (f: NftFamily): Expr => payload(f, 'saddr'),
  daddr: (f: NftFamily): Expr => payload(f, 'daddr'),
  dport: (): Expr => payload('th', 'dport'),
  l4proto: (): Expr => ({ text: 'meta l4proto', json: { meta: { key: 'l4proto' } } }),
  mark: (): Expr => ({ text: 'meta mark', json: { meta: { key: 'mark' } } }),
  iifname: (): Expr => ({ text: 'iifname', json: { meta: { key: 'iifname' } } }),
  ctState: (): Expr => ({ text: 'ct state', json: { ct: { key: 'state' } } }),
  ctStatus: (): Expr => ({ text: 'ct status', json: { ct: { key: 'status' } } }),
  fibType: (which: 'saddr' | 'daddr'): Expr => ({
    text: `fib ${which} type`,
    json: { fib: { result: 'type', flags: [which] } },
  }),
  markAnd: (mask: number): Expr => ({
    text: `meta mark & ${value.hex(mask).text}`,
    json: { '&': [{ meta: { key: 'mark' } }, mask] },
  }),
  numgenRandom: (modulus: number, offset = 0): Expr => {
    if (!Number.isInteger(modulus) || modulus < 1) throw new Error(`invalid numgen modulus ${modulus}`);
    const text = `numgen random mod ${modulus}${offset === 0 ? '' : ` offset ${value.number(offset).text}`}`;
    return { text, json: { numgen: { mode: 'random', mod: modulus, offset } } };
  },
  concat: (parts: readonly Expr[]): Expr => ({
    text: parts.map((p) => p.text).join(' . '),
    json: { concat: parts.map((p) => p.json) },
  }),
};

// ---------------------------------------------------------------------------------------------
// Statements

export type Verdict =
  | { readonly kind: 'accept' | 'drop' | 'return' }
  | { readonly kind: 'jump' | 'goto'; readonly chain: string };

export function verdictValue(v: Verdict): Value {
  switch (v.kind) {
    case 'accept':
    case 'drop':
    case 'return':
      return { text: v.kind, json: { [v.kind]: null } };
    case 'jump':
    case 'goto':
      return { text: `${v.kind} ${identifier(v.chain)}`, json: { [v.kind]: { target: v.chain } } };
  }
}

// ---------------------------------------------------------------------------------------------
// Set and map elements

/**
 * A set or map element as its canonical text, the way nft lists it back: `KEY`, `KEY : DATA` or
 * `KEY : VERDICT`, the parts of a concatenation joined by ` . `. One string per element: a table
 * at 10,000 Services holds ~150k of them, and their nft JSON, which only `dump --format json`
 * needs, follows from the text (`elementJson`), since element text is only ever made here.
 */
export type Element = string;

// Joined, not concatenated: `join` makes one flat string, where `+` or a template makes a rope of
// its parts (more bytes per element, and flattened again by every comparison, as the sort's).
export const element = {
  set: (key: Value): Element => key.text,
  /** A data map's element (an endpoint's address or port). */
  map: (key: Value, data: Value): Element => [key.text, data.text].join(' : '),
  /** `map(concat([...key's parts, number(index)]), data)`, without building that key (one per endpoint). */
  indexedMap: (key: Value, index: number, data: Value): Element =>
    [key.text, ' . ', value.number(index).text, ' : ', data.text].join(''),
  vmap: (key: Value, v: Verdict): Element => [key.text, verdictValue(v).text].join(' : '),
};

/** An element's key: a map element is deleted, and owned, by its key alone. */
export function elementKey(e: Element): string {
  const colon = e.indexOf(' : ');
  return colon < 0 ? e : e.slice(0, colon);
}

/**
 * Sorts elements in key order, which for the elements of one set is their text's order: keys of a
 * set have the same number of parts, so none is another followed by the space that ends a key.
 */
export function sortByKey(elements: Element[]): Element[] {
  return elements.sort();
}

/**
 * An element's nft JSON, read from its text. Element parts are addresses, prefixes, protocol
 * names, ports and numbers (the `value` builders above): digits are a number, `ADDR/LEN` a prefix,
 * anything else (an address, a protocol) a string; a verdict is a verdict.
 */
export function elementJson(e: Element): unknown {
  const colon = e.indexOf(' : ');
  if (colon < 0) return partsJson(e);
  const right = e.slice(colon + 3);
  const [kind, chain] = right.split(' ');
  const verdict =
    kind === 'accept' || kind === 'drop' || kind === 'return'
      ? { [kind]: null }
      : (kind === 'goto' || kind === 'jump') && chain !== undefined
        ? { [kind]: { target: chain } }
        : undefined;
  return [partsJson(e.slice(0, colon)), verdict ?? partsJson(right)];
}

function partsJson(text: string): unknown {
  const parts = text.split(' . ').map((p): unknown => {
    if (/^\d+$/.test(p)) return Number(p);
    const slash = p.lastIndexOf('/');
    if (slash > 0 && /^\d+$/.test(p.slice(slash + 1)))
      return { prefix: { addr: p.slice(0, slash), len: Number(p.slice(slash + 1)) } };
    return p;
  });
  return parts.length === 1 ? parts[0] : { concat: parts };
}

/** Flags-style expressions (ct state, ct status) match with `in` in nft's JSON. */
const FLAG_EXPRS = new Set(['ct state', 'ct status']);

export const stmt = {
  match: (left: Expr, op: '==' | '!=', right: Value): Fragment => {
    const jsonOp = op === '==' && FLAG_EXPRS.has(left.text) ? 'in' : op;
    const text = op === '==' ? `${left.text} ${right.text}` : `${left.text} != ${right.text}`;
    return { text, json: { match: { op: jsonOp, left: left.json, right: right.json } } };
  },
  /** A match whose text needs the explicit `==` (after `&`, or a bare number). */
  matchEq: (left: Expr, right: Value): Fragment => ({
    text: `${left.text} == ${right.text}`,
    json: { match: { op: '==', left: left.json, right: right.json } },
  }),
  vmap: (key: Expr, map: Value): Fragment => ({
    text: `${key.text} vmap ${map.text}`,
    json: { vmap: { key: key.json, data: map.json } },
  }),
  verdict: (v: Verdict): Fragment => verdictValue(v),
  reject: (): Fragment => ({ text: 'reject', json: { reject: null } }),
  /** DNAT to one endpoint; the rule must already match a transport protocol. */
  dnat: (ip: string, port: number): Fragment => {
    checkIp(ip);
    checkPort(port);
    const target = ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
    return { text: `dnat to ${target}`, json: { dnat: { addr: ip, port } } };
  },
  /** DNAT to the address one data map holds for `addrKey` and the port another holds for `portKey` (ADR 0008). */
  dnatMaps: (addrKey: Expr, addrMap: string, portKey: Expr, portMap: string): Fragment => ({
    text: `dnat to ${addrKey.text} map @${identifier(addrMap)} : ${portKey.text} map @${identifier(portMap)}`,
    json: {
      dnat: {
        addr: { map: { key: addrKey.json, data: `@${addrMap}` } },
        port: { map: { key: portKey.json, data: `@${portMap}` } },
      },
    },
  }),
  masqueradeFullyRandom: (): Fragment => ({
    text: 'masquerade fully-random',
    json: { masquerade: { flags: 'fully-random' } },
  }),
  /** meta mark set meta mark | bits  (or ^ bits). */
  markSet: (op: '|' | '^', bits: number): Fragment => ({
    text: `meta mark set meta mark ${op} ${value.hex(bits).text}`,
    json: { mangle: { key: { meta: { key: 'mark' } }, value: { [op]: [{ meta: { key: 'mark' } }, bits] } } },
  }),
  /** meta nftrace set 1: the kernel reports this packet's path through every later chain (`nft monitor trace`). */
  nftrace: (): Fragment => ({
    text: 'meta nftrace set 1',
    json: { mangle: { key: { meta: { key: 'nftrace' } }, value: 1 } },
  }),
  /** update @set { key } — adds the key or refreshes its timeout. */
  updateSet: (set: string, key: Expr): Fragment => ({
    text: `update @${identifier(set)} { ${key.text} }`,
    json: { set: { op: 'update', elem: key.json, set: `@${set}` } },
  }),
};

// ---------------------------------------------------------------------------------------------
// Rules and commands

export interface Rule {
  readonly statements: readonly Fragment[];
  readonly comment?: string;
}

const ruleTexts = new WeakMap<Rule, string>();

/** A rule's text, memoised: fingerprints and commands both need it, for every rule of a sync. */
export function ruleText(r: Rule): string {
  const known = ruleTexts.get(r);
  if (known !== undefined) return known;
  const body = r.statements.map((s) => s.text).join(' ');
  const text = r.comment === undefined ? body : `${body} comment ${quoted(r.comment, COMMENT, 'comment')}`;
  ruleTexts.set(r, text);
  return text;
}

/** A command whose JSON is built only if asked for (`dump --format json`): most syncs send text. */
export function lazyFragment(text: string, json: () => unknown): Fragment {
  return {
    text,
    get json() {
      return json();
    },
  };
}

export function ruleJsonExpr(r: Rule): unknown[] {
  return r.statements.map((s) => s.json);
}

export function commentCheck(comment: string): string {
  return quoted(comment, COMMENT, 'comment');
}
