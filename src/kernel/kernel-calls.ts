/**
 * @module kernel/kernel-calls
 * Kernel reads done in-process over netlink instead of through a tool, by name: the spawner's
 * child serves them in the node's network namespace for the daemon (`Spawner.call`), and one-shot
 * commands, already in that namespace, call them directly. Each is loaded on first use.
 */
const CALLS: Record<string, () => Promise<(args: never) => unknown>> = {
  /** nftables mode's table, as backends/nftables/kernel/netlink-dump.ts reads it. */
  readNftTable: async () => (await import('../backends/nftables/kernel/netlink-dump.ts')).dumpTable,
};

export async function runKernelCall<T>(name: string, args: unknown): Promise<T> {
  const load = CALLS[name];
  if (!load) throw new Error(`no such kernel call: ${name}`);
  const fn = (await load()) as (a: unknown) => T | Promise<T>;
  return await fn(args);
}
