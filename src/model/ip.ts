/**
 * @module model/ip
 * Parsing and canonical formatting of IP addresses and CIDRs. Every address that reaches rule
 * text goes through here first, so the text is always one of two well-defined shapes.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { Cidr, Family, IpAddress } from './cluster.ts';

const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const CANONICAL_V4 = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);

/** Parse an IP address; returns undefined for anything that is not exactly one address. */
export function parseIp(input: string): IpAddress | undefined {
  const s = input.trim();
  // Already canonical dotted-quad (almost every address): no re-formatting.
  if (CANONICAL_V4.test(s)) return { family: 'ipv4', text: s };
  if (isIPv4(s)) {
    // node:net accepts only dotted-quad without leading zeros; keep it canonical anyway.
    return {
      family: 'ipv4',
      text: s
        .split('.')
        .map((o) => String(Number(o)))
        .join('.'),
    };
  }
  if (isIPv6(s) && !s.includes('%')) {
    return { family: 'ipv6', text: formatIpv6(ipv6ToBigInt(s)) };
  }
  return undefined;
}

/** Parse a CIDR ("10.0.0.0/8", " 2001:db8::/64 "); host bits are cleared. A bare address is not a CIDR. */
export function parseCidr(input: string): Cidr | undefined {
  const s = input.trim();
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIp(s.slice(0, slash));
  const lenText = s.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(lenText)) return undefined;
  const prefixLength = Number(lenText);
  const bits = familyBits(ip.family);
  if (prefixLength > bits) return undefined;
  const value = ipToBigInt(ip) & prefixMask(ip.family, prefixLength);
  return { family: ip.family, address: bigIntToIp(ip.family, value).text, prefixLength };
}

export function familyBits(family: Family): number {
  return family === 'ipv4' ? 32 : 128;
}

export function cidrText(c: Cidr): string {
  return `${c.address}/${c.prefixLength}`;
}

export function cidrContains(c: Cidr, ip: IpAddress): boolean {
  if (c.family !== ip.family) return false;
  if (ip.family === 'ipv4') {
    // Plain numbers: every endpoint address is checked against a few CIDRs (BigInt was 15% of a 10k render).
    const size = 2 ** (32 - c.prefixLength);
    return Math.floor(ipv4ToNumber(ip.text) / size) === Math.floor(ipv4ToNumber(c.address) / size);
  }
  return (ipToBigInt(ip) & prefixMask(c.family, c.prefixLength)) === ipToBigInt({ family: c.family, text: c.address });
}

/** The CIDR holding exactly one address. */
export function hostCidr(ip: IpAddress): Cidr {
  return { family: ip.family, address: ip.text, prefixLength: familyBits(ip.family) };
}

/** Orders addresses numerically within a family, IPv4 before IPv6. */
export function compareIp(a: IpAddress, b: IpAddress): number {
  if (a.family !== b.family) return a.family === 'ipv4' ? -1 : 1;
  const x = ipToBigInt(a);
  const y = ipToBigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** A canonical dotted quad as a number, its digits read in place (this runs for every endpoint). */
function ipv4ToNumber(text: string): number {
  let n = 0;
  let octet = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2e) {
      n = n * 256 + octet;
      octet = 0;
    } else octet = octet * 10 + (c - 0x30);
  }
  return n * 256 + octet;
}

export function ipToBigInt(ip: IpAddress): bigint {
  if (ip.family === 'ipv4') {
    return ip.text.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
  }
  return ipv6ToBigInt(ip.text);
}

function bigIntToIp(family: Family, value: bigint): IpAddress {
  if (family === 'ipv4') {
    const octets = [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn));
    return { family, text: octets.join('.') };
  }
  return { family, text: formatIpv6(value) };
}

function prefixMask(family: Family, prefixLength: number): bigint {
  const bits = BigInt(familyBits(family));
  const all = (1n << bits) - 1n;
  return (all << (bits - BigInt(prefixLength))) & all;
}

function ipv6ToBigInt(s: string): bigint {
  let text = s;
  // An embedded IPv4 tail ("::ffff:1.2.3.4") becomes two hextets.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const n = v4[1].split('.').map(Number);
    text =
      text.slice(0, -v4[1].length) +
      `${(((n[0] ?? 0) << 8) | (n[1] ?? 0)).toString(16)}:${(((n[2] ?? 0) << 8) | (n[3] ?? 0)).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headParts = head ? head.split(':') : [];
  const tailParts = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const zeros = tail === undefined ? 0 : 8 - headParts.length - tailParts.length;
  const parts = [...headParts, ...Array<string>(zeros).fill('0'), ...tailParts];
  return parts.reduce((acc, p) => (acc << 16n) | BigInt(parseInt(p, 16)), 0n);
}

/** RFC 5952 text: lower case, longest run of two or more zero hextets compressed. */
function formatIpv6(value: bigint): string {
  const hextets = Array.from({ length: 8 }, (_, i) => Number((value >> BigInt((7 - i) * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (hextets[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && hextets[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = hextets.map((h) => h.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}
