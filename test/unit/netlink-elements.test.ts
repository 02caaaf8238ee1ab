/**
 * The bytes kproxy sends for set and map elements over netlink (kernel/netlink-elements.ts), laid
 * out as nf_tables expects them: each field of a concatenation in its own 4-byte register, numgen's
 * integer in host order, verdicts with their chain. That the kernel takes them, and that a table
 * loaded this way reads back equal to one nft loaded, is test/kernel/golden-nft.test.ts.
 */
import { describe, expect, it } from 'vitest';
import {
  elementLoadChunks,
  encodeElement,
  loadableOverNetlink,
  type LoadSet,
} from '../../src/backends/nftables/kernel/netlink-elements.ts';

const ENDPOINTS: LoadSet = {
  name: 'endpoint-addresses',
  keyType: ['ipv4_addr', 'inet_proto', 'inet_service', 'integer'],
  dataType: ['ipv4_addr'],
  verdictMap: false,
  elements: [],
};

/** Attribute (length, type, payload) as hex, nested ones spelled out. */
const attr = (type: number, payloadHex: string): string => {
  const len = 4 + payloadHex.length / 2;
  const pad = '00'.repeat(((len + 3) & ~3) - len);
  const le16 = (n: number): string => (n & 0xff).toString(16).padStart(2, '0') + (n >> 8).toString(16).padStart(2, '0');
  return `${le16(len)}${le16(type)}${payloadHex}${pad}`;
};
const NESTED = 0x8000;

describe('netlink element encoding', () => {
  it('an endpoint map element: address . protocol . port . index, each in a register, : address', () => {
    const hex = encodeElement(ENDPOINTS, '10.96.0.1 . tcp . 80 . 2 : 10.64.1.7').toString('hex');
    const key = attr(1, '0a600001' + '06000000' + '00500000' + '02000000');
    const data = attr(1, '0a400107');
    expect(hex).toBe(attr(1 | NESTED, attr(1 | NESTED, key) + attr(2 | NESTED, data)));
  });

  it('a verdict map element: goto with its chain, accept without', () => {
    const set: LoadSet = { name: 'service-ips', keyType: ['ipv4_addr'], verdictMap: true, elements: [] };
    const code = (n: number): string => attr(1, (n >>> 0).toString(16).padStart(8, '0'));
    const chain = attr(2, Buffer.from('dnat-10\0').toString('hex'));
    const key = attr(1 | NESTED, attr(1, '0a600001'));
    expect(encodeElement(set, '10.96.0.1 : goto dnat-10').toString('hex')).toBe(
      attr(1 | NESTED, key + attr(2 | NESTED, attr(2 | NESTED, code(-4) + chain))),
    );
    expect(encodeElement(set, '10.96.0.1 : accept').toString('hex')).toBe(
      attr(1 | NESTED, key + attr(2 | NESTED, attr(2 | NESTED, code(1)))),
    );
  });

  it('single fields keep their own size (a port is 2 bytes); IPv6 is 16', () => {
    const ports: LoadSet = { name: 'p', keyType: ['inet_service'], verdictMap: false, elements: [] };
    expect(encodeElement(ports, '8080').toString('hex')).toBe(attr(1 | NESTED, attr(1 | NESTED, attr(1, '1f90'))));
    const v6: LoadSet = { name: 'v6', keyType: ['ipv6_addr'], verdictMap: false, elements: [] };
    expect(encodeElement(v6, 'fd00::1').toString('hex')).toBe(
      attr(1 | NESTED, attr(1 | NESTED, attr(1, 'fd000000000000000000000000000001'))),
    );
  });

  it('text that is not the set type throws instead of guessing', () => {
    for (const bad of [
      '10.96.0.1 . tcp . 80 : 10.64.1.7', // a field short
      '10.96.0.01 . tcp . 80 . 0 : 10.64.1.7', // not canonical
      '10.96.0.1 . tcp . 70000 . 0 : 10.64.1.7',
      '10.96.0.1 . icmpx . 80 . 0 : 10.64.1.7',
      '10.96.0.1 . tcp . 80 . 0 : fd00::1', // wrong family
      '10.96.0.1 . tcp . 80 . 0', // a map element without data
    ])
      expect(() => encodeElement(ENDPOINTS, bad), bad).toThrow(/endpoint-addresses/);
    const vmap: LoadSet = { name: 'v', keyType: ['ipv4_addr'], verdictMap: true, elements: [] };
    for (const bad of ['10.96.0.1 : goto', '10.96.0.1 : jump a b', '10.96.0.1 : queue', '10.96.0.1 : accept x'])
      expect(() => encodeElement(vmap, bad), bad).toThrow(/verdict/);
    // A chain name that is not one of kproxy's identifiers never reaches the kernel.
    for (const bad of ['10.96.0.1 : goto Bad\u0000name', '10.96.0.1 : jump ../x"'])
      expect(() => encodeElement(vmap, bad), bad).toThrow(/invalid nftables identifier/);
  });

  it('interval sets and unknown types stay with nft', () => {
    expect(loadableOverNetlink({ keyType: ['ipv4_addr'], flags: [] })).toBe(true);
    expect(loadableOverNetlink({ keyType: ['ipv4_addr'], flags: ['interval'] })).toBe(false);
    expect(loadableOverNetlink({ keyType: ['ipv4_addr', 'mark'], flags: [] })).toBe(false);
    expect(loadableOverNetlink({ keyType: ['ipv4_addr'], dataType: ['ether_addr'], flags: [] })).toBe(false);
  });
});

describe('elementLoadChunks', () => {
  const set = (name: string, n: number) => ({
    name,
    keyType: ['ipv4_addr'],
    verdictMap: false,
    elements: Array.from({ length: n }, (_, i) => `10.0.${name.length}.${i}`),
  });

  it('cuts a load into loads of at most N elements, in order, a set spanning several; empty sets carry nothing', () => {
    const load = { family: 'ip' as const, table: 'kproxy', sets: [set('a', 5), set('bb', 0), set('ccc', 4)] };
    const chunks = [...elementLoadChunks(load, 3)];
    expect(chunks.map((c) => c.sets.map((s) => `${s.name}:${s.elements.length}`))).toEqual([
      ['a:3'],
      ['a:2', 'ccc:1'],
      ['ccc:3'],
    ]);
    expect(chunks.every((c) => c.family === 'ip' && c.table === 'kproxy')).toBe(true);
    // Every element once, in order.
    const flat = (sets: readonly { name: string; elements: readonly string[] }[]) =>
      sets.flatMap((s) => s.elements.map((e) => `${s.name} ${e}`));
    expect(chunks.flatMap((c) => flat(c.sets))).toEqual(flat(load.sets));
    expect([...elementLoadChunks(load, 100)]).toHaveLength(1);
    expect([...elementLoadChunks({ ...load, sets: [set('a', 0)] }, 3)]).toEqual([]);
  });
});
