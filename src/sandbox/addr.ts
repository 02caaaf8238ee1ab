// Small IPv4/IPv6 address arithmetic for the flow-test harness (no dependencies).
import { isIPv4, isIPv6 } from 'node:net';

export type Family = 4 | 6;

export interface Cidr {
  readonly family: Family;
  readonly base: bigint;
  readonly prefix: number;
}

export function familyOf(addr: string): Family {
  if (isIPv4(addr)) return 4;
  if (isIPv6(addr)) return 6;
  throw new Error(`not an IP address: ${addr}`);
}

function v4ToBig(addr: string): bigint {
  const parts = addr.split('.').map(Number);
  let n = 0n;
  for (const p of parts) n = (n << 8n) | BigInt(p);
  return n;
}

function v6ToBig(addr: string): bigint {
  let text = addr;
  // Embedded dotted quad (e.g. ::ffff:1.2.3.4).
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = v4ToBig(tail);
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head = '', rest] = text.split('::');
  const headParts = head === '' ? [] : head.split(':');
  const restParts = rest === undefined || rest === '' ? [] : rest.split(':');
  const missing = 8 - headParts.length - restParts.length;
  const groups = rest === undefined ? headParts : [...headParts, ...Array<string>(missing).fill('0'), ...restParts];
  let n = 0n;
  for (const g of groups) n = (n << 16n) | BigInt(parseInt(g, 16));
  return n;
}

export function addrToBig(addr: string): bigint {
  return familyOf(addr) === 4 ? v4ToBig(addr) : v6ToBig(addr);
}

export function bigToAddr(n: bigint, family: Family): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 0xffn)).join('.');
  }
  const groups: string[] = [];
  for (let i = 7n; i >= 0n; i--) groups.push(((n >> (i * 16n)) & 0xffffn).toString(16));
  // Compress the longest run of zero groups (RFC 5952).
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return groups.join(':');
  const left = groups.slice(0, bestStart).join(':');
  const right = groups.slice(bestStart + bestLen).join(':');
  return `${left}::${right}`;
}

/** Canonical text form (lower case, compressed) of an address. */
export function canonical(addr: string): string {
  return bigToAddr(addrToBig(addr), familyOf(addr));
}

export function parseCidr(text: string): Cidr {
  const [addr = '', len] = text.split('/');
  const family = familyOf(addr);
  const bits = family === 4 ? 32 : 128;
  const prefix = len === undefined ? bits : Number(len);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > bits) throw new Error(`bad prefix in ${text}`);
  const hostBits = BigInt(bits - prefix);
  const base = (addrToBig(addr) >> hostBits) << hostBits;
  return { family, base, prefix };
}

/** The n-th address of a CIDR (n=1 is the first host after the network address). */
export function nthHost(cidr: string | Cidr, n: number): string {
  const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
  const bits = c.family === 4 ? 32 : 128;
  const size = 1n << BigInt(bits - c.prefix);
  if (BigInt(n) >= size) throw new Error(`host ${n} does not fit in /${c.prefix}`);
  return bigToAddr(c.base + BigInt(n), c.family);
}

export function cidrContains(cidr: string | Cidr, addr: string): boolean {
  const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
  if (familyOf(addr) !== c.family) return false;
  const bits = c.family === 4 ? 32 : 128;
  const hostBits = BigInt(bits - c.prefix);
  return (addrToBig(addr) >> hostBits) << hostBits === c.base;
}

/** Strip the IPv4-mapped IPv6 prefix (::ffff:a.b.c.d → a.b.c.d). */
export function unmapV4(addr: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  return m?.[1] ?? addr;
}
