/**
 * @module backends/nftables/render/template
 * Loads rules-templates/nftables.nft, the nftables mode's fixed skeleton in nft syntax (the
 * template language is documented at the top of that file), and renders it per family.
 *
 * The template is read once and checked completely when loaded, whatever the configuration: an
 * unknown placeholder or condition, an unbalanced `{{#if}}`, a line that is not one of the shapes
 * below, a reference to a chain or set it does not define, a lookup whose key does not match the
 * set's type — each is an Error naming the file and line. Rule lines are not pasted into commands:
 * a small recogniser turns each into the same statements syntax.ts builds for the rest of the
 * renderer (so text and JSON both come out), and placeholders are filled only through syntax.ts's
 * validating builders. The recogniser knows exactly the statement shapes a skeleton needs:
 *
 *   jump C | goto C | return | accept | drop | reject | masquerade fully-random
 *   meta mark set meta mark (| or ^) N                      N: {{mark}} or a number
 *   meta mark & N (== or !=) M
 *   KEY [== | !=] VALUE        KEY: {{family}} saddr|daddr, meta l4proto, th dport, or a
 *                              concatenation `A . B …` of those; ct state; ct status; fib saddr|daddr type
 *                              VALUE: @set, {{loopback}} (addresses), new (ct state), dnat
 *                              (ct status), local (fib … type)
 *   KEY vmap @map
 *   {{offCluster}}             a whole match statement (only under {{#if localDetector}})
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Cidr } from '../../../model/cluster.ts';
import type { BaseChainSpec, Chain, Hook, SetFlag, SetSpec } from './ruleset.ts';
import type { Element, Expr, Fragment, NftFamily, Rule, Value } from './syntax.ts';
import { element, expr, identifier, stmt, value } from './syntax.ts';
import { CHAIN, SET, TABLE } from './names.ts';

/** The nftables mode's template, relative to this module (the repository's rules-templates/). */
export const NFTABLES_TEMPLATE_URL = new URL('../../../../rules-templates/nftables.nft', import.meta.url);

/** What varies between nodes and families: the value of every placeholder and condition. */
export interface TemplateValues {
  /** {{family}}; also gives {{addrType}}. */
  readonly family: NftFamily;
  /** {{mark}}: the masquerade mark bit's value. */
  readonly mark: number;
  /** {{loopback}}: the family's loopback range. */
  readonly loopback: Cidr;
  /** {{offCluster}}: "not from a pod", built by the local-traffic detector; undefined without one. */
  readonly offCluster: Fragment | undefined;
  /** {{nodePortAddresses}}: elements of the set that names it. */
  readonly nodePortAddresses: readonly Cidr[];
  /** {{serviceCidrs}}: elements of the set that names it. */
  readonly serviceCidrs: readonly Cidr[];
  /** Conditions. */
  readonly masqueradeAll: boolean;
  readonly localDetector: boolean;
  readonly nodePortCidrs: boolean;
}

const CONDITIONS = ['masqueradeAll', 'localDetector', 'nodePortCidrs'] as const;
type Condition = (typeof CONDITIONS)[number];

/** Every placeholder and where it may stand. */
const PLACEHOLDERS = {
  family: 'family',
  addrType: 'type',
  mark: 'number',
  loopback: 'value',
  offCluster: 'statement',
  nodePortAddresses: 'elements',
  serviceCidrs: 'elements',
} as const;
type Placeholder = keyof typeof PLACEHOLDERS;
type ElementsPlaceholder = { [K in Placeholder]: (typeof PLACEHOLDERS)[K] extends 'elements' ? K : never }[Placeholder];

/** Placeholders that have a value only when a condition holds. */
const REQUIRES: Partial<Record<Placeholder, Condition>> = { offCluster: 'localDetector' };

/** A set key's part; `addr` is {{addrType}}. */
type KeyType = 'addr' | 'inet_proto' | 'inet_service';
const KEY_TYPES: Readonly<Record<string, KeyType>> = {
  '{{addrType}}': 'addr',
  inet_proto: 'inet_proto',
  inet_service: 'inet_service',
};
const SET_FLAGS: readonly SetFlag[] = ['interval', 'dynamic', 'timeout'];

type Build<T> = (v: TemplateValues) => T;

/** A rule kept when every guard holds: `{{#if c}}` gives { c, true }, its `{{else}}` { c, false }. */
interface Guard {
  readonly condition: Condition;
  readonly holds: boolean;
}

interface TemplateRule {
  readonly line: number;
  readonly guards: readonly Guard[];
  readonly statements: readonly Build<Fragment>[];
}

export interface TemplateChain {
  readonly name: string;
  readonly line: number;
  readonly base?: BaseChainSpec;
  readonly rules: readonly TemplateRule[];
}

export interface TemplateSet {
  readonly name: string;
  readonly line: number;
  readonly verdictMap: boolean;
  readonly keyType: readonly KeyType[];
  readonly flags: readonly SetFlag[];
  readonly elements?: ElementsPlaceholder;
}

/** A checked template, ready to render for any TemplateValues. */
export interface NftablesTemplate {
  readonly file: string;
  /** In the template's order, which is the order of the commands. */
  readonly sets: readonly TemplateSet[];
  readonly chains: readonly TemplateChain[];
}

// ---------------------------------------------------------------------------------------------
// Loading

let loaded: NftablesTemplate | undefined;

/** The nftables mode's template: read and checked on first use, then kept. */
export function nftablesTemplate(): NftablesTemplate {
  loaded ??= loadTemplate(NFTABLES_TEMPLATE_URL);
  return loaded;
}

/** Reads, parses and checks a template file, including that it defines exactly names.ts's chains and sets. */
export function loadTemplate(url: URL): NftablesTemplate {
  const file = fileURLToPath(url);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read the nftables rules template ${file}: ${(e as Error).message}`);
  }
  const template = parseTemplate(text, file);
  checkFixedNames(template);
  return template;
}

/** The template must define every fixed chain and set of names.ts, and nothing else. */
export function checkFixedNames(t: NftablesTemplate): void {
  const compare = (kind: string, defined: readonly { name: string; line: number }[], wanted: readonly string[]) => {
    for (const d of defined) {
      if (!wanted.includes(d.name))
        throw new Error(`${t.file}:${d.line}: ${kind} ${d.name} is not one of kproxy's fixed ${kind}s (names.ts)`);
    }
    const missing = wanted.filter((w) => !defined.some((d) => d.name === w));
    if (missing.length > 0)
      throw new Error(`${t.file}: the template does not define the ${kind}s ${missing.join(', ')}`);
  };
  compare('chain', t.chains, Object.values(CHAIN));
  compare('set', t.sets, Object.values(SET));
}

// ---------------------------------------------------------------------------------------------
// Rendering

/** The template's chains for one family and configuration, in the template's order. */
export function renderTemplateChains(t: NftablesTemplate, v: TemplateValues): Chain[] {
  checkFamily(v.family);
  return t.chains.map((c) => {
    const rules: Rule[] = [];
    for (const r of c.rules) {
      if (!r.guards.every((g) => v[g.condition] === g.holds)) continue;
      rules.push({ statements: at(t.file, r.line, () => r.statements.map((s) => s(v))) });
    }
    return c.base ? { name: c.name, base: c.base, rules } : { name: c.name, rules };
  });
}

/** The template's sets for one family, with the elements their `elements =` placeholders give. */
export function renderTemplateSets(
  t: NftablesTemplate,
  v: TemplateValues,
): { readonly spec: SetSpec; readonly elements: Element[] }[] {
  const family = checkFamily(v.family);
  const addr = family === 'ip' ? 'ipv4_addr' : 'ipv6_addr';
  return t.sets.map((s) => {
    const name = s.elements;
    return {
      spec: {
        name: s.name,
        keyType: s.keyType.map((k) => (k === 'addr' ? addr : k)),
        verdictMap: s.verdictMap,
        flags: s.flags,
      },
      elements:
        name === undefined ? [] : at(t.file, s.line, () => v[name].map((c) => element.set(cidrValue(family, c)))),
    };
  });
}

function checkFamily(f: NftFamily): NftFamily {
  if (f !== 'ip' && f !== 'ip6') throw new Error(`invalid nftables family ${JSON.stringify(f)}`);
  return f;
}

/** A CIDR of the table's family, through syntax.ts's checks. */
function cidrValue(f: NftFamily, c: Cidr): Value {
  if (c.family !== (f === 'ip' ? 'ipv4' : 'ipv6')) throw new Error(`${c.family} CIDR ${c.address} in an ${f} table`);
  return value.cidr(c);
}

/** Runs `fn`, prefixing any error with the template line it concerns. */
function at<T>(file: string, line: number, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw new Error(`${file}:${line}: ${(e as Error).message}`, { cause: e });
  }
}

// ---------------------------------------------------------------------------------------------
// Parsing

const SECTION = /^\{\{(#if [A-Za-z]+|else|\/if)\}\}$/;
const PLACEHOLDER = /\{\{([^{}]*)\}\}/g;
const BASE_CHAIN =
  /^type (filter|nat) hook (prerouting|input|forward|output|postrouting) priority (-?\d+)\s*;\s*policy accept\s*;$/;

function fail(message: string): never {
  throw new Error(message);
}

interface OpenSection {
  readonly condition: Condition;
  readonly line: number;
  elseLine?: number;
}

interface SetRef {
  readonly line: number;
  readonly name: string;
  readonly map: boolean;
  readonly keyType: readonly KeyType[];
}

interface ChainRef {
  readonly line: number;
  readonly name: string;
}

/** Parses and checks a template's text; errors name `file` and the line. */
export function parseTemplate(text: string, file: string): NftablesTemplate {
  const parser = new TemplateParser(file);
  const lines = text.split('\n');
  lines.forEach((raw, index) => {
    const line = raw.trim();
    if (line !== '' && !line.startsWith('#')) at(file, index + 1, () => parser.line(line, index + 1));
  });
  return parser.finish(lines.length);
}

type ParserState = 'top' | 'table' | 'set' | 'chain' | 'end';

interface OpenSet {
  readonly name: string;
  readonly line: number;
  readonly map: boolean;
  keyType?: KeyType[];
  flags?: SetFlag[];
  elements?: ElementsPlaceholder;
}

interface OpenChain {
  readonly name: string;
  readonly line: number;
  base?: BaseChainSpec;
  readonly rules: TemplateRule[];
}

/** A line-by-line state machine: top → table → (set | chain)* → end. */
class TemplateParser {
  private readonly file: string;
  private readonly sets: TemplateSet[] = [];
  private readonly chains: TemplateChain[] = [];
  private readonly setRefs: SetRef[] = [];
  private readonly chainRefs: ChainRef[] = [];
  private readonly sections: OpenSection[] = [];
  private state: ParserState = 'top';
  private set: OpenSet | undefined;
  private chain: OpenChain | undefined;

  constructor(file: string) {
    this.file = file;
  }

  /** One trimmed, non-empty, non-comment line. */
  line(line: string, n: number): void {
    checkPlaceholders(line);
    const section = SECTION.exec(line)?.[1];
    if (section !== undefined) return this.section(section, n);
    const words = line.split(/\s+/);
    switch (this.state) {
      case 'top':
        return this.table(words);
      case 'table':
        return this.tableBody(words, line, n);
      case 'set':
        return this.setBody(words, line);
      case 'chain':
        return this.chainBody(words, line, n);
      case 'end':
        return fail('nothing may follow the "}" that closes the table');
    }
  }

  private section(section: string, n: number): void {
    if (this.state !== 'chain') fail('{{#if}}, {{else}} and {{/if}} may only surround rules, inside a chain');
    if (section.startsWith('#if ')) {
      const condition = section.slice(4);
      if (!(CONDITIONS as readonly string[]).includes(condition))
        fail(`unknown condition ${JSON.stringify(condition)} (known: ${CONDITIONS.join(', ')})`);
      this.sections.push({ condition: condition as Condition, line: n });
      return;
    }
    const open = this.sections[this.sections.length - 1];
    if (!open) fail(`{{${section}}} without an open {{#if}}`);
    if (section === 'else') {
      if (open.elseLine !== undefined) fail(`a second {{else}} for the {{#if}} of line ${open.line}`);
      open.elseLine = n;
    } else this.sections.pop();
  }

  private table(words: readonly string[]): void {
    if (words.length !== 4 || words[0] !== 'table' || words[1] !== '{{family}}' || words[3] !== '{')
      fail(`expected "table {{family}} ${TABLE} {"`);
    if (words[2] !== TABLE) fail(`the table is named ${TABLE}, not ${JSON.stringify(words[2])}`);
    this.state = 'table';
  }

  private tableBody(words: readonly string[], line: string, n: number): void {
    if (line === '}') {
      this.state = 'end';
      return;
    }
    const [kind, name, brace] = words;
    if (words.length !== 3 || brace !== '{' || (kind !== 'set' && kind !== 'map' && kind !== 'chain') || !name)
      fail('expected "set NAME {", "map NAME {", "chain NAME {" or the "}" that closes the table');
    identifier(name);
    if (kind === 'chain') {
      if (this.chains.some((c) => c.name === name)) fail(`chain ${name} is defined twice`);
      this.chain = { name, line: n, rules: [] };
      this.state = 'chain';
    } else {
      if (this.sets.some((s) => s.name === name)) fail(`set or map ${name} is defined twice`);
      this.set = { name, line: n, map: kind === 'map' };
      this.state = 'set';
    }
  }

  private setBody(words: readonly string[], line: string): void {
    const set = this.set ?? fail('internal: no open set');
    if (line !== '}') return parseSetLine(set, words, line);
    if (!set.keyType) fail(`${set.map ? 'map' : 'set'} ${set.name} has no type`);
    if (set.elements && (set.map || set.keyType.join() !== 'addr' || !set.flags?.includes('interval')))
      fail(`{{${set.elements}}} holds CIDRs: ${set.name} must be a set of type {{addrType}} with flags interval`);
    this.sets.push({
      name: set.name,
      line: set.line,
      verdictMap: set.map,
      keyType: set.keyType,
      flags: set.flags ?? [],
      ...(set.elements ? { elements: set.elements } : {}),
    });
    this.set = undefined;
    this.state = 'table';
  }

  private chainBody(words: readonly string[], line: string, n: number): void {
    const chain = this.chain ?? fail('internal: no open chain');
    if (line === '}') {
      const open = this.sections[this.sections.length - 1];
      if (open) fail(`chain ${chain.name} ends inside the {{#if ${open.condition}}} of line ${open.line}`);
      this.chains.push(chain);
      this.chain = undefined;
      this.state = 'table';
      return;
    }
    const guards: Guard[] = this.sections.map((s) => ({ condition: s.condition, holds: s.elseLine === undefined }));
    if (words[0] === 'type') {
      if (chain.rules.length > 0 || chain.base) fail('the "type … hook … priority …;" line must come first in a chain');
      if (guards.length > 0) fail('a chain\'s "type … hook … priority …;" line cannot be conditional');
      const m = BASE_CHAIN.exec(line);
      if (!m) fail('expected "type filter|nat hook HOOK priority N; policy accept;"');
      chain.base = { type: m[1] as 'filter' | 'nat', hook: m[2] as Hook, priority: Number(m[3]) };
      return;
    }
    const parser = new RuleParser(words, n, this.setRefs, this.chainRefs);
    const statements = parser.rule();
    for (const p of parser.placeholders) {
      const needs = REQUIRES[p];
      if (needs && !guards.some((g) => g.condition === needs && g.holds))
        fail(`{{${p}}} has a value only inside {{#if ${needs}}}`);
    }
    chain.rules.push({ line: n, guards, statements });
  }

  /** After the last line: everything closed, and every reference resolves. */
  finish(last: number): NftablesTemplate {
    const file = this.file;
    const unclosed = this.sections[0];
    if (unclosed) throw new Error(`${file}:${unclosed.line}: {{#if ${unclosed.condition}}} is never closed by {{/if}}`);
    if (this.set) throw new Error(`${file}:${this.set.line}: set ${this.set.name} is never closed by "}"`);
    if (this.chain) throw new Error(`${file}:${this.chain.line}: chain ${this.chain.name} is never closed by "}"`);
    if (this.state === 'top') throw new Error(`${file}:${last}: no "table {{family}} ${TABLE} {" in the template`);
    if (this.state === 'table') throw new Error(`${file}:${last}: the table is never closed by "}"`);
    for (const r of this.chainRefs) {
      const target = this.chains.find((c) => c.name === r.name);
      if (!target) throw new Error(`${file}:${r.line}: no chain ${r.name} in the template`);
      if (target.base) throw new Error(`${file}:${r.line}: ${r.name} is a base chain: rules cannot jump to it`);
    }
    for (const r of this.setRefs) {
      const target = this.sets.find((s) => s.name === r.name);
      const kind = r.map ? 'map' : 'set';
      if (!target) throw new Error(`${file}:${r.line}: no ${kind} ${r.name} in the template`);
      if (target.verdictMap !== r.map)
        throw new Error(`${file}:${r.line}: ${r.name} is a ${target.verdictMap ? 'map' : 'set'}, used as a ${kind}`);
      if (target.keyType.join(' . ') !== r.keyType.join(' . '))
        throw new Error(
          `${file}:${r.line}: the key ${typeText(r.keyType)} does not match ${r.name}'s type ${typeText(target.keyType)}`,
        );
    }
    return { file, sets: this.sets, chains: this.chains };
  }
}

function typeText(types: readonly KeyType[]): string {
  return types.map((t) => (t === 'addr' ? '{{addrType}}' : t)).join(' . ');
}

/** Every `{{…}}` is a known placeholder or a section marker standing alone; no stray braces. */
function checkPlaceholders(line: string): void {
  if (SECTION.test(line)) return;
  for (const m of line.matchAll(PLACEHOLDER)) {
    const name = m[1] ?? '';
    if (name.startsWith('#') || name.startsWith('/') || name === 'else')
      fail(`{{${name}}} must stand on a line of its own`);
    if (!Object.hasOwn(PLACEHOLDERS, name)) fail(`unknown placeholder {{${name}}}`);
  }
  const rest = line.replace(PLACEHOLDER, '');
  if (rest.includes('{{') || rest.includes('}}')) fail('unbalanced "{{" or "}}"');
  for (const word of line.split(/\s+/)) {
    if (word.includes('{{') && !/^\{\{[A-Za-z]+\}\}$/.test(word))
      fail(`a placeholder must be a word of its own, not part of ${JSON.stringify(word)}`);
  }
}

function parseSetLine(set: OpenSet, words: readonly string[], line: string): void {
  switch (words[0]) {
    case 'type': {
      if (set.keyType) fail(`${set.name} has two types`);
      const parts = words.slice(1);
      if (set.map) {
        if (parts.length < 3 || parts[parts.length - 2] !== ':' || parts[parts.length - 1] !== 'verdict')
          fail(`map ${set.name} must be a verdict map: "type KEY : verdict"`);
        parts.splice(-2);
      } else if (parts.includes(':')) fail(`${set.name} is a set: write "map ${set.name} {" for a map`);
      const keyType: KeyType[] = [];
      parts.forEach((p, i) => {
        if (i % 2 === 1) {
          if (p !== '.') fail(`expected "." between the key's types, got ${JSON.stringify(p)}`);
          return;
        }
        const t = KEY_TYPES[p];
        if (!t) fail(`unknown key type ${JSON.stringify(p)} (known: ${Object.keys(KEY_TYPES).join(', ')})`);
        keyType.push(t);
      });
      if (keyType.length === 0 || parts.length % 2 === 0) fail('expected "type T" or "type T . T …"');
      set.keyType = keyType;
      return;
    }
    case 'flags': {
      if (set.flags) fail(`${set.name} has two flags lines`);
      const flags = line
        .slice('flags'.length)
        .split(',')
        .map((f) => f.trim());
      for (const f of flags) {
        if (!(SET_FLAGS as readonly string[]).includes(f))
          fail(`unknown set flag ${JSON.stringify(f)} (known: ${SET_FLAGS.join(', ')})`);
      }
      set.flags = flags as SetFlag[];
      return;
    }
    case 'elements': {
      const p = words[2]?.slice(2, -2);
      if (words.length !== 3 || words[1] !== '=' || p === undefined || !Object.hasOwn(PLACEHOLDERS, p))
        fail('expected "elements = {{placeholder}}"');
      if (PLACEHOLDERS[p as Placeholder] !== 'elements') fail(`{{${p}}} is not a list of elements`);
      if (set.elements) fail(`${set.name} has two elements lines`);
      set.elements = p as ElementsPlaceholder;
      return;
    }
    default:
      fail(`expected "type …", "flags …", "elements = {{…}}" or "}" in ${set.name}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The rule recogniser

/** The left-hand side of a match: how to build it, and what may stand on its right. */
interface Operand {
  readonly text: string;
  readonly build: Build<Expr>;
  /** Its parts' types when it can be a set key. */
  readonly keyType?: readonly KeyType[];
  /** A single address: compares with {{loopback}}. */
  readonly address?: boolean;
  /** The keywords it compares with (ct state new…). */
  readonly keywords?: readonly ('new' | 'dnat' | 'local')[];
  /** A number (meta mark & N): compares with a number, with an explicit operator. */
  readonly numeric?: boolean;
}

interface Statement {
  readonly build: Build<Fragment>;
  /** A verdict: nothing may follow it. */
  readonly final: boolean;
}

const constant =
  <T>(x: T): Build<T> =>
  () =>
    x;

class RuleParser {
  private readonly words: readonly string[];
  private readonly line: number;
  private readonly setRefs: SetRef[];
  private readonly chainRefs: ChainRef[];
  private i = 0;
  readonly placeholders = new Set<Placeholder>();

  constructor(words: readonly string[], line: number, setRefs: SetRef[], chainRefs: ChainRef[]) {
    this.words = words;
    this.line = line;
    this.setRefs = setRefs;
    this.chainRefs = chainRefs;
  }

  rule(): Build<Fragment>[] {
    const out: Build<Fragment>[] = [];
    while (this.i < this.words.length) {
      const s = this.statement();
      out.push(s.build);
      if (s.final && this.i < this.words.length)
        fail(`nothing may follow a verdict, got ${this.describe(this.peek())}`);
    }
    return out;
  }

  private peek(k = 0): string | undefined {
    return this.words[this.i + k];
  }

  private next(): string | undefined {
    return this.words[this.i++];
  }

  private expect(word: string, after: string): void {
    const w = this.next();
    if (w !== word) fail(`expected "${word}" after ${after}, got ${this.describe(w)}`);
  }

  private describe(w: string | undefined): string {
    return w === undefined ? 'the end of the line' : JSON.stringify(w);
  }

  private use(p: Placeholder): void {
    this.placeholders.add(p);
  }

  private statement(): Statement {
    const w = this.peek();
    switch (w) {
      case '{{offCluster}}': {
        this.next();
        this.use('offCluster');
        return {
          build: (v) => v.offCluster ?? fail('{{offCluster}} has no value: no local-traffic detector'),
          final: false,
        };
      }
      case 'jump':
      case 'goto': {
        this.next();
        const chain = this.next();
        if (chain === undefined) fail(`"${w}" needs a chain`);
        this.chainRefs.push({ line: this.line, name: chain });
        return { build: constant(stmt.verdict({ kind: w, chain })), final: true };
      }
      case 'accept':
      case 'drop':
      case 'return':
        this.next();
        return { build: constant(stmt.verdict({ kind: w })), final: true };
      case 'reject':
        this.next();
        return { build: constant(stmt.reject()), final: true };
      case 'masquerade':
        this.next();
        this.expect('fully-random', 'masquerade');
        return { build: constant(stmt.masqueradeFullyRandom()), final: false };
      case 'meta':
        if (this.peek(1) === 'mark' && this.peek(2) === 'set') {
          this.i += 3;
          this.expect('meta', 'meta mark set');
          this.expect('mark', 'meta mark set meta');
          const op = this.next();
          if (op !== '|' && op !== '^') fail(`expected "|" or "^" in meta mark set, got ${this.describe(op)}`);
          const bits = this.number();
          return { build: (v) => stmt.markSet(op, bits(v)), final: false };
        }
    }
    const left = this.operand();
    const op = this.peek();
    if (op === 'vmap') {
      this.next();
      const map = this.setRef(left, true);
      return { build: (v) => stmt.vmap(left.build(v), map), final: false };
    }
    let explicit: '==' | '!=' | undefined;
    if (op === '==' || op === '!=') {
      this.next();
      explicit = op;
    }
    if (left.numeric && !explicit) fail(`${left.text} needs an explicit "==" or "!="`);
    const right = this.value(left);
    if (explicit === '==') return { build: (v) => stmt.matchEq(left.build(v), right(v)), final: false };
    const matchOp = explicit ?? '==';
    return { build: (v) => stmt.match(left.build(v), matchOp, right(v)), final: false };
  }

  /** A key, or a concatenation `A . B …` of keys. */
  private operand(): Operand {
    const first = this.primary();
    if (this.peek() !== '.') return first;
    const parts = [first];
    while (this.peek() === '.') {
      this.next();
      parts.push(this.primary());
    }
    const keyType: KeyType[] = [];
    for (const p of parts) {
      if (!p.keyType) fail(`${p.text} cannot be part of a concatenation`);
      keyType.push(...p.keyType);
    }
    return {
      text: parts.map((p) => p.text).join(' . '),
      build: (v) => expr.concat(parts.map((p) => p.build(v))),
      keyType,
    };
  }

  private primary(): Operand {
    const w = this.next();
    switch (w) {
      case '{{family}}': {
        this.use('family');
        const field = this.next();
        if (field === 'saddr')
          return { text: '{{family}} saddr', build: (v) => expr.saddr(v.family), keyType: ['addr'], address: true };
        if (field === 'daddr')
          return { text: '{{family}} daddr', build: (v) => expr.daddr(v.family), keyType: ['addr'], address: true };
        return fail(`expected saddr or daddr after {{family}}, got ${this.describe(field)}`);
      }
      case 'ip':
      case 'ip6':
        return fail(`write "{{family}} ${this.peek() ?? 'daddr'}", not "${w}": the template serves both families`);
      case 'meta': {
        const key = this.next();
        if (key === 'l4proto')
          return { text: 'meta l4proto', build: constant(expr.l4proto()), keyType: ['inet_proto'] };
        if (key === 'mark') {
          this.expect('&', 'meta mark');
          const mask = this.number();
          return { text: 'meta mark & N', build: (v) => expr.markAnd(mask(v)), numeric: true };
        }
        return fail(`expected l4proto or mark after meta, got ${this.describe(key)}`);
      }
      case 'th':
        this.expect('dport', 'th');
        return { text: 'th dport', build: constant(expr.dport()), keyType: ['inet_service'] };
      case 'ct': {
        const key = this.next();
        if (key === 'state') return { text: 'ct state', build: constant(expr.ctState()), keywords: ['new'] };
        if (key === 'status') return { text: 'ct status', build: constant(expr.ctStatus()), keywords: ['dnat'] };
        return fail(`expected state or status after ct, got ${this.describe(key)}`);
      }
      case 'fib': {
        const which = this.next();
        if (which !== 'saddr' && which !== 'daddr')
          fail(`expected saddr or daddr after fib, got ${this.describe(which)}`);
        this.expect('type', `fib ${which}`);
        return { text: `fib ${which} type`, build: constant(expr.fibType(which)), keywords: ['local'] };
      }
      default:
        return fail(`unrecognised statement at ${this.describe(w)}`);
    }
  }

  /** The right-hand side of a match. */
  private value(left: Operand): Build<Value> {
    const w = this.peek();
    if (w === undefined) fail(`expected a value after ${left.text}`);
    if (w.startsWith('@')) return constant(this.setRef(left, false));
    if (left.numeric) {
      const n = this.number();
      return (v) => value.number(n(v));
    }
    this.next();
    if (w === '{{loopback}}') {
      if (!left.address) fail(`{{loopback}} compares with an address, not ${left.text}`);
      this.use('loopback');
      return (v) => cidrValue(v.family, v.loopback);
    }
    const keyword = left.keywords?.find((k) => k === w);
    if (keyword) return constant(value.keyword(keyword));
    const expected = left.keywords ? left.keywords.join(' or ') : left.keyType ? 'a @set' : 'a value';
    return fail(`${left.text} compares with ${expected}, not ${JSON.stringify(w)}`);
  }

  private setRef(left: Operand, map: boolean): Value {
    const w = this.next();
    if (!w?.startsWith('@')) fail(`expected @${map ? 'map' : 'set'} after ${left.text}, got ${this.describe(w)}`);
    if (!left.keyType) fail(`${left.text} cannot be looked up in a ${map ? 'map' : 'set'}`);
    const name = w.slice(1);
    const ref = value.setRef(name);
    this.setRefs.push({ line: this.line, name, map, keyType: left.keyType });
    return ref;
  }

  /** {{mark}} or a literal number (decimal or 0x hex), checked as a 32-bit mark. */
  private number(): Build<number> {
    const w = this.next();
    if (w === '{{mark}}') {
      this.use('mark');
      return (v) => v.mark;
    }
    if (w === undefined || !/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(w))
      fail(`expected {{mark}} or a number, got ${this.describe(w)}`);
    const n = Number(w);
    value.hex(n);
    return constant(n);
  }
}
