/**
 * @module bench/scenario
 * What one measurement module looks like. A scenario gets the options and the results of the
 * scenarios that ran before it, and returns a printable table plus JSON-able data. To add a
 * measurement: write `scenarios/<name>.ts` exporting a `Scenario`, list it in `scenarios/index.ts`.
 */
import type { ClusterShape, ClusterSize } from './cluster-gen.ts';
import type { IptablesFlavor } from '../config/proxy-config.ts';
import type { BenchMode } from './pipeline.ts';

export interface BenchOptions {
  readonly sizes: readonly ClusterSize[];
  readonly shape: ClusterShape;
  /** Proxy modes the mode-aware scenarios (modes, incremental, first-packet) measure, in this order. */
  readonly modes: readonly BenchMode[];
  /** Which iptables kproxy uses in iptables mode (`auto`: its own detection, iptables-nft in a fresh namespace). */
  readonly iptablesFlavor: IptablesFlavor;
  /** Upstream-layout loads are skipped above this many Services. */
  readonly upstreamMaxServices: number;
  /** Per `nft -f` load of the upstream layout. */
  readonly upstreamTimeoutMs: number;
  /** Per `nft -f` load of kproxy's ruleset, per `kproxy sync` process, per daemon start. */
  readonly kproxyTimeoutMs: number;
  /**
   * Service counts of the first-packet latency measurement (each with the first of
   * `latencyEndpoints` endpoints); the other endpoint counts are measured at the smallest count.
   */
  readonly latencyServices: readonly number[];
  readonly latencyEndpoints: readonly number[];
  /** Sizes of the `ipvs` scenario (inside the emulated IPVS VM: keep them small). */
  readonly ipvsSizes: readonly string[];
  readonly connects: number;
  /** Incremental syncs measured per kind of change (endpoint, add, delete) and size. */
  readonly changes: number;
  /** kill -9 + restarts of `kproxy run` per size and mode (the `run` scenario). */
  readonly restarts: number;
  /** Scenario names to run (in registry order). */
  readonly scenarios: readonly string[];
  readonly keepFiles: boolean;
}

export interface Table {
  readonly columns: readonly string[];
  readonly rows: readonly (readonly string[])[];
}

export interface ScenarioResult {
  readonly title: string;
  readonly tables: readonly Table[];
  readonly notes: readonly string[];
  /** Everything measured, for the JSON file. */
  readonly data: unknown;
}

export interface BenchContext {
  readonly options: BenchOptions;
  /** A temporary directory for transaction files, removed at the end (unless --keep-files). */
  readonly workDir: string;
  /** Results of the scenarios that already ran, by name. */
  readonly results: ReadonlyMap<string, ScenarioResult>;
  log(message: string): void;
}

export interface Scenario {
  readonly name: string;
  readonly description: string;
  run(ctx: BenchContext): Promise<ScenarioResult>;
}
