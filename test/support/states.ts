/**
 * Hand-built NodeStates covering every route kind, for tests that need a state without going
 * through manifests.
 */
import type { Family } from '../../src/model/cluster.ts';
import type { EndpointTarget, NodeState, ServicePortState } from '../../src/model/node-state.ts';

const ep = (ip: string, port: number, isLocal = false): EndpointTarget => ({ ip, port, isLocal });

export function servicePort(
  partial: Partial<ServicePortState> & Pick<ServicePortState, 'clusterIP' | 'internal'>,
): ServicePortState {
  const name = partial.ref?.name ?? 'svc';
  return {
    ref: { namespace: 'default', name, portName: 'p', protocol: 'TCP' },
    key: `default/${name}:p`,
    port: 80,
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    localEndpointCount: 0,
    servingEndpoints: [],
    ...partial,
  };
}

/** A UDP Service port `default/dns` whose one serving endpoint is `endpoint` (the conntrack tests' subject). */
export function udpServicePort(clusterIP: string, port: number, endpoint: EndpointTarget): ServicePortState {
  return servicePort({
    ref: { namespace: 'default', name: 'dns', portName: 'dns', protocol: 'UDP' },
    key: 'default/dns:dns/UDP',
    clusterIP,
    port,
    internal: { kind: 'cluster', endpoints: [endpoint] },
    servingEndpoints: [endpoint],
  });
}

/** `n` ClusterIP ports `default/svc-i:p`, each with one endpoint (10.96.x.y → 10.244.x.y:8080). */
export function numberedServicePorts(n: number): ServicePortState[] {
  return Array.from({ length: n }, (_, i) => {
    const endpoint = ep(`10.244.${i >> 8}.${i & 255}`, 8080);
    return servicePort({
      ref: { namespace: 'default', name: `svc-${i}`, portName: 'p', protocol: 'TCP' },
      key: `default/svc-${i}:p`,
      clusterIP: `10.96.${i >> 8}.${i & 255}`,
      internal: { kind: 'cluster', endpoints: [endpoint] },
      servingEndpoints: [endpoint],
    });
  });
}

/** A NodeState with nothing but these service ports: no detector, NodePorts on every local address. */
export function bareState(servicePorts: ServicePortState[], family: Family = 'ipv4', nodeName = 'node-a'): NodeState {
  return {
    family,
    nodeName,
    nodeIPs: [],
    servicePorts,
    serviceCIDRs: [],
    localDetector: { kind: 'none' },
    nodePortDestinations: { kind: 'allLocal' },
    masqueradeAll: false,
    masqueradeMark: 0x4000,
  };
}

export function sampleStateV4(): NodeState {
  const a = ep('10.244.0.2', 8080, true);
  const b = ep('10.244.1.2', 8080);
  return {
    family: 'ipv4',
    nodeName: 'node-a',
    nodeIPs: [],
    servicePorts: [
      servicePort({
        ref: { namespace: 'default', name: 'affinity', portName: 'p', protocol: 'TCP' },
        key: 'default/affinity:p',
        clusterIP: '10.96.0.5',
        affinityTimeoutSeconds: 60,
        internal: { kind: 'cluster', endpoints: [a, b] },
      }),
      servicePort({
        ref: { namespace: 'default', name: 'empty', portName: 'p', protocol: 'UDP' },
        key: 'default/empty:p',
        clusterIP: '10.96.0.6',
        internal: { kind: 'reject' },
        nodePort: 30006,
        external: { kind: 'reject' },
      }),
      servicePort({
        ref: { namespace: 'default', name: 'lb', portName: 'p', protocol: 'TCP' },
        key: 'default/lb:p',
        clusterIP: '10.96.0.7',
        nodePort: 30007,
        externalIPs: ['192.0.2.50'],
        loadBalancerIPs: ['198.51.100.7'],
        loadBalancerSourceRanges: [{ family: 'ipv4', address: '203.0.113.0', prefixLength: 25 }],
        internal: { kind: 'local', endpoints: [a] },
        external: { kind: 'local', local: [a], cluster: [a, b] },
        localEndpointCount: 1,
      }),
      servicePort({
        ref: { namespace: 'default', name: 'np', portName: 'p', protocol: 'SCTP' },
        key: 'default/np:p',
        clusterIP: '10.96.0.8',
        nodePort: 30008,
        internal: { kind: 'drop' },
        external: { kind: 'cluster', endpoints: [b] },
      }),
    ],
    serviceCIDRs: [{ family: 'ipv4', address: '10.96.0.0', prefixLength: 16 }],
    localDetector: { kind: 'cidrs', cidrs: [{ family: 'ipv4', address: '10.244.0.0', prefixLength: 16 }] },
    nodePortDestinations: { kind: 'cidrs', cidrs: [{ family: 'ipv4', address: '192.0.2.1', prefixLength: 32 }] },
    masqueradeAll: false,
    masqueradeMark: 0x4000,
  };
}

export function sampleStateV6(): NodeState {
  const a = ep('fd00:244::2', 8080, true);
  return {
    family: 'ipv6',
    nodeName: 'node-a',
    nodeIPs: [],
    servicePorts: [
      servicePort({
        clusterIP: 'fd00:96::5',
        affinityTimeoutSeconds: 10800,
        nodePort: 30005,
        internal: { kind: 'cluster', endpoints: [a] },
        external: { kind: 'cluster', endpoints: [a] },
      }),
    ],
    serviceCIDRs: [{ family: 'ipv6', address: 'fd00:96::', prefixLength: 108 }],
    localDetector: { kind: 'interfacePrefix', prefix: 'veth' },
    nodePortDestinations: { kind: 'allLocal' },
    masqueradeAll: true,
    masqueradeMark: 0x4000,
  };
}

/** Changes of a state, each a kind of partial (or context) change a sync must carry exactly. */
export const STATE_CHANGES: Record<string, (s: NodeState) => NodeState> = {
  'a Service added': (s) => ({
    ...s,
    servicePorts: [
      ...s.servicePorts,
      servicePort({
        clusterIP: '10.96.0.99',
        internal: { kind: 'cluster', endpoints: [{ ip: '10.244.0.9', port: 80, isLocal: true }] },
      }),
    ],
  }),
  'a Service removed': (s) => ({ ...s, servicePorts: s.servicePorts.slice(1) }),
  'endpoints changed': (s) => ({
    ...s,
    servicePorts: s.servicePorts.map((sp, i) =>
      i === 0
        ? { ...sp, internal: { kind: 'cluster', endpoints: [{ ip: '10.244.0.3', port: 8080, isLocal: true }] } }
        : sp,
    ),
  }),
  'affinity timeout changed': (s) => ({
    ...s,
    servicePorts: s.servicePorts.map((sp) => (sp.affinityTimeoutSeconds ? { ...sp, affinityTimeoutSeconds: 30 } : sp)),
  }),
  'everything scaled to zero': (s) => ({
    ...s,
    servicePorts: s.servicePorts.map((sp) => ({
      ...sp,
      internal: { kind: 'reject' },
      ...(sp.external ? { external: { kind: 'reject' } } : {}),
    })),
  }),
  'detector and masqueradeAll changed': (s) => ({ ...s, masqueradeAll: true, localDetector: { kind: 'none' } }),
  'masquerade bit changed': (s) => ({ ...s, masqueradeMark: 0x8000 }),
  'all Services deleted': (s) => ({ ...s, servicePorts: [] }),
};
