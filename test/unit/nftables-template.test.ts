/**
 * rules-templates/nftables.nft: the loader refuses a broken template with the file and line, the
 * shipped template defines exactly kproxy's fixed names and priorities, and every golden case's
 * dump contains the filled template.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CHAIN, SET, TABLE } from '../../src/backends/nftables/render/names.ts';
import { Commands, ruleCommands } from '../../src/backends/nftables/render/ruleset.ts';
import { PRIORITY, skeletonChains, skeletonSets } from '../../src/backends/nftables/render/skeleton.ts';
import { expr, type NftFamily, ruleText, stmt, value } from '../../src/backends/nftables/render/syntax.ts';
import {
  checkFixedNames,
  NFTABLES_TEMPLATE_URL,
  nftablesTemplate,
  parseTemplate,
  renderTemplateChains,
  renderTemplateSets,
  type TemplateValues,
} from '../../src/backends/nftables/render/template.ts';
import { caseNames, GOLDEN_DIR, runCase } from '../support/golden.ts';

const FILE = 'test.nft';
const SHIPPED = readFileSync(fileURLToPath(NFTABLES_TEMPLATE_URL), 'utf8');

/** The 1-based number of the first non-comment line of `text` that contains `needle`. */
function lineOf(text: string, needle: string): number {
  const i = text.split('\n').findIndex((l) => !l.trim().startsWith('#') && l.includes(needle));
  if (i < 0) throw new Error(`no line contains ${needle}`);
  return i + 1;
}

/** The shipped template with the first line containing `needle` replaced by `line`; and that line's number. */
function edited(needle: string, line: string): { text: string; line: number } {
  const n = lineOf(SHIPPED, needle);
  const lines = SHIPPED.split('\n');
  lines[n - 1] = line;
  return { text: lines.join('\n'), line: n };
}

function parseError(text: string): string {
  try {
    checkFixedNames(parseTemplate(text, FILE));
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('the template was accepted');
}

function values(family: NftFamily, over: Partial<TemplateValues> = {}): TemplateValues {
  return {
    family,
    mark: 0x4000,
    loopback:
      family === 'ip'
        ? { family: 'ipv4', address: '127.0.0.0', prefixLength: 8 }
        : { family: 'ipv6', address: '::1', prefixLength: 128 },
    offCluster: stmt.match(expr.saddr(family), '!=', value.cidr(family === 'ip' ? V4 : V6)),
    nodePortAddresses: [],
    serviceCidrs: [],
    masqueradeAll: false,
    localDetector: true,
    nodePortCidrs: false,
    ...over,
  };
}
const V4 = { family: 'ipv4', address: '10.244.0.0', prefixLength: 16 } as const;
const V6 = { family: 'ipv6', address: 'fd00:244::', prefixLength: 56 } as const;

/** A minimal valid template around one chain body. */
function tiny(body: string): string {
  return [
    'table {{family}} kproxy {',
    '  set s {',
    '    type {{addrType}}',
    '  }',
    '  map m {',
    '    type {{addrType}} . inet_proto . inet_service : verdict',
    '  }',
    '  chain c {',
    body,
    '  }',
    '  chain d {',
    '    return',
    '  }',
    '}',
  ].join('\n');
}

describe('the shipped template', () => {
  it('loads, and defines exactly the fixed chains and sets of names.ts, base chains at PRIORITY', () => {
    const t = nftablesTemplate();
    expect(t.chains.map((c) => c.name).sort()).toEqual(Object.values(CHAIN).sort());
    expect(t.sets.map((s) => s.name).sort()).toEqual(Object.values(SET).sort());
    const priorities = new Set<number>(Object.values(PRIORITY));
    const base = t.chains.filter((c) => c.base);
    expect(base.map((c) => c.name)).toEqual([
      CHAIN.natPrerouting,
      CHAIN.natOutput,
      CHAIN.natPostrouting,
      CHAIN.filterPrerouting,
      CHAIN.filterOutput,
      CHAIN.filterInput,
      CHAIN.filterForward,
      CHAIN.filterOutputPostDnat,
    ]);
    for (const c of base) expect(priorities.has(c.base?.priority ?? Number.NaN), c.name).toBe(true);
  });

  it('comes out in both notations, through the same statements as the rest of the renderer', () => {
    const chains = renderTemplateChains(nftablesTemplate(), values('ip6', { mark: 0x10 }));
    const masq = chains.find((c) => c.name === CHAIN.masquerading)!;
    expect(masq.rules.map(ruleText)).toEqual([
      'ct status dnat ip6 saddr . ip6 daddr @hairpin jump mark-for-masquerade',
      'meta mark & 0x10 == 0 return',
      'meta mark set meta mark ^ 0x10',
      'masquerade fully-random',
    ]);
    expect(masq.rules[0]!.statements[0]!.json).toEqual({
      match: { op: 'in', left: { ct: { key: 'status' } }, right: 'dnat' },
    });
    expect(masq.rules[1]!.statements.map((s) => s.json)).toEqual([
      { match: { op: '==', left: { '&': [{ meta: { key: 'mark' } }, 0x10] }, right: 0 } },
      { return: null },
    ]);
  });

  it('keeps or drops conditional rules', () => {
    const services = (over: Partial<TemplateValues>) =>
      renderTemplateChains(nftablesTemplate(), values('ip', over))
        .find((c) => c.name === CHAIN.services)!
        .rules.map(ruleText);
    expect(services({ masqueradeAll: true })[0]).toBe('ip daddr @cluster-ips jump mark-for-masquerade');
    expect(services({})[0]).toBe('ip daddr @cluster-ips ip saddr != 10.244.0.0/16 jump mark-for-masquerade');
    expect(services({ localDetector: false, offCluster: undefined })).toEqual([
      'ip daddr . meta l4proto . th dport vmap @service-ips',
      'ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports',
    ]);
    expect(services({ nodePortCidrs: true })[2]).toBe(
      'ip daddr @nodeport-addresses ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports',
    );
  });

  it('fills placeholders only with values that pass the renderer checks, naming the template line', () => {
    const t = nftablesTemplate();
    const file = t.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const markLine = lineOf(SHIPPED, 'meta mark & {{mark}} == 0 return');
    expect(() => renderTemplateChains(t, values('ip', { mark: 2 ** 33 }))).toThrow(
      new RegExp(`^${file}:${markLine}: invalid mark`),
    );
    const cidrsLine = lineOf(SHIPPED, 'set service-cidrs {');
    expect(() => renderTemplateSets(t, values('ip', { serviceCidrs: [V6] }))).toThrow(
      new RegExp(`^${file}:${cidrsLine}: ipv6 CIDR fd00:244:: in an ip table`),
    );
    expect(() => renderTemplateSets(t, values('ip', { serviceCidrs: [{ ...V4, address: '10.0.0.1; x' }] }))).toThrow(
      /invalid IP address/,
    );
    expect(() => renderTemplateChains(t, values('inet' as NftFamily))).toThrow(/invalid nftables family/);
  });
});

describe('a broken template is refused with its line', () => {
  const cases: [string, { text: string; line: number }, RegExp][] = [
    [
      'unknown placeholder',
      edited('meta mark set meta mark | {{mark}}', '\t\tmeta mark set meta mark | {{mrak}}'),
      /unknown placeholder \{\{mrak\}\}/,
    ],
    [
      'unknown condition',
      edited('{{#if masqueradeAll}}', '\t\t{{#if masqueradeAl}}'),
      /unknown condition "masqueradeAl"/,
    ],
    [
      'section marker inside a rule',
      edited('{{family}} daddr @cluster-ips jump mark-for-masquerade', '\t\t{{#if localDetector}} jump services'),
      /must stand on a line of its own/,
    ],
    [
      'stray {{/if}}',
      edited('ct state new jump firewall-check', '\t\t{{/if}}'),
      /\{\{\/if\}\} without an open \{\{#if\}\}/,
    ],
    ['stray {{else}}', edited('ct state new jump firewall-check', '\t\t{{else}}'), /\{\{else\}\} without an open/],
    [
      'a second {{else}}',
      edited('{{#if localDetector}}', '\t\t{{else}}'),
      /a second \{\{else\}\} for the \{\{#if\}\} of line \d+/,
    ],
    ['unknown statement', edited('masquerade fully-random', '\t\tcounter'), /unrecognised statement at "counter"/],
    [
      'unknown statement after a match',
      edited('ct state new jump nodeport-endpoints-check', '\t\tct state new log jump nodeport-endpoints-check'),
      /unrecognised statement at "log"/,
    ],
    [
      'a literal family',
      edited('{{family}} daddr @cluster-ips reject', '\t\tip daddr @cluster-ips reject'),
      /write "\{\{family\}\} daddr", not "ip"/,
    ],
    [
      'wrong keyword',
      edited('ct state new jump firewall-check', '\t\tct state dnat jump firewall-check'),
      /ct state compares with new/,
    ],
    [
      'a statement after the verdict',
      edited('{{family}} daddr @service-cidrs drop', '\t\t{{family}} daddr @service-cidrs drop accept'),
      /nothing may follow a verdict/,
    ],
    [
      'a jump to a chain the template lacks',
      edited('jump masquerading', '\t\tjump masquerade'),
      /no chain masquerade in the template/,
    ],
    ['a jump to a base chain', edited('jump masquerading', '\t\tjump nat-output'), /nat-output is a base chain/],
    [
      'a lookup whose key does not match the set',
      edited('{{family}} daddr @cluster-ips reject', '\t\t{{family}} daddr @hairpin reject'),
      /the key \{\{addrType\}\} does not match hairpin's type \{\{addrType\}\} \. \{\{addrType\}\}/,
    ],
    [
      'vmap over a set',
      edited('vmap @no-endpoint-services', '\t\t{{family}} daddr vmap @cluster-ips'),
      /cluster-ips is a set, used as a map/,
    ],
    [
      '{{offCluster}} outside {{#if localDetector}}',
      edited('{{family}} daddr @cluster-ips reject', '\t\t{{family}} daddr @cluster-ips {{offCluster}} reject'),
      /\{\{offCluster\}\} has a value only inside \{\{#if localDetector\}\}/,
    ],
    [
      'a placeholder out of place',
      edited('meta mark set meta mark | {{mark}}', '\t\tmeta mark set meta mark | {{loopback}}'),
      /expected \{\{mark\}\} or a number, got "\{\{loopback\}\}"/,
    ],
    [
      'a malformed base chain line',
      edited(
        'type nat hook output priority -100; policy accept;',
        '\t\ttype nat hook output priority dstnat; policy accept;',
      ),
      /expected "type filter\|nat hook HOOK priority N; policy accept;"/,
    ],
    ['an unknown set flag', edited('flags interval', '\t\tflags intervals'), /unknown set flag "intervals"/],
    [
      'a map without verdicts',
      edited('type inet_proto . inet_service : verdict', '\t\ttype inet_proto'),
      /must be a verdict map/,
    ],
    [
      'a chain that is not a fixed chain',
      edited('chain reject-chain {', '\tchain reject-all {'),
      /chain reject-all is not one of kproxy's fixed chains/,
    ],
  ];
  for (const [what, { text, line }, pattern] of cases) {
    it(what, () => {
      const message = parseError(text);
      expect(message).toMatch(new RegExp(`^${FILE}:${line}: `));
      expect(message).toMatch(pattern);
    });
  }

  it('an unclosed {{#if}}: the chain cannot end inside it', () => {
    expect(parseError(tiny('    {{#if masqueradeAll}}\n    jump d'))).toMatch(
      /^test\.nft:11: chain c ends inside the \{\{#if masqueradeAll\}\} of line 9$/,
    );
  });

  it('an unclosed {{#if}} at the end of the file names the {{#if}} line', () => {
    const text = ['table {{family}} kproxy {', '  chain c {', '    {{#if nodePortCidrs}}', '    return'].join('\n');
    expect(() => parseTemplate(text, FILE)).toThrow(
      /^test\.nft:3: \{\{#if nodePortCidrs\}\} is never closed by \{\{\/if\}\}/,
    );
  });

  it('a template without some fixed chain or set', () => {
    expect(() => checkFixedNames(parseTemplate(tiny('    jump d'), FILE))).toThrow(/^test\.nft:8: chain c is not one/);
    const withoutHairpin = SHIPPED.replace(/\tset hairpin \{\n\t\ttype [^\n]*\n\t\}\n/, '');
    expect(parseError(withoutHairpin)).toMatch(
      new RegExp(`^test\\.nft:${lineOf(withoutHairpin, '@hairpin')}: no set hairpin in the template$`),
    );
    const withoutReject = SHIPPED.replace(/\tchain reject-chain \{\n\t\treject\n\t\}\n/, '');
    expect(withoutReject).not.toBe(SHIPPED);
    expect(parseError(withoutReject)).toMatch(/^test\.nft: the template does not define the chains reject-chain$/);
  });

  it('accepts a small template and renders it', () => {
    const t = parseTemplate(
      tiny(
        '    {{#if masqueradeAll}}\n    {{family}} daddr . meta l4proto . th dport vmap @m\n    {{/if}}\n    goto d',
      ),
      FILE,
    );
    const render = (masqueradeAll: boolean) =>
      renderTemplateChains(t, values('ip', { masqueradeAll }))[0]!.rules.map(ruleText);
    expect(render(true)).toEqual(['ip daddr . meta l4proto . th dport vmap @m', 'goto d']);
    expect(render(false)).toEqual(['goto d']);
  });
});

describe('every golden dump contains the filled template', () => {
  for (const name of caseNames()) {
    it(name, () => {
      const expected = readFileSync(join(GOLDEN_DIR, name, 'expected.nft'), 'utf8');
      const lines = new Set(expected.split('\n'));
      // The base chains, their hooks and priorities, whatever the configuration.
      let families = 0;
      for (const family of ['ip', 'ip6'] as const) {
        if (!lines.has(`add table ${family} ${TABLE}`)) continue;
        families++;
        const c = new Commands(family, TABLE);
        const base = renderTemplateChains(nftablesTemplate(), values(family)).filter((chain) => chain.base);
        expect(base).toHaveLength(8);
        for (const chain of base) expect(lines.has(c.addChain(chain).text), c.addChain(chain).text).toBe(true);
      }
      expect(families).toBeGreaterThan(0);
      // The whole skeleton filled from the case's own context: chains, rules and set definitions.
      for (const { state } of runCase(name).desired.families) {
        const f = state.family === 'ipv4' ? 'ip' : 'ip6';
        const c = new Commands(f, TABLE);
        for (const chain of skeletonChains(state)) {
          expect(lines.has(c.addChain(chain).text)).toBe(true);
          for (const rule of ruleCommands(c, chain)) expect(lines.has(rule.text), rule.text).toBe(true);
        }
        for (const set of skeletonSets(state, new Map(), { endpointLayout: 'maps', endpointShards: 1 }))
          expect(lines.has(c.addSet(set.spec).text)).toBe(true);
      }
    });
  }
});
