/**
 * @module proxy/desired
 * The pure middle of every one-shot sync and dump, whatever the mode: cluster snapshot +
 * configuration → the node-local state of each IP family. No I/O, no rendering.
 */
import type { ProxyConfig } from '../config/proxy-config.ts';
import type { ClusterSnapshot, Family } from '../model/cluster.ts';
import { buildNodeState } from '../model/build-node-state.ts';
import type { NodeState } from '../model/node-state.ts';

export const FAMILIES: readonly Family[] = ['ipv4', 'ipv6'];

export function nodeStates(snapshot: ClusterSnapshot, config: ProxyConfig): NodeState[] {
  return FAMILIES.map((family) => buildNodeState(snapshot, family, config));
}
