/**
 * @module backends/ipvs/render/helper-plan
 * The helper table's changes for one sync, split around the IPVS batch (pure). The helper rules
 * and the ownership record must be in place before the virtual servers they describe exist, and
 * must outlive them: so the first transaction (before the batch) adds and changes everything but
 * keeps the set elements that are going away; the second (after the batch has deleted the virtual
 * servers) removes those elements. Each is one atomic `nft -f` transaction, planned with the
 * nftables mode's planner against what the kernel holds. Interval sets (ServiceCIDRs, source
 * ranges) change in the first transaction, whole: their old and new elements may overlap.
 */
import type { Family } from '../../../model/cluster.ts';
import { parseIp } from '../../../model/ip.ts';
import { planTransaction } from '../../nftables/render/diff.ts';
import type { ListedTable } from '../../nftables/render/observed.ts';
import {
  chainFingerprint,
  createCommands,
  type Chain,
  type NftSet,
  type Ruleset,
  type SetSpec,
} from '../../nftables/render/ruleset.ts';
import {
  element,
  elementKey,
  type Element,
  type Fragment,
  value,
  type Value,
  type Verdict,
} from '../../nftables/render/syntax.ts';
import { shortCircuitChainOf } from './helper-rules.ts';
import { markOfShortCircuitChain, SET } from './names.ts';
import { keyText } from './syntax.ts';

export interface HelperPlan {
  /** Before the IPVS batch. */
  readonly before: readonly Fragment[];
  /** After it: the elements of what the batch removed. */
  readonly after: readonly Fragment[];
}

export function planHelper(desired: Ruleset, observed: ListedTable | undefined): HelperPlan {
  if (!observed) return { before: createCommands(desired), after: [] };
  const union = retaining(desired, observed);
  const before = planTransaction(union, observed).commands;
  const after = planTransaction(desired, observedOf(union)).commands;
  return { before, after };
}

/** The desired ruleset plus what the kernel holds that is going away (sets that are not intervals). */
function retaining(desired: Ruleset, observed: ListedTable): Ruleset {
  const sets: NftSet[] = desired.sets.map((set) => {
    const seen = observed.sets.get(set.spec.name);
    if (!seen || set.spec.flags.includes('interval')) return set;
    const texts = new Set(set.elements);
    const keys = new Set(set.elements.map(elementKey));
    const kept: Element[] = [];
    for (const text of seen.elements) {
      if (texts.has(text)) continue;
      const e = elementFromText(text, set.spec);
      // A map element whose key the desired state gives another verdict is replaced, not kept.
      if (e && !keys.has(elementKey(e))) kept.push(e);
    }
    return kept.length === 0 ? set : { spec: set.spec, elements: [...set.elements, ...kept] };
  });
  // Short-circuit chains the kept map elements still jump to.
  const chains: Chain[] = [...desired.chains];
  const names = new Set(chains.map((c) => c.name));
  for (const name of observed.chains.keys()) {
    const mark = markOfShortCircuitChain(name);
    if (mark !== undefined && !names.has(name)) chains.push(shortCircuitChainOf(mark));
  }
  return { ...desired, chains, sets };
}

/** What the kernel holds once `rs` is committed, as the planner reads it. */
export function observedOf(rs: Ruleset): ListedTable {
  return {
    chains: new Map(
      rs.chains.map((c) => [
        c.name,
        {
          ...(c.base ? { base: c.base } : {}),
          ruleCount: c.rules.length,
          ...(c.rules.length > 0 ? { fingerprint: chainFingerprint(c) } : {}),
        },
      ]),
    ),
    sets: new Map(rs.sets.map((s) => [s.spec.name, { spec: s.spec, elements: new Set(s.elements) }])),
  };
}

/**
 * An element as kproxy's renderer builds it, from the canonical text the nftables planner reads
 * back (`10.96.0.10 . tcp . 80 : goto reject-chain`); undefined for anything kproxy does not write.
 */
export function elementFromText(text: string, spec: SetSpec): Element | undefined {
  const [keyText_, verdictText, extra] = text.split(' : ');
  if (keyText_ === undefined || extra !== undefined || spec.verdictMap !== (verdictText !== undefined))
    return undefined;
  const parts = keyText_.split(' . ');
  if (parts.length !== spec.keyType.length) return undefined;
  const values: Value[] = [];
  for (const [i, part] of parts.entries()) {
    const v = partValue(part, spec.keyType[i] ?? '');
    if (!v) return undefined;
    values.push(v);
  }
  const key = value.concat(values);
  if (verdictText === undefined) return element.set(key);
  const verdict = verdictFromText(verdictText);
  return verdict ? element.vmap(key, verdict) : undefined;
}

function partValue(part: string, type: string): Value | undefined {
  switch (type) {
    case 'ipv4_addr':
    case 'ipv6_addr': {
      const ip = parseIp(part);
      return ip && ip.text === part && (ip.family === 'ipv4') === (type === 'ipv4_addr') ? value.ip(part) : undefined;
    }
    case 'inet_proto':
      return part === 'tcp'
        ? value.protocol('TCP')
        : part === 'udp'
          ? value.protocol('UDP')
          : part === 'sctp'
            ? value.protocol('SCTP')
            : undefined;
    case 'inet_service':
      return /^\d{1,5}$/.test(part) && Number(part) >= 1 && Number(part) <= 65535
        ? value.port(Number(part))
        : undefined;
    case 'mark':
      return /^\d{1,10}$/.test(part) && Number(part) <= 0xffffffff ? value.number(Number(part)) : undefined;
    default:
      return undefined;
  }
}

const CHAIN_NAME = /^[a-z][a-z0-9_./-]{0,127}$/;

function verdictFromText(text: string): Verdict | undefined {
  if (text === 'drop' || text === 'accept' || text === 'return') return { kind: text };
  const m = /^(goto|jump) (\S+)$/.exec(text);
  if (m && CHAIN_NAME.test(m[2] ?? '')) return { kind: m[1] as 'goto' | 'jump', chain: m[2] ?? '' };
  return undefined;
}

/**
 * What the kernel's helper table says kproxy owns: its (address, protocol, port) virtual servers
 * and its fwmark virtual servers, as keyTexts; and the marks its short-circuit map gives each
 * frontend (to keep them).
 */
export function ownershipOf(
  family: Family,
  observed: ListedTable | undefined,
): { owned: Set<string>; priorMarks: Map<string, number> } {
  const owned = new Set<string>();
  const priorMarks = new Map<string, number>();
  if (!observed) return { owned, priorMarks };
  for (const text of observed.sets.get(SET.virtualServers)?.elements ?? []) {
    const m = /^(\S+) \. (tcp|udp|sctp) \. (\d+)$/.exec(text);
    const ip = m ? parseIp(m[1] ?? '') : undefined;
    if (!m || !ip || ip.family !== family) continue;
    const protocol = (m[2] ?? '').toUpperCase() as 'TCP' | 'UDP' | 'SCTP';
    owned.add(keyText({ kind: 'address', protocol, ip: ip.text, port: Number(m[3]) }));
  }
  for (const text of observed.sets.get(SET.shortCircuitMarks)?.elements ?? []) {
    if (/^\d{1,10}$/.test(text) && Number(text) >= 1 && Number(text) <= 0xffffffff)
      owned.add(keyText({ kind: 'fwmark', family, mark: Number(text) }));
  }
  for (const text of observed.sets.get(SET.shortCircuit)?.elements ?? []) {
    const [frontend, verdict] = text.split(' : ');
    const mark = markOfShortCircuitChain(/^goto (\S+)$/.exec(verdict ?? '')?.[1] ?? '');
    if (frontend !== undefined && mark !== undefined) priorMarks.set(frontend, mark);
  }
  return { owned, priorMarks };
}
