/**
 * @module backends/iptables/render/skeleton
 * iptables mode's fixed part, from the template `rules-templates/iptables.rules` (its header
 * documents the little template language). The template is read once, validated as a whole on
 * load (an unknown placeholder, directive, table or chain, or an unbalanced section is an error
 * naming the line), and filled per family with values that syntax.ts writes; every filled rule is
 * checked to be in iptables-save's canonical form.
 */
import { readFileSync } from 'node:fs';
import type { Cidr, Family } from '../../../model/cluster.ts';
import { cidrContains } from '../../../model/ip.ts';
import { BUILTIN_CHAINS, SKELETON_CHAINS } from './names.ts';
import { checkRuleText, chainName, cidrText, markText } from './syntax.ts';
import type { IptablesContext, IptTable, JumpRule, RuleText } from './types.ts';

export const TEMPLATE_URL = new URL('../../../../rules-templates/iptables.rules', import.meta.url);

const FLAGS = [
  'IPV4',
  'IPV6',
  'LOCALHOST_NODEPORTS',
  'DROP_INVALID',
  'NODEPORTS_ALL_LOCAL',
  'NODEPORTS_SKIP_LOOPBACK',
] as const;
const VALUES = ['MASQ_MARK', 'LOOPBACK'] as const;
const LISTS = ['NODEPORT_CIDRS'] as const;
type Flag = (typeof FLAGS)[number];
type ValueName = (typeof VALUES)[number];
type ListName = (typeof LISTS)[number];

const TABLES: readonly IptTable[] = ['filter', 'nat', 'mangle'];
const SERVICE_RULES = '{{SERVICE_RULES}}';

/** The values a template is filled with. */
export interface TemplateValues {
  readonly flags: Readonly<Record<Flag, boolean>>;
  readonly values: Readonly<Record<ValueName, string>>;
  readonly lists: Readonly<Record<ListName, readonly string[]>>;
}

type Node =
  | { readonly kind: 'chain'; readonly line: number; readonly name: string }
  | { readonly kind: 'rule'; readonly line: number; readonly chain: string; readonly text: string }
  | { readonly kind: 'services'; readonly line: number; readonly chain: string }
  | { readonly kind: 'if'; readonly line: number; readonly flag: Flag; readonly when: boolean; readonly body: Node[] }
  | { readonly kind: 'each'; readonly line: number; readonly list: ListName; readonly body: Node[] };

export interface TemplateTable {
  readonly table: IptTable;
  readonly body: readonly Node[];
}

/** A parsed, validated template. */
export interface Template {
  readonly source: string;
  readonly tables: readonly TemplateTable[];
}

/** A fixed chain: its rules before and after the service ports' rules (when it takes any). */
export interface SkeletonChain {
  readonly table: IptTable;
  readonly name: string;
  readonly head: readonly RuleText[];
  readonly tail: readonly RuleText[];
  /** The template puts `{{SERVICE_RULES}}` in this chain. */
  readonly servicePorts: boolean;
}

export interface Skeleton {
  readonly chains: readonly SkeletonChain[];
  /** Jump rules from built-in chains, top first. */
  readonly jumps: readonly JumpRule[];
}

const PLACEHOLDER = /\{\{([^{}]*)\}\}/g;

/** Parses and validates template text; `source` names it in errors (`file:line: …`). */
export function parseTemplate(text: string, source: string): Template {
  const tables: TemplateTable[] = [];
  function fail(line: number, why: string): never {
    throw new Error(`${source}:${line}: ${why}`);
  }
  let table: { table: IptTable; body: Node[]; declared: Set<string>; line: number } | undefined;
  const stack: { node: Extract<Node, { body: Node[] }>; closer: string }[] = [];
  const seenTables = new Set<string>();
  const target = () => stack.at(-1)?.node.body ?? table?.body ?? [];
  const lines = text.split('\n');
  for (const [index, raw] of lines.entries()) {
    const n = index + 1;
    const line = raw.trimEnd();
    if (line.trim() === '' || line.startsWith('#')) continue;
    if (line !== line.trimStart()) fail(n, 'lines must not be indented');
    const directive = /^\{\{([#/])(\w+)(?: (\w+))?\}\}$/.exec(line);
    if (directive) {
      const [, sigil, word = '', name] = directive;
      if (!table) fail(n, `${line} outside a table`);
      if (sigil === '#') {
        if (word === 'if' || word === 'unless') {
          if (!(FLAGS as readonly string[]).includes(name ?? ''))
            fail(n, `unknown flag ${JSON.stringify(name ?? '')} (known: ${FLAGS.join(', ')})`);
          const node: Node = { kind: 'if', line: n, flag: name as Flag, when: word === 'if', body: [] };
          target().push(node);
          stack.push({ node, closer: word });
        } else if (word === 'each') {
          if (!(LISTS as readonly string[]).includes(name ?? ''))
            fail(n, `unknown list ${JSON.stringify(name ?? '')} (known: ${LISTS.join(', ')})`);
          const node: Node = { kind: 'each', line: n, list: name as ListName, body: [] };
          target().push(node);
          stack.push({ node, closer: 'each' });
        } else fail(n, `unknown directive {{#${word}}}`);
      } else {
        if (name !== undefined) fail(n, `a closing directive takes no name: ${line}`);
        const open = stack.pop();
        if (!open) fail(n, `{{/${word}}} without an open section`);
        else if (open.closer !== word)
          fail(n, `{{/${word}}} closes {{#${open.closer}}} opened at line ${open.node.line}`);
      }
      continue;
    }
    if (line.includes('{{#') || line.includes('{{/')) fail(n, 'a section directive must be alone on its line');
    if (line.startsWith('*')) {
      if (table) fail(n, `table ${line} inside table *${table.table} (opened at line ${table.line}): COMMIT first`);
      const name = line.slice(1);
      if (!(TABLES as readonly string[]).includes(name)) fail(n, `unknown table ${JSON.stringify(name)}`);
      if (seenTables.has(name)) fail(n, `table ${name} appears twice`);
      seenTables.add(name);
      table = { table: name as IptTable, body: [], declared: new Set(), line: n };
      continue;
    }
    if (!table) fail(n, `${JSON.stringify(line)} outside a table`);
    if (line === 'COMMIT') {
      if (stack.length > 0) {
        const open = stack[stack.length - 1];
        fail(n, `COMMIT inside {{#${open?.closer}}} opened at line ${open?.node.line}`);
      }
      tables.push({ table: table.table, body: table.body });
      table = undefined;
      continue;
    }
    const decl = /^:([^ ]+) - \[0:0\]$/.exec(line);
    if (decl) {
      const name = decl[1] ?? '';
      if (!SKELETON_CHAINS.has(name))
        fail(n, `chain ${name} is not one of kproxy's fixed chains (${[...SKELETON_CHAINS].join(', ')})`);
      table.declared.add(name);
      target().push({ kind: 'chain', line: n, name });
      continue;
    }
    const append = /^-A ([^ ]+) (.+)$/.exec(line);
    if (!append) fail(n, `expected "*table", ":CHAIN - [0:0]", "-A CHAIN RULE", a directive or COMMIT`);
    const chain = append[1] ?? '';
    const rest = append[2] ?? '';
    const builtin = (BUILTIN_CHAINS[table.table] as readonly string[]).includes(chain);
    if (!builtin && !table.declared.has(chain))
      fail(n, `-A ${chain}: not declared above (":${chain} - [0:0]") nor a built-in chain of ${table.table}`);
    if (rest === SERVICE_RULES) {
      if (builtin) fail(n, `${SERVICE_RULES} in built-in chain ${chain}`);
      target().push({ kind: 'services', line: n, chain });
      continue;
    }
    const inEach = stack.filter((s) => s.node.kind === 'each').map((s) => (s.node as { list: string }).list);
    for (const [, name = ''] of rest.matchAll(PLACEHOLDER)) {
      if (!(VALUES as readonly string[]).includes(name) && !inEach.includes(name))
        fail(
          n,
          (LISTS as readonly string[]).includes(name)
            ? `{{${name}}} outside {{#each ${name}}}`
            : `unknown placeholder {{${name}}} (known: ${VALUES.join(', ')})`,
        );
    }
    if (rest.replace(PLACEHOLDER, '').includes('{{') || rest.replace(PLACEHOLDER, '').includes('}}'))
      fail(n, 'unbalanced {{ }}');
    if (builtin && !/ -j KUBE-[A-Z0-9-]+$/.test(` ${rest}`))
      fail(n, `a rule in built-in chain ${chain} must be a jump to a kproxy chain`);
    target().push({ kind: 'rule', line: n, chain, text: rest });
  }
  if (stack.length > 0) {
    const open = stack[stack.length - 1];
    fail(lines.length, `{{#${open?.closer}}} opened at line ${open?.node.line} is never closed`);
  }
  if (table) fail(lines.length, `table *${table.table} opened at line ${table.line} has no COMMIT`);
  return { source, tables };
}

let cached: Template | undefined;

/** The template file, read and validated once. */
export function loadTemplate(): Template {
  if (!cached) cached = parseTemplate(readFileSync(TEMPLATE_URL, 'utf8'), 'rules-templates/iptables.rules');
  return cached;
}

/** Fills a template; every rule is checked (syntax.checkRuleText) and an error names its line. */
export function fillTemplate(template: Template, family: Family, values: TemplateValues): Skeleton {
  const chains: { table: IptTable; name: string; head: RuleText[]; tail: RuleText[]; servicePorts: boolean }[] = [];
  const jumps: JumpRule[] = [];
  for (const t of template.tables) {
    const builtin = BUILTIN_CHAINS[t.table] as readonly string[];
    const byName = new Map<string, (typeof chains)[number]>();
    const walk = (nodes: readonly Node[], item: Partial<Record<ListName, string>>) => {
      for (const node of nodes) {
        const where = `${template.source}:${node.line}`;
        switch (node.kind) {
          case 'chain': {
            if (byName.has(node.name)) throw new Error(`${where}: chain ${node.name} declared twice`);
            const c = { table: t.table, name: chainName(node.name), head: [], tail: [], servicePorts: false };
            byName.set(node.name, c);
            chains.push(c);
            break;
          }
          case 'services': {
            const c = byName.get(node.chain);
            if (!c) throw new Error(`${where}: chain ${node.chain} is not declared (its declaration is left out)`);
            if (c.servicePorts) throw new Error(`${where}: ${SERVICE_RULES} twice in ${node.chain}`);
            c.servicePorts = true;
            break;
          }
          case 'rule': {
            const text = node.text.replace(PLACEHOLDER, (_, name: string) => {
              const v = (item as Record<string, string | undefined>)[name] ?? values.values[name as ValueName];
              if (v === undefined) throw new Error(`${where}: no value for {{${name}}}`);
              return v;
            });
            try {
              checkRuleText(family, text);
            } catch (err) {
              throw new Error(`${where}: ${err instanceof Error ? err.message : String(err)}`);
            }
            if (builtin.includes(node.chain)) {
              const to = / -j ([A-Z0-9-]+)$/.exec(` ${text}`)?.[1] ?? '';
              if (!byName.has(to)) throw new Error(`${where}: jump to ${to}, which is not declared in ${t.table}`);
              jumps.push({ table: t.table, chain: node.chain, rule: text });
              break;
            }
            const c = byName.get(node.chain);
            if (!c) throw new Error(`${where}: chain ${node.chain} is not declared (its declaration is left out)`);
            (c.servicePorts ? c.tail : c.head).push(text);
            break;
          }
          case 'if':
            if (values.flags[node.flag] === node.when) walk(node.body, item);
            break;
          case 'each':
            for (const v of values.lists[node.list]) walk(node.body, { ...item, [node.list]: v });
            break;
        }
      }
    };
    walk(t.body, {});
  }
  return { chains, jumps };
}

const LOOPBACK: Record<Family, Cidr> = {
  ipv4: { family: 'ipv4', address: '127.0.0.0', prefixLength: 8 },
  ipv6: { family: 'ipv6', address: '::1', prefixLength: 128 },
};

/** The template's values for a context. */
export function templateValues(ctx: IptablesContext): TemplateValues {
  const family = ctx.family;
  const loopback = LOOPBACK[family];
  const d = ctx.nodePortDestinations;
  const cidrs = d.kind === 'cidrs' ? d.cidrs.filter((c) => c.family === family) : [];
  // Upstream: a /0 among nodePortAddresses means every local address (MatchAll).
  const allLocal = d.kind === 'allLocal' || cidrs.some((c) => c.prefixLength === 0);
  const overlapsLoopback = (c: Cidr) =>
    cidrContains(c, { family, text: loopback.address }) || cidrContains(loopback, { family, text: c.address });
  return {
    flags: {
      IPV4: family === 'ipv4',
      IPV6: family === 'ipv6',
      LOCALHOST_NODEPORTS: ctx.localhostNodePorts,
      DROP_INVALID: ctx.dropInvalid,
      NODEPORTS_ALL_LOCAL: allLocal,
      NODEPORTS_SKIP_LOOPBACK: !allLocal && !ctx.localhostNodePorts && cidrs.some(overlapsLoopback),
    },
    values: { MASQ_MARK: markText(ctx.masqueradeMark), LOOPBACK: cidrText(family, loopback) },
    lists: { NODEPORT_CIDRS: allLocal ? [] : cidrs.map((c) => cidrText(family, c)) },
  };
}

/** The fixed chains and jump rules for a context, from the template file. */
export function skeleton(ctx: IptablesContext): Skeleton {
  return fillTemplate(loadTemplate(), ctx.family, templateValues(ctx));
}
