/**
 * @module backends/nftables/render/skeleton
 * The fixed part of kproxy's table: base chains on their hooks (the priorities other software
 * orders itself around), dispatch through the shared maps, masquerade, and the filter checks.
 * Their shape is rules-templates/nftables.nft (loaded and checked by template.ts when this module
 * loads); this module fills it from the family-wide context, never from individual Services.
 */
import type { Cidr } from '../../../model/cluster.ts';
import type { NodeState } from '../../../model/node-state.ts';
import type { Chain, NftSet, SetSpec } from './ruleset.ts';
import type { Element, NftFamily } from './syntax.ts';
import { nftFamily, sortByKey } from './syntax.ts';
import { ENDPOINT_MAP, endpointAddressMap, type SetName } from './names.ts';
import { localTrafficMatch, type EndpointMaps } from './service-port.ts';
import { outermostCidrs } from './cidrs.ts';
import { nftablesTemplate, renderTemplateChains, renderTemplateSets, type TemplateValues } from './template.ts';

/** Hook priorities: upstream's DNAT priority is -100; filters sit 10 before it or at 0 (as in the template). */
export const PRIORITY = { firewall: -110, dnat: -100, filter: 0, snat: 100 } as const;

/** The family-wide part of a NodeState: what the skeleton and every fragment depend on. */
export type TableContext = Omit<NodeState, 'servicePorts'>;

const LOOPBACK_V4: Cidr = { family: 'ipv4', address: '127.0.0.0', prefixLength: 8 };
const LOOPBACK_V6: Cidr = { family: 'ipv6', address: '::1', prefixLength: 128 };

/** Loaded at start: a broken template stops kproxy before it touches the kernel. */
const TEMPLATE = nftablesTemplate();

/**
 * The fixed sets, with the elements the service ports put in them (`bySet`) and the context's own;
 * the endpoint maps only when endpoints are map elements.
 */
export function skeletonSets(
  state: TableContext,
  bySet: ReadonlyMap<SetName, readonly Element[]>,
  endpoints: EndpointMaps,
): NftSet[] {
  const sets = renderTemplateSets(TEMPLATE, templateValues(state));
  if (endpoints.endpointLayout === 'maps')
    for (const spec of endpointMapSpecs(nftFamily(state.family), endpoints.endpointShards))
      sets.push({ spec, elements: [] });
  return sets.map(({ spec, elements }) => {
    const list = [...(bySet.get(spec.name as SetName) ?? []), ...elements];
    return { spec, elements: sortByKey(list) };
  });
}

/**
 * The endpoint maps (ADR 0008). Addresses: frontend . index → endpoint address, declared with
 * `typeof` because the index is numgen's integer, which `type` cannot name (nft lists the types
 * below back). Ports: frontend → target port. Address and port are separate maps because nft
 * 1.0.6 mishandles `… : ip daddr . th dport` data: a later transaction cannot add a rule using the
 * map ("conflicting protocols"), and `tcp dport` there makes the rule match TCP only. The address
 * maps come in `shards` (names.ts, `endpointShards`).
 */
function endpointMapSpecs(f: NftFamily, shards: number): SetSpec[] {
  const addr = f === 'ip' ? 'ipv4_addr' : 'ipv6_addr';
  const addresses = (nodePort: boolean, keyType: string[], keyExpr: string): SetSpec[] =>
    Array.from({ length: shards }, (_, shard) => ({
      name: endpointAddressMap(nodePort, shard, shards),
      keyType: [...keyType, 'integer'],
      dataType: [addr],
      verdictMap: false,
      flags: [],
      typeOf: `${keyExpr} . numgen random mod 1 : ${f} daddr`,
    }));
  const ports = (name: SetName, keyType: string[]): SetSpec => ({
    name,
    keyType,
    dataType: ['inet_service'],
    verdictMap: false,
    flags: [],
  });
  return [
    ...addresses(false, [addr, 'inet_proto', 'inet_service'], `${f} daddr . meta l4proto . th dport`),
    ports(ENDPOINT_MAP.ports, [addr, 'inet_proto', 'inet_service']),
    ...addresses(true, ['inet_proto', 'inet_service'], 'meta l4proto . th dport'),
    ports(ENDPOINT_MAP.nodePortPorts, ['inet_proto', 'inet_service']),
  ];
}

/** A ClientIP-affinity set: filled by the kernel from the packet path, entries expire. */
export function affinitySetSpec(f: NftFamily, name: string, timeoutSeconds: number): NftSet {
  const a = f === 'ip' ? 'ipv4_addr' : 'ipv6_addr';
  return {
    spec: { name, keyType: [a], verdictMap: false, flags: ['dynamic', 'timeout'], timeoutSeconds },
    elements: [],
  };
}

/** The fixed chains: hooks, dispatch, masquerade and the filter checks. */
export function skeletonChains(state: TableContext): Chain[] {
  return renderTemplateChains(TEMPLATE, templateValues(state));
}

/** What the template leaves open, for one family's context. */
function templateValues(state: TableContext): TemplateValues {
  const f = nftFamily(state.family);
  const d = state.nodePortDestinations;
  return {
    family: f,
    mark: state.masqueradeMark,
    // NodePorts never answer on loopback (CVE-2020-8558).
    loopback: f === 'ip' ? LOOPBACK_V4 : LOOPBACK_V6,
    // The ClusterIP masquerade rule: traffic that does not come from a pod.
    offCluster: localTrafficMatch(state.localDetector, f, false),
    nodePortAddresses: d.kind === 'cidrs' ? outermostCidrs(d.cidrs) : [],
    serviceCidrs: outermostCidrs(state.serviceCIDRs),
    masqueradeAll: state.masqueradeAll,
    localDetector: state.localDetector.kind !== 'none',
    nodePortCidrs: d.kind === 'cidrs',
  };
}
