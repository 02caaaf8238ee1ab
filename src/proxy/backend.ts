/**
 * @module proxy/backend
 * The seam between the one reconciler and the kernel's rule engines (docs/adr/0005). A mode is a
 * folder under `src/backends/<mode>/` that exports a {@link ProxyModeDefinition}: a pure dump
 * (node state → the text an operator audits) and a factory for its {@link ProxyBackend}, which
 * renders, diffs against what the kernel holds and applies. The reconciler, the model and the
 * sources know nothing of any mode; a backend never re-derives a policy decision the model took.
 */
import type { ProxyConfig, ProxyMode } from '../config/proxy-config.ts';
import type { Family } from '../model/cluster.ts';
import type { NodeState, ServicePortState } from '../model/node-state.ts';
import type { Exec } from '../kernel/exec.ts';
import type { KernelCall } from '../kernel/kernel-calls.ts';
import type { Logger } from '../util/log.ts';
import type { Problem } from '../util/problems.ts';

/** Everything of a family's NodeState but its service ports: what every port's rules depend on. */
export type NodeContext = Omit<NodeState, 'servicePorts'>;

/** One family's desired state, as the reconciler keeps it between syncs. */
export interface FamilyState {
  readonly context: NodeContext;
  /** Every Service's ports of this family by service key (`namespace/name`); Services without any are absent. */
  readonly services: ReadonlyMap<string, readonly ServicePortState[]>;
}

export interface SyncRequest {
  /** Both families, IPv4 first. */
  readonly families: readonly FamilyState[];
  /**
   * A full sync re-renders everything and compares with what the kernel really holds (adopting it
   * at start, repairing drift); a partial one re-renders only `changed` and relies on what this
   * backend last committed for the rest. A backend with nothing committed always syncs in full.
   */
  readonly full: boolean;
  /** The Services (keys) whose ports changed since the last sync this backend completed. */
  readonly changed: ReadonlySet<string>;
}

export interface SyncReport {
  /** What the backend did; a backend may turn a partial request into a full sync (it lost track). */
  readonly kind: 'full' | 'partial';
  /** Changes written to the kernel (commands, restore lines, IPVS operations); 0: it already matched. */
  readonly changes: number;
  /** A full sync found the kernel differing from what this process last committed. */
  readonly drift: boolean;
  /** Inputs the backend skipped (e.g. a frontend two Services claim); logged when they change. */
  readonly problems: readonly Problem[];
  /** Mode-specific figures for the sync's log line. */
  readonly detail?: Readonly<Record<string, unknown>>;
}

export interface ProxyBackend {
  /**
   * Brings the kernel to the desired state: one atomic apply per sync where the engine has
   * transactions. Throws when the kernel refused; then the previous rules are still in place and
   * the caller's next request must be full.
   */
  sync(request: SyncRequest): Promise<SyncReport>;
  /** True when the kernel holds exactly the desired state (the check at the end of `kproxy sync`). */
  matches(families: readonly FamilyState[]): Promise<boolean>;
  /** Removes kproxy's rules and nothing else; returns what it removed, for the log. */
  cleanup(): Promise<string[]>;
  /**
   * What differs between the kernel and the desired state, one line per difference, for a person
   * (`kproxy diff`); empty when the kernel holds exactly the desired state. Reads, never writes.
   */
  describeDrift(families: readonly FamilyState[]): Promise<string[]>;
  /**
   * Starts reading what the kernel holds ahead of the first sync, while the caches fill (the
   * daemon calls it at start); the first sync takes the reading only if the kernel is known not
   * to have changed since. Modes that cannot know that leave it out.
   */
  readKernelAhead?(): void;
  /**
   * Engines other software can flush under us (iptables): polls every `intervalMs` and calls
   * `onLost` when kproxy's rules are gone, so the reconciler forces a full sync. Returns a stop.
   */
  watchForFlush?(onLost: () => void, intervalMs: number): () => void;
}

export interface BackendDependencies {
  readonly config: ProxyConfig;
  /** Runs the mode's kernel tools (in this network namespace unless the caller wraps it). */
  readonly exec: Exec;
  readonly log: Logger;
  /**
   * Kernel reads done in-process where the kernel is (netlink), named as spawner-child.ts serves
   * them; absent: the mode reads through its tools.
   */
  readonly kernelCall?: KernelCall;
}

export interface DumpRequest {
  readonly states: readonly NodeState[];
  readonly config: ProxyConfig;
  /** One of the definition's `dumpFormats`. */
  readonly format: string;
  /** Only this family; absent: both. */
  readonly family?: Family;
}

export interface ProxyModeDefinition {
  readonly mode: ProxyMode;
  /** `kproxy dump --format` values; the first is the default. */
  readonly dumpFormats: readonly [string, ...string[]];
  /** Upstream's metric counting failed syncs in this mode (without the `kubeproxy_` prefix). */
  readonly syncFailuresMetric: { readonly name: string; readonly help: string };
  /** Pure: what `sync` would program into an empty kernel, as the mode's own input language. */
  dump(request: DumpRequest): { readonly text: string; readonly problems: readonly Problem[] };
  createBackend(deps: BackendDependencies): ProxyBackend;
}

/** Builds a NodeState from a family's state: ports in key order, as the renderers and conntrack expect. */
export function nodeStateOf(family: FamilyState): NodeState {
  const servicePorts = [...family.services.values()].flat();
  servicePorts.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { ...family.context, servicePorts };
}

/** The inverse, for one-shot callers (CLI, tests) that start from a whole NodeState. */
export function familyStateOf(state: NodeState): FamilyState {
  const { servicePorts, ...context } = state;
  const services = new Map<string, ServicePortState[]>();
  for (const sp of servicePorts) {
    const key = `${sp.ref.namespace}/${sp.ref.name}`;
    const list = services.get(key);
    if (list) list.push(sp);
    else services.set(key, [sp]);
  }
  return { context, services };
}
