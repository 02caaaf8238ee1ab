/**
 * @module backends/nftables/trace/events
 * `nft monitor` trace lines (nft 1.0.6 prints traces as text, also under `-j`) parsed and grouped
 * into one record per traced packet. Pure.
 *
 *   trace id 303fce90 ip kproxy-trace prerouting packet: iif "eth0" ip saddr 10.244.0.2 ip daddr … tcp dport 80 …
 *   trace id 303fce90 ip kproxy services rule ip daddr . meta l4proto . th dport vmap @service-ips (verdict goto svc-…)
 *   trace id 303fce90 ip kproxy svc-… rule meta l4proto tcp … dnat to 10.244.0.3:8080 (verdict accept)
 *   trace id 303fce90 ip kproxy filter-forward policy accept
 */
import { TRACE_TABLE } from './table.ts';

export interface TraceLine {
  readonly id: string;
  /** nft family: ip, ip6, inet, … */
  readonly family: string;
  readonly table: string;
  readonly chain: string;
  readonly kind: 'packet' | 'rule' | 'verdict' | 'policy';
  /** The packet's headers as nft prints them (`packet` lines). */
  readonly packet?: string;
  /** The rule's text (`rule` lines). */
  readonly rule?: string;
  /** `accept`, `drop`, `continue`, `jump CHAIN`, `goto CHAIN`, `return`, … */
  readonly verdict?: string;
}

const LINE =
  /^trace id ([0-9a-f]+) (\S+) (\S+) (\S+) (?:packet: (.*)|rule (.*) \(verdict ([^)]*)\)|verdict (.*)|policy (.*))$/;

/** One line of `nft monitor` output; undefined for anything but a trace line (ruleset events). */
export function parseTraceLine(text: string): TraceLine | undefined {
  const m = LINE.exec(text.trim());
  if (!m) return undefined;
  const [, id = '', family = '', table = '', chain = '', packet, rule, ruleVerdict, verdict, policy] = m;
  const base = { id, family, table, chain };
  if (packet !== undefined) return { ...base, kind: 'packet', packet: packet.trim() };
  if (rule !== undefined) return { ...base, kind: 'rule', rule, verdict: ruleVerdict ?? '' };
  if (verdict !== undefined) return { ...base, kind: 'verdict', verdict: firstVerdict(verdict) };
  return { ...base, kind: 'policy', verdict: firstVerdict(policy ?? '') };
}

/** nft follows a verdict or policy with the packet's meta data (`policy accept meta mark 0x00004000`). */
function firstVerdict(text: string): string {
  return /^(?:(?:jump|goto) \S+|\S+)/.exec(text.trim())?.[0] ?? '';
}

/**
 * Groups trace lines into packets. Every traced packet starts in the trace table's chain (that is
 * where its trace flag is set), so a `packet` line there starts a new packet even when the kernel
 * reuses a trace id; a packet is complete once no line came for it for `quietMs` (its later hooks
 * follow within microseconds), or when `flush` is called.
 */
export class TraceGrouper {
  readonly #open = new Map<string, { lines: TraceLine[]; timer: ReturnType<typeof setTimeout> }>();
  readonly #done: (lines: readonly TraceLine[]) => void;
  readonly #quietMs: number;

  constructor(done: (lines: readonly TraceLine[]) => void, quietMs = 250) {
    this.#done = done;
    this.#quietMs = quietMs;
  }

  add(line: TraceLine): void {
    const starts = line.kind === 'packet' && line.table === TRACE_TABLE;
    if (starts) this.#finish(line.id);
    const open = this.#open.get(line.id);
    // A line of a packet whose start was not seen (tracing began mid-way) is ignored.
    if (!open && !starts) return;
    const lines = open?.lines ?? [];
    if (open) clearTimeout(open.timer);
    lines.push(line);
    const timer = setTimeout(() => this.#finish(line.id), this.#quietMs);
    this.#open.set(line.id, { lines, timer });
  }

  /** Completes every open packet now. */
  flush(): void {
    for (const id of [...this.#open.keys()]) this.#finish(id);
  }

  #finish(id: string): void {
    const open = this.#open.get(id);
    if (!open) return;
    clearTimeout(open.timer);
    this.#open.delete(id);
    this.#done(open.lines);
  }
}
