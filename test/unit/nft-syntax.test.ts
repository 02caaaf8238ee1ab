import { describe, expect, it } from 'vitest';
import {
  element,
  elementJson,
  elementKey,
  expr,
  identifier,
  ruleText,
  stmt,
  value,
  verdictValue,
} from '../../src/backends/nftables/render/syntax.ts';

/** Strings that would end a quoted string, a statement or a command if they reached rule text. */
const HOSTILE = ['a"b', 'a;b', 'a\nb', 'a b', '$(reboot)', 'a}b', 'a#b', '', 'x'.repeat(300), 'é'];

describe('the only writer of rule text refuses anything it cannot write safely', () => {
  it('identifiers (chain, set names) must be plain', () => {
    expect(identifier('svc-1234abcd-ns/name/tcp/80')).toBe('svc-1234abcd-ns/name/tcp/80');
    for (const bad of [...HOSTILE, 'Upper', '-lead'])
      expect(() => identifier(bad), JSON.stringify(bad)).toThrow(/invalid nftables identifier/);
  });

  it('interface names are IFNAMSIZ-bounded and quote-free', () => {
    expect(value.ifname('veth*').text).toBe('"veth*"');
    for (const bad of [...HOSTILE, 'a*b', 'sixteen-chars-xx'])
      expect(() => value.ifname(bad), JSON.stringify(bad)).toThrow(/invalid interface name/);
  });

  it('addresses and ports are parsed, not pasted', () => {
    for (const bad of ['10.0.0.1; flush ruleset', '1.2.3', '::g', '10.0.0.1 ', '']) {
      expect(() => value.ip(bad), bad).toThrow(/invalid IP address/);
      expect(() => stmt.dnat(bad, 80), bad).toThrow(/invalid IP address/);
    }
    for (const bad of [0, 65536, 1.5, -1, Number.NaN])
      expect(() => value.port(bad), String(bad)).toThrow(/invalid port/);
    expect(stmt.dnat('fd00::1', 8080).text).toBe('dnat to [fd00::1]:8080');
  });

  it('comments are limited to a safe alphabet', () => {
    const rule = (comment: string) => ruleText({ statements: [stmt.verdict({ kind: 'accept' })], comment });
    expect(rule('sum:abc_-DEF')).toBe('accept comment "sum:abc_-DEF"');
    for (const bad of ['a"b', 'a\nb', 'a;b}', 'x'.repeat(200)])
      expect(() => rule(bad), JSON.stringify(bad)).toThrow(/invalid comment/);
  });

  it('a verdict names only a valid chain', () => {
    expect(() => stmt.verdict({ kind: 'goto', chain: 'x; flush ruleset' })).toThrow(/invalid nftables identifier/);
    expect(
      stmt.vmap(expr.concat([expr.daddr('ip'), expr.l4proto(), expr.dport()]), value.setRef('service-ips')).text,
    ).toBe('ip daddr . meta l4proto . th dport vmap @service-ips');
  });
});

describe('elements are text; their JSON is read from it', () => {
  // The values elements are made of, each with the JSON its builder gives.
  const v4 = value.ip('10.96.0.10');
  const v6 = value.ip('fd00::a');
  const parts = [
    v4,
    v6,
    value.cidr({ family: 'ipv4', address: '10.0.0.0', prefixLength: 8 }),
    value.cidr({ family: 'ipv6', address: 'fd00::', prefixLength: 64 }),
    value.cidr({ family: 'ipv4', address: '192.0.2.1', prefixLength: 32 }),
    value.protocol('SCTP'),
    value.port(8080),
    value.number(0),
    value.number(4096),
  ];

  it('gives what the values themselves give', () => {
    for (const p of parts) expect(elementJson(element.set(p)), p.text).toEqual(p.json);
    const key = value.concat([v4, value.protocol('TCP'), value.port(80), value.number(3)]);
    expect(elementJson(element.set(key))).toEqual(key.json);
    expect(elementJson(element.map(key, v6))).toEqual([key.json, v6.json]);
    expect(elementJson(element.map(key, value.port(8080)))).toEqual([key.json, 8080]);
    for (const v of [{ kind: 'drop' }, { kind: 'return' }, { kind: 'goto', chain: 'svc-ab12-ns/x/tcp/80' }] as const)
      expect(elementJson(element.vmap(key, v))).toEqual([key.json, verdictValue(v).json]);
  });

  it('an indexed map element is the map element of the key with the index appended', () => {
    const frontend = value.concat([v4, value.protocol('TCP'), value.port(80)]);
    expect(element.indexedMap(frontend, 3, v6)).toBe(element.map(value.concat([frontend, value.number(3)]), v6));
    expect(element.indexedMap(frontend, 3, v6)).toBe(
      element.map(value.concat([v4, value.protocol('TCP'), value.port(80), value.number(3)]), v6),
    );
    expect(() => element.indexedMap(frontend, -1, v6)).toThrow(/invalid number/);
  });

  it('a map element is named by its key', () => {
    const key = value.concat([v6, value.protocol('UDP'), value.port(53)]);
    expect(elementKey(element.vmap(key, { kind: 'jump', chain: 'x' }))).toBe('fd00::a . udp . 53');
    expect(elementKey(element.set(key))).toBe('fd00::a . udp . 53');
  });
});
