/**
 * @module backends/ipvs/render/fwmarks
 * The firewall marks of the short-circuit fwmark virtual servers (externalTrafficPolicy Local:
 * pods and the node reach all cluster endpoints). A mark is an IPVS service's identity, so it must
 * stay the same across syncs and restarts, or the service would be deleted and re-created under
 * its connections: a port keeps the mark the kernel's short-circuit map already gives its
 * frontends, and a new port gets the smallest free one. Marks never carry the masquerade bit
 * (IPVS compares the whole mark) and never take a mark another program's fwmark service uses.
 */
import type { ServicePortState } from '../../../model/node-state.ts';

/** The service ports that get a fwmark virtual server, in key order. */
export function shortCircuitPorts(ports: readonly ServicePortState[]): ServicePortState[] {
  return ports.filter((sp) => sp.external?.kind === 'local');
}

/**
 * A mark for every port of `ports` (sorted by key). `prior`: mark by frontend text
 * (`10.0.0.1 . tcp . 80`) as the kernel holds it; `frontends`: a port's external frontend texts;
 * `taken`: marks of fwmark services kproxy does not own.
 */
export function allocateFwmarks(
  ports: readonly ServicePortState[],
  frontends: (sp: ServicePortState) => readonly string[],
  prior: ReadonlyMap<string, number>,
  taken: ReadonlySet<number>,
  masqueradeMark: number,
): Map<string, number> {
  const usable = (m: number) => Number.isInteger(m) && m >= 1 && m <= 0xffffffff && (m & masqueradeMark) === 0;
  const used = new Set(taken);
  const out = new Map<string, number>();
  for (const sp of ports) {
    for (const fe of frontends(sp)) {
      const m = prior.get(fe);
      if (m !== undefined && usable(m) && !used.has(m)) {
        out.set(sp.key, m);
        used.add(m);
        break;
      }
    }
  }
  let next = 1;
  for (const sp of ports) {
    if (out.has(sp.key)) continue;
    while (!usable(next) || used.has(next)) next++;
    out.set(sp.key, next);
    used.add(next);
  }
  return out;
}
