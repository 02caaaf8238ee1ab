/**
 * @module backends/ipvs/render/families
 * Renders every family of a node's state for IPVS mode with the inputs only the kernel knows
 * (local addresses, offered schedulers, the marks already in use) given or, for `kproxy dump`,
 * assumed: the Node object's addresses are the local addresses, every scheduler is offered, and
 * marks are allocated from 1.
 */
import type { Family } from '../../../model/cluster.ts';
import type { IpvsScheduler } from '../../../model/ipvs-schedulers.ts';
import type { NodeState } from '../../../model/node-state.ts';
import { allocateFwmarks, shortCircuitPorts } from './fwmarks.ts';
import { externalFrontendTexts, renderIpvs, type IpvsFamilyState } from './layout.ts';

export interface KernelFacts {
  /** This family's local addresses outside kube-ipvs0 (no loopback, no IPv6 link-local). */
  readonly localAddresses: (family: Family) => readonly string[];
  readonly availableSchedulers?: ReadonlySet<IpvsScheduler>;
  /** Mark by frontend text, from the kernel's short-circuit maps. */
  readonly priorMarks?: (family: Family) => ReadonlyMap<string, number>;
  /** Marks of fwmark services kproxy does not own. */
  readonly takenMarks?: (family: Family) => ReadonlySet<number>;
}

export function renderFamily(state: NodeState, defaultScheduler: IpvsScheduler, facts: KernelFacts): IpvsFamilyState {
  const localAddresses = facts.localAddresses(state.family);
  const fwmarks = allocateFwmarks(
    shortCircuitPorts(state.servicePorts),
    (sp) => externalFrontendTexts(sp, state, localAddresses),
    facts.priorMarks?.(state.family) ?? new Map(),
    facts.takenMarks?.(state.family) ?? new Set(),
    state.masqueradeMark,
  );
  return renderIpvs(state, {
    localAddresses,
    defaultScheduler,
    ...(facts.availableSchedulers ? { availableSchedulers: facts.availableSchedulers } : {}),
    fwmarks,
  });
}

/** `kproxy dump`'s assumptions: the Node object's addresses are local, all schedulers are there. */
export function dumpFacts(states: readonly NodeState[]): KernelFacts {
  return {
    localAddresses: (family) => states.find((s) => s.family === family)?.nodeIPs ?? [],
  };
}
