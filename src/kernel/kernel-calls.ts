/**
 * @module kernel/kernel-calls
 * Kernel reads and writes done in-process over netlink instead of through a tool, by name: the
 * spawner's child serves them in the node's network namespace for the daemon (`Spawner.call`),
 * and one-shot commands, already in that namespace, call them directly. Each is loaded on first
 * use; an answer is plain JSON.
 */
import type { Ctnetlink } from './ctnetlink.ts';

/** Runs a named call where the kernel is: `Spawner.call` for the daemon, `runKernelCall` in a one-shot command. */
export type KernelCall = <T>(name: string, args: unknown) => Promise<T>;

/** This process's ctnetlink handle, opened on first use (kernel/ctnetlink.ts), or why it cannot be. */
let conntrack: Promise<Ctnetlink | string> | undefined;

function openedCtnetlink(): Promise<Ctnetlink | string> {
  conntrack ??= import('./ctnetlink.ts').then(
    (m) => {
      try {
        return m.openCtnetlink();
      } catch (e) {
        return e instanceof Error ? e.message : String(e);
      }
    },
    (e: unknown) => `ctnetlink could not be loaded: ${e instanceof Error ? e.message : String(e)}`,
  );
  return conntrack;
}

async function ctnetlink(): Promise<Ctnetlink> {
  const ct = await openedCtnetlink();
  if (typeof ct === 'string') throw new Error(ct);
  return ct;
}

const CALLS: Record<string, () => Promise<(args: never) => unknown>> = {
  /** nftables mode's table, as backends/nftables/kernel/netlink-dump.ts reads it. */
  readNftTable: async () => (await import('../backends/nftables/kernel/netlink-dump.ts')).dumpTable,
  /** Elements added to sets of a table no packet reaches yet, as backends/nftables/kernel/netlink-elements.ts writes them. */
  loadNftElements: async () => (await import('../backends/nftables/kernel/netlink-elements.ts')).loadElements,
  /** The nftables ruleset generation (bumped by every commit), as netlink-dump.ts reads it. */
  nftGeneration: async () => (await import('../backends/nftables/kernel/netlink-dump.ts')).nftGeneration,
  /** Whether ctnetlink can be used here: null, or why not. */
  conntrackOpen: async () => async () => {
    const ct = await openedCtnetlink();
    return typeof ct === 'string' ? ct : null;
  },
  /** A family's conntrack entries of one protocol, with the kernel's ids (arguments checked by ctnetlink.ts). */
  conntrackList:
    async () => async (a: { family: Parameters<Ctnetlink['list']>[0]; protocol: Parameters<Ctnetlink['list']>[1] }) =>
      (await ctnetlink()).list(a.family, a.protocol),
  /** Deletes listed entries by exact tuple and id (each validated by ctnetlink.ts before encoding). */
  conntrackDestroy: async () => async (a: { entries: Parameters<Ctnetlink['destroy']>[0] }) => {
    if (!Array.isArray(a?.entries)) throw new Error('conntrackDestroy without entries');
    return (await ctnetlink()).destroy(a.entries);
  },
};

export async function runKernelCall<T>(name: string, args: unknown): Promise<T> {
  const load = CALLS[name];
  if (!load) throw new Error(`no such kernel call: ${name}`);
  const fn = (await load()) as (a: unknown) => T | Promise<T>;
  return await fn(args);
}
