/**
 * @module kernel/conntrack
 * Lists and deletes conntrack entries, and runs the stale-flow cleanup planned by
 * `model/conntrack-plan.ts` after a sync. Two ways to the kernel:
 *  - a `ConntrackTable` (the daemon's ctnetlink channel, `ctnetlink-client.ts`): listings carry the
 *    kernel's id of each entry, and the stale entries are deleted one by one by exact tuple and id
 *    (one hash lookup each, and never an entry created since the listing);
 *  - the `conntrack` tool (conntrack-tools) through an injected command runner (tests fake it or run
 *    it inside a network namespace): deletions are filters (`conntrack -D --orig-dst … --reply-src
 *    …`), each of which walks the whole conntrack table. argv is always an array built from
 *    validated addresses and ports, never a shell string.
 * The table is used when given and working; the tool otherwise, and whenever a table request fails.
 */
import type { Exec } from './exec.ts';
import type { Family } from '../model/cluster.ts';
import {
  planConntrackCleanup,
  type ConntrackCleanupInput,
  type ConntrackDeletion,
  type ConntrackEntry,
  type ConntrackProtocol,
  type ConntrackTuple,
  type StaleReason,
} from '../model/conntrack-plan.ts';
import { parseIp } from '../model/ip.ts';
import { appendAll } from '../util/arrays.ts';

export class ConntrackError extends Error {
  override readonly name = 'ConntrackError';
}

const PROTO_NAME: Record<ConntrackProtocol, string> = { UDP: 'udp', SCTP: 'sctp' };

export interface ParsedEntries {
  readonly entries: ConntrackEntry[];
  /** Non-empty lines that were not a parseable entry of the requested family and protocol. */
  readonly unparsed: number;
}

/**
 * Parses `conntrack -L` output, default or `-o extended`. An entry line names its protocol, then
 * `src= dst= sport= dport=` twice: the original direction first, the reply direction second.
 */
export function parseConntrackList(text: string, family: Family, protocol: ConntrackProtocol): ParsedEntries {
  const entries: ConntrackEntry[] = [];
  let unparsed = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const entry = parseLine(line, family, protocol);
    if (entry) entries.push(entry);
    else unparsed++;
  }
  return { entries, unparsed };
}

function parseLine(line: string, family: Family, protocol: ConntrackProtocol): ConntrackEntry | undefined {
  const tokens = line.split(/\s+/);
  // Extended output starts with the family ("ipv4 2 udp 17 ..."); default output with the protocol.
  const protoAt = tokens[0] === 'ipv4' || tokens[0] === 'ipv6' ? 2 : 0;
  if (protoAt === 2 && tokens[0] !== family) return undefined;
  if (tokens[protoAt] !== PROTO_NAME[protocol]) return undefined;
  const tuples: Partial<Record<keyof ConntrackTuple, string>>[] = [];
  let current: Partial<Record<keyof ConntrackTuple, string>> = {};
  for (const token of tokens) {
    const eq = token.indexOf('=');
    if (eq <= 0) continue;
    const key = token.slice(0, eq);
    if (key !== 'src' && key !== 'dst' && key !== 'sport' && key !== 'dport') continue;
    // A repeated key starts the next direction.
    if (current[key] !== undefined) {
      tuples.push(current);
      current = {};
    }
    current[key] = token.slice(eq + 1);
  }
  tuples.push(current);
  if (tuples.length !== 2) return undefined;
  const original = toTuple(tuples[0], family);
  const reply = toTuple(tuples[1], family);
  if (!original || !reply) return undefined;
  return { family, protocol, original, reply };
}

function toTuple(
  t: Partial<Record<keyof ConntrackTuple, string>> | undefined,
  family: Family,
): ConntrackTuple | undefined {
  if (!t?.src || !t.dst || !t.sport || !t.dport) return undefined;
  const src = parseIp(t.src);
  const dst = parseIp(t.dst);
  const sport = parsePort(t.sport);
  const dport = parsePort(t.dport);
  if (!src || !dst || src.family !== family || dst.family !== family) return undefined;
  if (sport === undefined || dport === undefined) return undefined;
  return { src: src.text, dst: dst.text, sport, dport };
}

function parsePort(s: string): number | undefined {
  if (!/^\d{1,5}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= 65535 ? n : undefined;
}

/** `conntrack -L` for one family and protocol. */
export async function listConntrackEntries(
  run: Exec,
  family: Family,
  protocol: ConntrackProtocol = 'UDP',
): Promise<ParsedEntries> {
  const r = await run('conntrack', ['-L', '-f', family, '-p', PROTO_NAME[protocol]]);
  if (r.exitCode !== 0) {
    throw new ConntrackError(
      `conntrack -L -f ${family} -p ${PROTO_NAME[protocol]} exited ${r.exitCode}: ${r.stderr.trim()}`,
    );
  }
  return parseConntrackList(r.stdout, family, protocol);
}

/** The argv deleting every entry that matches a deletion filter. Throws on an invalid field. */
export function deletionArgs(d: ConntrackDeletion): string[] {
  const origDst = parseIp(d.origDst);
  const replySrc = parseIp(d.replySrc);
  if (!origDst || origDst.family !== d.family || !replySrc || replySrc.family !== d.family) {
    throw new ConntrackError(`invalid conntrack deletion addresses ${d.origDst} / ${d.replySrc} for ${d.family}`);
  }
  for (const port of [d.origDport, d.replySport]) {
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConntrackError(`invalid port ${port}`);
  }
  return [
    '-D',
    '-f',
    d.family,
    '-p',
    PROTO_NAME[d.protocol],
    '--orig-dst',
    origDst.text,
    '--dport',
    String(d.origDport),
    '--reply-src',
    replySrc.text,
    '--reply-port-src',
    String(d.replySport),
  ];
}

const DELETED = /(\d+) flow entries have been deleted/;

/**
 * Runs one deletion; resolves with the number of entries the kernel removed. Nothing left to delete
 * (the flow expired meanwhile; conntrack exits 1 then) is success with 0.
 */
export async function deleteConntrackEntries(run: Exec, d: ConntrackDeletion): Promise<number> {
  const args = deletionArgs(d);
  const r = await run('conntrack', args);
  const m = DELETED.exec(r.stderr);
  const count = m?.[1] !== undefined ? Number(m[1]) : undefined;
  if (r.exitCode === 0) return count ?? 0;
  if (count === 0) return 0;
  throw new ConntrackError(`conntrack ${args.join(' ')} exited ${r.exitCode}: ${r.stderr.trim()}`);
}

/** A persistent channel to the conntrack table that can delete an entry by its exact identity. */
export interface ConntrackTable {
  /** Whether requests can be served now (false: the channel is unavailable; use the tool). Default true. */
  available?(): boolean;
  /** Every entry of the family and protocol, each with the kernel's id. */
  list(family: Family, protocol: ConntrackProtocol): Promise<ParsedEntries>;
  /**
   * Deletes exactly these entries, by original tuple and (when listed with one) the kernel's id:
   * an entry that expired and was created again since the listing is left alone (`missing`).
   */
  destroy(
    entries: readonly ConntrackEntry[],
  ): Promise<{ readonly deleted: number; readonly missing: number; readonly errors: readonly string[] }>;
}

export interface ConntrackCleanupOptions extends ConntrackCleanupInput {
  /** At most this many `conntrack -D` runs per call; the rest wait for the next sync. Default 1000. */
  readonly maxDeletions?: number;
  /** Deletions run in parallel, at most this many at a time. Default 4. */
  readonly concurrency?: number;
  /** Runs the deletions (e.g. through a persistent channel, `kernel/conntrack-channel.ts`); default: `run`. */
  readonly deleteWith?: Exec;
  /** Lists and deletes by exact tuple through this table when it works (`run` otherwise). */
  readonly table?: ConntrackTable;
}

/** What a listing said and what to delete, before any deletion ran. */
export interface ConntrackCleanupPlanned {
  readonly family: Family;
  /** Entries listed, all protocols. */
  readonly listed: number;
  /** Output lines that could not be parsed. */
  readonly unparsed: number;
  /** Stale entries found, by reason. */
  readonly stale: Readonly<Record<StaleReason, number>>;
  readonly deletions: readonly ConntrackDeletion[];
  /** The stale entries themselves, when listed through a `ConntrackTable` (with the kernel's ids). */
  readonly exact?: readonly ConntrackEntry[];
}

export interface ConntrackCleanupResult {
  readonly family: Family;
  /** Entries listed, all protocols. */
  readonly listed: number;
  /** Output lines that could not be parsed. */
  readonly unparsed: number;
  /** Stale entries found, by reason. */
  readonly stale: Readonly<Record<StaleReason, number>>;
  /** `conntrack -D` runs made (or entries deleted by exact tuple), and how many failed. */
  readonly deletions: number;
  readonly failedDeletions: number;
  /** Deletion filters not run because of `maxDeletions`. */
  readonly deferred: number;
  /** Entries the kernel reported deleted. */
  readonly deleted: number;
  /** One message per failure, for logging; the cleanup never throws for a failed deletion. */
  readonly errors: readonly string[];
}

/**
 * Lists the family's entries and decides which are stale under `input.state`, deleting nothing.
 * The listing may be taken before the rules of `input.state` are committed (the proxier lists while
 * the commit runs and deletes right after it): an entry judged stale against the new state is stale
 * whenever it was listed. Throws only when listing fails.
 */
export async function planStaleConntrack(
  run: Exec,
  input: ConntrackCleanupInput,
  table?: ConntrackTable,
): Promise<ConntrackCleanupPlanned> {
  const family = input.state.family;
  const protocols = input.protocols ?? ['UDP'];
  let exact = table !== undefined;
  const list = async (protocol: ConntrackProtocol): Promise<ParsedEntries> => {
    if (table) {
      try {
        return await table.list(family, protocol);
      } catch {
        // The channel is gone or unavailable: the tool lists instead, and deletes by filter.
        exact = false;
      }
    }
    return listConntrackEntries(run, family, protocol);
  };
  const lists = await Promise.all(protocols.map(list));
  const entries: ConntrackEntry[] = [];
  let unparsed = 0;
  for (const listed of lists) {
    appendAll(entries, listed.entries);
    unparsed += listed.unparsed;
  }
  const plan = planConntrackCleanup(entries, { ...input, protocols });
  const stale: Record<StaleReason, number> = {
    'endpoint-gone': 0,
    'no-endpoints': 0,
    'not-dnated': 0,
    'service-gone': 0,
  };
  for (const s of plan.stale) stale[s.reason]++;
  return {
    family,
    listed: entries.length,
    unparsed,
    stale,
    deletions: plan.deletions,
    ...(exact ? { exact: plan.stale.map((s) => s.entry) } : {}),
  };
}

/**
 * Runs planned deletions: by exact tuple through `options.table` when the plan listed through one,
 * else (or when that fails) as filters through `run`, at most `concurrency` at a time. Never throws
 * for a failed deletion.
 */
export async function runConntrackDeletions(
  run: Exec,
  planned: ConntrackCleanupPlanned,
  options: { readonly maxDeletions?: number; readonly concurrency?: number; readonly table?: ConntrackTable } = {},
): Promise<ConntrackCleanupResult> {
  if (options.table && planned.exact) {
    try {
      const r = await options.table.destroy(planned.exact);
      return {
        family: planned.family,
        listed: planned.listed,
        unparsed: planned.unparsed,
        stale: planned.stale,
        deletions: planned.exact.length,
        failedDeletions: r.errors.length,
        deferred: 0,
        deleted: r.deleted,
        errors: r.errors,
      };
    } catch {
      // The channel failed: the same plan's filters, through the tool.
    }
  }
  const max = Math.max(0, options.maxDeletions ?? 1000);
  const todo = planned.deletions.slice(0, max);
  const errors: string[] = [];
  let deleted = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let d = todo[next++]; d !== undefined; d = todo[next++]) {
      try {
        // Not `deleted += await ...`: that reads `deleted` before the await and loses concurrent updates.
        const n = await deleteConntrackEntries(run, d);
        deleted += n;
      } catch (err) {
        errors.push(err instanceof Error ? err.message : String(err));
      }
    }
  };
  const workers = Math.max(1, Math.min(options.concurrency ?? 4, todo.length));
  await Promise.all(Array.from({ length: workers }, worker));
  return {
    family: planned.family,
    listed: planned.listed,
    unparsed: planned.unparsed,
    stale: planned.stale,
    deletions: todo.length,
    failedDeletions: errors.length,
    deferred: planned.deletions.length - todo.length,
    deleted,
    errors,
  };
}

/**
 * Lists the family's entries, plans, deletes. Call after the rules of `input.state` are in place.
 * Throws only when listing fails (nothing is deleted then).
 */
export async function cleanupStaleConntrack(
  run: Exec,
  options: ConntrackCleanupOptions,
): Promise<ConntrackCleanupResult> {
  const table = options.table && (options.table.available?.() ?? true) ? options.table : undefined;
  const planned = await planStaleConntrack(run, options, table);
  return runConntrackDeletions(options.deleteWith ?? run, planned, { ...options, ...(table ? { table } : {}) });
}
