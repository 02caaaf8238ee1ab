/**
 * @module kernel/ctnetlink-client
 * The daemon's persistent channel to the kernel's conntrack table: ctnetlink (`ctnetlink.ts`) in
 * the process where the kernel is — the spawner's child, in the node's network namespace
 * (`Spawner.call`, kernel-calls.ts). It lists a family's entries (with the kernel's ids) and
 * deletes entries by exact tuple and id, each an O(1) hash lookup in the kernel (~0.1–0.5 ms)
 * instead of a `conntrack -D` process that walks the whole conntrack table.
 *
 * `ready` says whether ctnetlink could be opened there; when it could not (no libmnl.so.0, which
 * the conntrack package brings), every request fails with `CtnetlinkUnavailable` and the caller
 * keeps using the `conntrack` tool. A request that fails otherwise (the child died with it) fails
 * the same way, so that pass falls back; the next request goes to the child the spawner restarts.
 */
import type { Family } from '../model/cluster.ts';
import type { ConntrackEntry, ConntrackProtocol } from '../model/conntrack-plan.ts';
import type { ConntrackTable, ParsedEntries } from './conntrack.ts';
import type { DestroyResult } from './ctnetlink.ts';
import type { KernelCall } from './kernel-calls.ts';

export class CtnetlinkUnavailable extends Error {
  override readonly name = 'CtnetlinkUnavailable';
}

export interface CtnetlinkClient extends ConntrackTable {
  /** Resolves once ctnetlink was tried where the kernel is: undefined when it works, else why not. */
  readonly ready: Promise<string | undefined>;
  /** Whether requests can be served (ctnetlink opened, the channel not closed). */
  available(): boolean;
  /** Later requests fail with CtnetlinkUnavailable. */
  close(): void;
}

export function ctnetlinkOver(call: KernelCall): CtnetlinkClient {
  let unavailable: string | undefined;
  let closed = false;
  const ready = call<string | null>('conntrackOpen', null).then(
    (why) => why ?? undefined,
    (e: unknown) => (e instanceof Error ? e.message : String(e)),
  );
  void ready.then((why) => {
    // A missing library does not mend itself: the caller falls back for good.
    unavailable = why;
  });

  const request = async <T>(name: string, args: unknown): Promise<T> => {
    const why = closed ? 'ctnetlink channel closed' : await ready;
    if (why !== undefined) throw new CtnetlinkUnavailable(why);
    try {
      return await call<T>(name, args);
    } catch (e) {
      throw new CtnetlinkUnavailable(e instanceof Error ? e.message : String(e));
    }
  };

  return {
    ready,
    available: () => !closed && unavailable === undefined,
    async list(family: Family, protocol: ConntrackProtocol): Promise<ParsedEntries> {
      return { entries: await request<ConntrackEntry[]>('conntrackList', { family, protocol }), unparsed: 0 };
    },
    async destroy(entries: readonly ConntrackEntry[]): Promise<DestroyResult> {
      if (entries.length === 0) return { deleted: 0, missing: 0, errors: [] };
      return request<DestroyResult>('conntrackDestroy', { entries });
    },
    close() {
      closed = true;
    },
  };
}
