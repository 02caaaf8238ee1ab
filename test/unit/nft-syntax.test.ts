import { describe, expect, it } from 'vitest';
import { expr, identifier, ruleText, stmt, value } from '../../src/backends/nftables/render/syntax.ts';

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
