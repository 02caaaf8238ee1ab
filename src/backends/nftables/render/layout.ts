/**
 * @module backends/nftables/render/layout
 * Renders one family's NodeState as kproxy's nftables table. The layout (docs/adr/0001) keeps
 * the kernel's cost linear in Services and endpoints:
 *  - every frontend (ClusterIP, externalIP, LB IP, NodePort) is an element of ONE verdict map,
 *    bound by one rule; there are no per-Service sets or maps;
 *  - a service port's endpoints are a chain of plain rules, a "probability ladder"
 *    (`numgen random mod (N-k) == 0 dnat to EP_k`), which the kernel loads in linear time;
 *  - masquerade, hairpin, source ranges and "no endpoints" verdicts are global rules over shared
 *    sets, not per-Service rules.
 * Hook priorities follow upstream kube-proxy's nftables mode; they are the integration interface
 * other software orders itself around (README, "Hook priorities").
 */
import type { NodeState } from '../../../model/node-state.ts';
import type { Problem } from '../../../util/problems.ts';
import type { Ruleset } from './ruleset.ts';
import { renderServicePort, type EndpointLayout, type FragmentContext } from './service-port.ts';
import { TableState } from './table-state.ts';
import { endpointShards } from './names.ts';
import type { TableContext } from './skeleton.ts';

export { TABLE } from './names.ts';
export { PRIORITY, type TableContext } from './skeleton.ts';

export interface RenderResult {
  readonly ruleset: Ruleset;
  /** Frontends two service ports both claim: the first (by key) keeps it. */
  readonly problems: readonly Problem[];
}

/** The context of a table's fragments; `servicePorts`, the table's number of ports, decides its endpoint maps' shards. */
export function fragmentContext(
  state: TableContext,
  servicePorts: number,
  endpointLayout: EndpointLayout = 'maps',
): FragmentContext {
  return {
    family: state.family,
    localDetector: state.localDetector,
    nodeIPs: state.nodeIPs,
    endpointLayout,
    endpointShards: endpointShards(servicePorts),
  };
}

/** A family's state and its rendered ruleset. */
export interface FamilyRuleset {
  readonly state: NodeState;
  readonly ruleset: Ruleset;
}

export interface RenderedFamilies {
  readonly families: readonly FamilyRuleset[];
  readonly problems: readonly Problem[];
}

/** Renders every family's NodeState (dump, bench, goldens). */
export function renderFamilies(states: readonly NodeState[]): RenderedFamilies {
  const problems: Problem[] = [];
  const families = states.map((state) => {
    const rendered = renderNftables(state);
    problems.push(...rendered.problems);
    return { state, ruleset: rendered.ruleset };
  });
  return { families, problems };
}

/**
 * Renders a whole NodeState (dump, one-shot sync, full resync). `ladders` for nft JSON output,
 * which cannot express the endpoint maps (ADR 0008): the same packet behaviour in rules.
 */
export function renderNftables(state: NodeState, endpointLayout: EndpointLayout = 'maps'): RenderResult {
  const ctx = fragmentContext(state, state.servicePorts.length, endpointLayout);
  const table = new TableState(
    state,
    state.servicePorts.map((sp) => renderServicePort(sp, ctx)),
    ctx,
  );
  return { ruleset: table.ruleset(), problems: table.problems() };
}
