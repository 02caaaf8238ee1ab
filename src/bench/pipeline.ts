/**
 * @module bench/pipeline
 * kproxy's cold sync, minus the kernel: raw objects → `buildSnapshot` → `desiredState` (model +
 * render) → the create transaction (`planTransaction` against an empty kernel, as
 * `NftablesApplier.sync` plans it) → `transactionText`. Each step timed on its own.
 */
import { loadProxyConfig } from '../config/load.ts';
import type { IptablesFlavor, ProxyConfig } from '../config/proxy-config.ts';
import { planTransaction } from '../backends/nftables/render/diff.ts';
import { isDynamic, transactionText } from '../backends/nftables/render/ruleset.ts';
import type { Ruleset } from '../backends/nftables/render/ruleset.ts';
import type { Fragment } from '../backends/nftables/render/syntax.ts';
import { buildSnapshot } from '../source/normalize.ts';
import { nodeStates } from '../proxy/desired.ts';
import { renderFamilies, type RenderedFamilies } from '../backends/nftables/render/layout.ts';
import { BENCH_CLUSTER_CIDR, BENCH_NODE } from './cluster-gen.ts';

/** The proxy modes the bench compares (`--modes`). */
export const BENCH_MODES = ['nftables', 'iptables'] as const;
export type BenchMode = (typeof BENCH_MODES)[number];
/** What `kproxy sync` can be timed in: the host's modes, and IPVS inside the IPVS VM (scenario `ipvs`). */
export type SyncMode = BenchMode | 'ipvs';

export const IPTABLES_FLAVORS: readonly IptablesFlavor[] = ['auto', 'nft', 'legacy'];

/**
 * kproxy's flags in the bench, for the CLI and for benchConfig alike: the mode, this node, the pod
 * network as cluster CIDR; in iptables mode the flavor (`auto`: kproxy's own choice, iptables-nft
 * in a fresh namespace).
 */
export function benchFlags(mode: SyncMode, flavor: IptablesFlavor = 'auto'): string[] {
  return [
    '--proxy-mode',
    mode,
    '--hostname-override',
    BENCH_NODE,
    '--cluster-cidr',
    BENCH_CLUSTER_CIDR,
    ...(mode === 'iptables' ? ['--iptables-flavor', flavor] : []),
  ];
}

/** The configuration kproxy runs with in the bench (nftables unless told). */
export function benchConfig(mode: BenchMode = 'nftables', flavor: IptablesFlavor = 'auto'): ProxyConfig {
  return loadProxyConfig({
    argv: benchFlags(mode, flavor),
    hostname: BENCH_NODE,
    readFile: () => {
      throw new Error('no config file in the bench');
    },
    commandFlags: [],
  }).config;
}

export interface RulesetCounts {
  readonly servicePorts: number;
  readonly chains: number;
  readonly rules: number;
  /** Named sets and maps. */
  readonly sets: number;
  readonly elements: number;
}

export interface PipelineTimings {
  readonly normalizeMs: number;
  /** `desiredState`: buildNodeState + renderNftables for both families. */
  readonly modelRenderMs: number;
  /** planTransaction (create) + transactionText. */
  readonly txBuildMs: number;
}

export interface PipelineRun {
  readonly desired: RenderedFamilies;
  readonly rulesets: readonly Ruleset[];
  readonly commands: readonly Fragment[];
  readonly text: string;
  readonly timings: PipelineTimings;
  readonly counts: RulesetCounts;
  readonly problems: number;
}

export function countRuleset(desired: RenderedFamilies): RulesetCounts {
  let chains = 0;
  let rules = 0;
  let sets = 0;
  let elements = 0;
  let servicePorts = 0;
  for (const f of desired.families) {
    servicePorts += f.state.servicePorts.length;
    chains += f.ruleset.chains.length;
    for (const c of f.ruleset.chains) rules += c.rules.length;
    sets += f.ruleset.sets.length;
    for (const s of f.ruleset.sets) if (!isDynamic(s.spec)) elements += s.elements.length;
  }
  return { servicePorts, chains, rules, sets, elements };
}

export function runPipeline(objects: unknown[], config: ProxyConfig): PipelineRun {
  const t0 = performance.now();
  const { snapshot, problems } = buildSnapshot(objects, config.nodeName);
  const t1 = performance.now();
  const desired = renderFamilies(nodeStates(snapshot, config));
  const t2 = performance.now();
  const rulesets = desired.families.map((f) => f.ruleset);
  const commands = rulesets.flatMap((rs) => planTransaction(rs, undefined).commands);
  const text = transactionText(commands);
  const t3 = performance.now();
  return {
    desired,
    rulesets,
    commands,
    text,
    timings: { normalizeMs: t1 - t0, modelRenderMs: t2 - t1, txBuildMs: t3 - t2 },
    counts: countRuleset(desired),
    problems: problems.length + desired.problems.length,
  };
}
