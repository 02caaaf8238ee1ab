/**
 * @module sync/desired
 * The pure middle of every sync and dump: cluster snapshot + configuration → the node-local state
 * and the desired nftables ruleset of each IP family. No I/O.
 */
import type { ProxyConfig } from '../config/proxy-config.ts';
import type { ClusterSnapshot, Family } from '../model/cluster.ts';
import { buildNodeState } from '../model/build-node-state.ts';
import type { NodeState } from '../model/node-state.ts';
import { renderNftables } from '../render/nftables/layout.ts';
import type { Ruleset } from '../render/nftables/ruleset.ts';
import type { Problem } from '../util/problems.ts';
import { appendAll } from '../util/arrays.ts';

export const FAMILIES: readonly Family[] = ['ipv4', 'ipv6'];

export interface FamilyDesired {
  readonly state: NodeState;
  readonly ruleset: Ruleset;
}

export interface Desired {
  readonly families: readonly FamilyDesired[];
  readonly problems: readonly Problem[];
}

export function desiredState(snapshot: ClusterSnapshot, config: ProxyConfig): Desired {
  const problems: Problem[] = [];
  const families = FAMILIES.map((family) => {
    const state = buildNodeState(snapshot, family, config);
    const rendered = renderNftables(state);
    appendAll(problems, rendered.problems);
    return { state, ruleset: rendered.ruleset };
  });
  return { families, problems };
}
