/**
 * @module backends/iptables/render/syntax
 * The only place iptables rule text is made. Every builder takes typed values, validates them
 * (a violation throws: a programming error, since the sources validate first) and writes them
 * exactly as `iptables-save` (1.8.9, iptables-nft and iptables-legacy alike) prints them back, so
 * that what kproxy wants and what the kernel holds compare as plain strings. The facts behind
 * each shape were checked against both flavors (test/kernel/iptables-roundtrip.test.ts keeps
 * checking them):
 *  - the "IP part" comes first, in the order `-s -d -i -o -p`, whatever the input order; then the
 *    `-m` matches in the order given; then `-j` and its options;
 *  - addresses carry their prefix (`/32`, `/128`); a CIDR's host bits are cleared; a `/0` match is
 *    left out entirely (and `! -s 0.0.0.0/0` is refused by iptables-nft, so it is never written);
 *    IPv6 text is glibc inet_ntop's (`::ffff:10.0.0.1`, `::0.2.0.3`, no `::` for one zero group);
 *  - a comment is printed bare when it is only `[A-Za-z0-9_-]`, else in double quotes;
 *  - `--or-mark M` is printed `--set-xmark M/M`, `--xor-mark M` is `--set-xmark M/0x0`; marks in
 *    lower-case hex without leading zeros;
 *  - `-m statistic --probability` holds `lround(p * 2^31)` and prints it with `%.11f`;
 *  - `-m recent` prints `--rcheck --seconds T --reap --name X --mask M --rsource` and
 *    `--set --name X --mask M --rsource`;
 *  - `-j REJECT` prints `--reject-with icmp-port-unreachable` (IPv6: `icmp6-port-unreachable`);
 *  - conntrack states print in the kernel's bit order (INVALID,NEW,RELATED,ESTABLISHED,…).
 */
import { isIP } from 'node:net';
import type { Cidr, Family, Protocol } from '../../../model/cluster.ts';
import type { RuleText } from './types.ts';

// ---------------------------------------------------------------------------------------------
// Values

/** Chain names: kproxy's own (upper case) and the built-in ones; iptables allows 28 characters. */
const CHAIN_NAME = /^[A-Z0-9-]{1,28}$/;
/** Interface names (IFNAMSIZ 16 with the NUL). */
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
/** What a comment may hold: names, addresses, arrows, punctuation; never quotes or backslashes. */
const COMMENT = /^[A-Za-z0-9_.:/,;=>()[\]-](?:[A-Za-z0-9 _.:/,;=>()[\]-]{0,253}[A-Za-z0-9_.:/,;=>()[\]-])?$/;
/** Comments iptables-save prints without quotes (xtables_save_string). */
const BARE_COMMENT = /^[A-Za-z0-9_-]+$/;

export function chainName(name: string): string {
  if (!CHAIN_NAME.test(name)) throw new Error(`invalid iptables chain name ${JSON.stringify(name)}`);
  return name;
}

/** Other software's chain names (read back from iptables-save), for deleting kproxy's jumps out of them. */
const FOREIGN_CHAIN_NAME = /^[A-Za-z0-9_.-]{1,28}$/;

export function foreignChainName(name: string): string {
  if (!FOREIGN_CHAIN_NAME.test(name)) throw new Error(`unsupported iptables chain name ${JSON.stringify(name)}`);
  return name;
}

function checkFamily(family: Family): void {
  if (family !== 'ipv4' && family !== 'ipv6') throw new Error(`invalid family ${JSON.stringify(family)}`);
}

function checkPort(port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`invalid port ${port}`);
  return port;
}

function checkIfname(name: string): string {
  if (!IFNAME.test(name)) throw new Error(`invalid interface name ${JSON.stringify(name)}`);
  return name;
}

/** 16-bit words of an IPv6 address that node:net accepted. */
function ipv6Words(ip: string): number[] {
  let text = ip;
  const tail: number[] = [];
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    tail.push((a << 8) | b, (c << 8) | d);
    text = text.slice(0, -v4[0].length);
    if (text.endsWith(':') && !text.endsWith('::')) text = text.slice(0, -1);
  }
  const parse = (s: string) => (s === '' ? [] : s.split(':').map((h) => parseInt(h, 16)));
  const double = text.indexOf('::');
  let words: number[];
  if (double < 0) words = [...parse(text), ...tail];
  else {
    const head = parse(text.slice(0, double));
    const rest = [...parse(text.slice(double + 2)), ...tail];
    words = [...head, ...Array<number>(8 - head.length - rest.length).fill(0), ...rest];
  }
  if (words.length !== 8 || words.some((w) => !(w >= 0 && w <= 0xffff)))
    throw new Error(`invalid IPv6 address ${JSON.stringify(ip)}`);
  return words;
}

/** glibc inet_ntop6: the first longest run (of two or more) zero words is `::`; v4-compatible and v4-mapped addresses end dotted. */
function formatIpv6(words: readonly number[]): string {
  let best = { base: -1, len: 0 };
  let cur = { base: -1, len: 0 };
  for (let i = 0; i < 8; i++) {
    if (words[i] === 0) {
      if (cur.base === -1) cur = { base: i, len: 1 };
      else cur.len++;
    } else if (cur.base !== -1) {
      if (best.base === -1 || cur.len > best.len) best = cur;
      cur = { base: -1, len: 0 };
    }
  }
  if (cur.base !== -1 && (best.base === -1 || cur.len > best.len)) best = cur;
  if (best.base !== -1 && best.len < 2) best = { base: -1, len: 0 };
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (best.base !== -1 && i >= best.base && i < best.base + best.len) {
      if (i === best.base) out += ':';
      continue;
    }
    if (i !== 0) out += ':';
    if (i === 6 && best.base === 0 && (best.len === 6 || (best.len === 5 && words[5] === 0xffff))) {
      const w6 = words[6] ?? 0;
      const w7 = words[7] ?? 0;
      out += `${w6 >> 8}.${w6 & 0xff}.${w7 >> 8}.${w7 & 0xff}`;
      return out;
    }
    out += (words[i] ?? 0).toString(16);
  }
  if (best.base !== -1 && best.base + best.len === 8) out += ':';
  return out;
}

/** An address of `family` in the text iptables-save prints. */
export function ipText(family: Family, ip: string): string {
  checkFamily(family);
  const v = isIP(ip);
  if (v !== (family === 'ipv4' ? 4 : 6) || ip.includes('%'))
    throw new Error(`invalid ${family} address ${JSON.stringify(ip)}`);
  if (family === 'ipv4') return ip;
  return formatIpv6(ipv6Words(ip));
}

function familyBits(family: Family): number {
  return family === 'ipv4' ? 32 : 128;
}

function wordsOf(family: Family, ip: string): number[] {
  return family === 'ipv4' ? ip.split('.').map(Number) : ipv6Words(ip);
}

/** A CIDR of `family` as iptables-save prints it: host bits cleared, `/len` always. */
export function cidrText(family: Family, c: Cidr): string {
  if (c.family !== family) throw new Error(`CIDR ${c.address}/${c.prefixLength} is not ${family}`);
  const bits = familyBits(family);
  if (!Number.isInteger(c.prefixLength) || c.prefixLength < 0 || c.prefixLength > bits)
    throw new Error(`invalid prefix length ${c.prefixLength}`);
  ipText(family, c.address);
  const unit = family === 'ipv4' ? 8 : 16;
  const masked = wordsOf(family, c.address).map((w, i) => {
    const keep = Math.max(0, Math.min(unit, c.prefixLength - i * unit));
    const mask = keep === 0 ? 0 : ((0xffff << (unit - keep)) & ((1 << unit) - 1)) >>> 0;
    return w & mask;
  });
  const address = family === 'ipv4' ? masked.join('.') : formatIpv6(masked);
  return `${address}/${c.prefixLength}`;
}

/** A single address as a CIDR text: `/32` or `/128`. */
export function hostText(family: Family, ip: string): string {
  return `${ipText(family, ip)}/${familyBits(family)}`;
}

/** A mark value as iptables-save prints it: `0x4000`. */
export function markText(mark: number): string {
  if (!Number.isInteger(mark) || mark < 0 || mark > 0xffffffff) throw new Error(`invalid mark ${mark}`);
  return `0x${mark.toString(16)}`;
}

/** `--comment` and its value, quoted exactly when iptables-save quotes it. */
export function commentText(comment: string): string {
  if (!COMMENT.test(comment) || comment.includes('  ')) throw new Error(`invalid comment ${JSON.stringify(comment)}`);
  return BARE_COMMENT.test(comment) ? comment : `"${comment}"`;
}

const TWO_31 = 2n ** 31n;

/** The exact value of a finite positive double as a fraction num / 2^shift. */
function exactDouble(d: number): { num: bigint; shift: bigint } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, d);
  const bits = view.getBigUint64(0);
  const exponent = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  const mantissa = exponent === 0 ? fraction : fraction | (1n << 52n);
  const e = (exponent === 0 ? 1 : exponent) - 1075; // value = mantissa * 2^e
  return e >= 0 ? { num: mantissa << BigInt(e), shift: 0n } : { num: mantissa, shift: BigInt(-e) };
}

/** round(num / den), ties to even: what Go's and glibc's %f do with exact values. */
function roundHalfEven(num: bigint, den: bigint): bigint {
  const q = num / den;
  const r2 = (num % den) * 2n;
  if (r2 > den || (r2 === den && q % 2n === 1n)) return q + 1n;
  return q;
}

function decimals(value: bigint, places: number): string {
  const s = value.toString().padStart(places + 1, '0');
  return `${s.slice(0, -places)}.${s.slice(-places)}`;
}

/**
 * The probability of rule i of n in a ladder, 1/(n-i), as iptables-save prints it after upstream
 * wrote it: upstream formats 1/n with Go's `%0.10f`; iptables parses that (strtod) and stores
 * `lround(p * 0x80000000)` (xt_statistic); iptables-save prints `stored / 0x80000000` with `%.11f`.
 * All three steps are reproduced exactly (1/3 → `0.33333333349`, 1/2048 → `0.00048828125`).
 */
const probabilities = new Map<number, string>();

export function probabilityText(n: number): string {
  const known = probabilities.get(n);
  if (known !== undefined) return known;
  if (!Number.isInteger(n) || n < 2) throw new Error(`invalid probability denominator ${n}`);
  const { num, shift } = exactDouble(1 / n);
  const tenths = roundHalfEven(num * 10n ** 10n, 1n << shift);
  const parsed = Number(decimals(tenths, 10));
  const stored = BigInt(Math.round(parsed * 2 ** 31));
  const text = decimals(roundHalfEven(stored * 10n ** 11n, TWO_31), 11);
  probabilities.set(n, text);
  return text;
}

// ---------------------------------------------------------------------------------------------
// Rule parts

/** Where a part goes in the canonical rule: the IP part in this order, then matches, then the target. */
const SLOTS = ['-s', '-d', '-i', '-o', '-p', 'match', 'target'] as const;
type Slot = (typeof SLOTS)[number];

export interface Part {
  readonly slot: Slot;
  readonly text: string;
  /** The `-p` this part needs (`-m tcp`), or any `-p` (DNAT with a port). */
  readonly needs?: Protocol | 'any';
  /** For `-p`. */
  readonly protocol?: Protocol;
  /** A `/0` address match: iptables-save leaves it out. */
  readonly empty?: boolean;
}

const PROTO: Record<Protocol, string> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

export function protocolName(p: Protocol): string {
  const name = PROTO[p];
  if (!name) throw new Error(`invalid protocol ${JSON.stringify(p)}`);
  return name;
}

/** An address to match: a single IP (text) or a CIDR. */
export type Address = string | Cidr;

function addressPart(slot: '-s' | '-d', family: Family, a: Address, negate: boolean): Part {
  const text = typeof a === 'string' ? hostText(family, a) : cidrText(family, a);
  if (text.endsWith('/0')) {
    // iptables-save omits a match-all address; iptables-nft refuses its negation (it never matches).
    if (negate) throw new Error(`a negated ${slot} ${text} never matches: leave the rule out`);
    return { slot, text: '', empty: true };
  }
  return { slot, text: `${negate ? '! ' : ''}${slot} ${text}` };
}

const CT_STATES = ['INVALID', 'NEW', 'RELATED', 'ESTABLISHED', 'UNTRACKED', 'SNAT', 'DNAT'] as const;
export type CtState = (typeof CT_STATES)[number];

/** Matches (`-s`, `-d`, `-i`, `-o`, `-p` and `-m …`), each validated. */
export const match = {
  source: (family: Family, a: Address, negate = false): Part => addressPart('-s', family, a, negate),
  destination: (family: Family, a: Address, negate = false): Part => addressPart('-d', family, a, negate),
  inInterface: (name: string, negate = false): Part => ({
    slot: '-i',
    text: `${negate ? '! ' : ''}-i ${checkIfname(name)}`,
  }),
  /** `-i prefix+`: every interface whose name starts with `prefix`. */
  inInterfacePrefix: (prefix: string, negate = false): Part => {
    const text = `${checkIfname(prefix)}+`;
    if (text.length > 15) throw new Error(`interface prefix ${JSON.stringify(prefix)} is too long`);
    return { slot: '-i', text: `${negate ? '! ' : ''}-i ${text}` };
  },
  outInterface: (name: string, negate = false): Part => ({
    slot: '-o',
    text: `${negate ? '! ' : ''}-o ${checkIfname(name)}`,
  }),
  protocol: (p: Protocol): Part => ({ slot: '-p', text: `-p ${protocolName(p)}`, protocol: p }),
  /** `-m tcp [--dport N]` (udp, sctp): needs the same `-p`. */
  l4: (p: Protocol, dport?: number): Part => {
    const name = protocolName(p);
    const text = dport === undefined ? `-m ${name}` : `-m ${name} --dport ${checkPort(dport)}`;
    return { slot: 'match', text, needs: p };
  },
  comment: (comment: string): Part => ({ slot: 'match', text: `-m comment --comment ${commentText(comment)}` }),
  addrType: (which: 'src' | 'dst'): Part => ({
    slot: 'match',
    text: `-m addrtype --${which === 'src' ? 'src' : 'dst'}-type LOCAL`,
  }),
  /** Matches with probability 1/n (upstream's ladder: rule i of n uses n-i). */
  probability: (n: number): Part => ({
    slot: 'match',
    text: `-m statistic --mode random --probability ${probabilityText(n)}`,
  }),
  /** ClientIP affinity: the source was seen by `--set` of list `name` within `seconds`. */
  recentCheck: (family: Family, name: string, seconds: number): Part => {
    if (!Number.isInteger(seconds) || seconds < 1 || seconds > 0xffffffff)
      throw new Error(`invalid affinity timeout ${seconds}`);
    return {
      slot: 'match',
      text: `-m recent --rcheck --seconds ${seconds} --reap --name ${chainName(name)} --mask ${fullMask(family)} --rsource`,
    };
  },
  /** ClientIP affinity: remember the source in list `name`. */
  recentSet: (family: Family, name: string): Part => ({
    slot: 'match',
    text: `-m recent --set --name ${chainName(name)} --mask ${fullMask(family)} --rsource`,
  }),
  /** `-m mark [!] --mark M/M`: the packet carries every bit of `mark`. */
  mark: (mark: number, negate = false): Part => ({
    slot: 'match',
    text: `-m mark ${negate ? '! ' : ''}--mark ${markText(mark)}/${markText(mark)}`,
  }),
  conntrack: (states: readonly CtState[], negate = false): Part => {
    if (states.length === 0 || states.some((s) => !CT_STATES.includes(s)))
      throw new Error(`invalid conntrack states ${JSON.stringify(states)}`);
    const sorted = CT_STATES.filter((s) => states.includes(s));
    return { slot: 'match', text: `-m conntrack ${negate ? '! ' : ''}--ctstate ${sorted.join(',')}` };
  },
};

function fullMask(family: Family): string {
  checkFamily(family);
  return family === 'ipv4' ? '255.255.255.255' : 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
}

/** Targets (`-j …`). */
export const target = {
  jump: (chain: string): Part => ({ slot: 'target', text: `-j ${chainName(chain)}` }),
  accept: (): Part => ({ slot: 'target', text: '-j ACCEPT' }),
  drop: (): Part => ({ slot: 'target', text: '-j DROP' }),
  return: (): Part => ({ slot: 'target', text: '-j RETURN' }),
  /** ICMP port unreachable, as upstream's plain `-j REJECT` is printed back. */
  reject: (family: Family): Part => {
    checkFamily(family);
    const kind = family === 'ipv4' ? 'icmp-port-unreachable' : 'icmp6-port-unreachable';
    return { slot: 'target', text: `-j REJECT --reject-with ${kind}` };
  },
  /** DNAT to one endpoint; the rule must match a protocol (`-p`). */
  dnat: (family: Family, ip: string, port: number): Part => {
    const addr = ipText(family, ip);
    checkPort(port);
    const to = family === 'ipv4' ? `${addr}:${port}` : `[${addr}]:${port}`;
    return { slot: 'target', text: `-j DNAT --to-destination ${to}`, needs: 'any' };
  },
  /** `--or-mark M`, as printed back. */
  orMark: (mark: number): Part => ({ slot: 'target', text: `-j MARK --set-xmark ${markText(mark)}/${markText(mark)}` }),
  /** `--xor-mark M`, as printed back. */
  xorMark: (mark: number): Part => ({ slot: 'target', text: `-j MARK --set-xmark ${markText(mark)}/0x0` }),
  masqueradeRandomFully: (): Part => ({ slot: 'target', text: '-j MASQUERADE --random-fully' }),
};

/**
 * A rule in iptables-save's canonical form. The IP part (`-s -d -i -o -p`) may be given in any
 * order and is written in save's; matches keep their order; at most one target, written last.
 * A rule without a target (a comment-only rule, as upstream ends a KUBE-FW chain with) is allowed.
 */
export function rule(...parts: readonly Part[]): RuleText {
  const ip: (Part | undefined)[] = [undefined, undefined, undefined, undefined, undefined];
  const matches: Part[] = [];
  let tgt: Part | undefined;
  for (const p of parts) {
    const i = SLOTS.indexOf(p.slot);
    if (i < 0) throw new Error(`invalid rule part ${JSON.stringify(p)}`);
    if (i < 5) {
      if (ip[i]) throw new Error(`two ${p.slot} in one rule`);
      ip[i] = p;
    } else if (p.slot === 'match') matches.push(p);
    else {
      if (tgt) throw new Error('two targets in one rule');
      tgt = p;
    }
  }
  const proto = ip[4]?.protocol;
  for (const p of [...matches, ...(tgt ? [tgt] : [])]) {
    if (p.needs === 'any' && !proto) throw new Error(`${p.text} needs -p`);
    if (p.needs !== undefined && p.needs !== 'any' && p.needs !== proto)
      throw new Error(`${p.text} needs -p ${protocolName(p.needs)}`);
  }
  const words = [...ip, ...matches, tgt].filter((p): p is Part => p !== undefined && !p.empty).map((p) => p.text);
  return words.join(' ');
}

// ---------------------------------------------------------------------------------------------
// Checking text that did not come from the builders (the skeleton template)

const OPTION = /^--?[a-z][a-z-]*$/;
const VALUE = /^[A-Za-z0-9_.:/,+[\]-]+$/;

/** Splits a rule into words; a double-quoted word keeps its quotes. */
function words(text: string): string[] {
  const out = [...text.matchAll(/"[^"\\]*"|[^\s"]+/g)].map((m) => m[0]);
  if (out.join(' ') !== text) throw new Error(`rule text is not single-space separated words: ${JSON.stringify(text)}`);
  return out;
}

/**
 * Checks rule text written by hand (the template) against what the builders would write: safe
 * words only, comments valid and quoted as iptables-save quotes them, the IP part first and in
 * save's order, addresses with their prefix and in canonical form, `-m tcp` only with `-p tcp`.
 * Throws with the reason.
 */
export function checkRuleText(family: Family, text: string): RuleText {
  const w = words(text);
  let stage = 0; // index into SLOTS reached by the IP part; 5 once matches began
  let proto: string | undefined;
  let i = 0;
  const fail = (why: string): never => {
    throw new Error(`${why}: ${JSON.stringify(text)}`);
  };
  while (i < w.length) {
    const negate = w[i] === '!';
    if (negate) i++;
    const flag = w[i] ?? fail('dangling "!"');
    const slot = SLOTS.indexOf(flag as Slot);
    if (slot >= 0 && slot < 5) {
      if (slot < stage || stage >= 5) fail(`${flag} out of iptables-save's order (-s -d -i -o -p before any -m)`);
      stage = slot + 1;
      const value = w[i + 1] ?? fail(`${flag} without a value`);
      if (flag === '-s' || flag === '-d') {
        const [addr = '', len = ''] = value.split('/');
        if (!/^\d{1,3}$/.test(len)) fail(`address ${value} needs its prefix length`);
        const canonical = cidrText(family, { family, address: addr, prefixLength: Number(len) });
        if (canonical !== value) fail(`address ${value} is not canonical (${canonical})`);
        if (len === '0') fail('a /0 address is not printed by iptables-save');
      } else if (flag === '-i' || flag === '-o') {
        checkIfname(value.endsWith('+') ? value.slice(0, -1) : value);
      } else {
        if (!['tcp', 'udp', 'sctp'].includes(value)) fail(`unknown protocol ${value}`);
        proto = value;
      }
      i += 2;
      continue;
    }
    if (negate && !OPTION.test(flag)) fail('"!" before a non-option');
    if (flag === '-m' || flag === '-j') {
      const name = w[i + 1] ?? fail(`${flag} without a name`);
      if (flag === '-m') {
        stage = 5;
        if (['tcp', 'udp', 'sctp'].includes(name) && name !== proto) fail(`-m ${name} without -p ${name}`);
        if (!/^[a-z0-9]+$/.test(name)) fail(`invalid match ${name}`);
      } else {
        chainName(name);
        stage = 6;
      }
      i += 2;
      continue;
    }
    if (!OPTION.test(flag)) fail(`unexpected word ${flag}`);
    if (stage < 5) fail(`${flag} outside a match or target`);
    i++;
    if (flag === '--comment') {
      const value = w[i] ?? fail('--comment without a value');
      const inner = value.startsWith('"') ? value.slice(1, -1) : value;
      if (commentText(inner) !== value) fail(`comment ${value} is not quoted as iptables-save quotes it`);
      i++;
      continue;
    }
    // Option values: anything that is not itself an option.
    while (i < w.length && w[i] !== '!' && !OPTION.test(w[i] ?? '') && w[i] !== '-m' && w[i] !== '-j') {
      if (!VALUE.test(w[i] ?? '')) fail(`unsafe value ${w[i]}`);
      i++;
    }
  }
  return text;
}
