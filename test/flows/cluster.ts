/**
 * Kubernetes objects for the packet-flow suite, as plain YAML-able objects, addressed by pod name
 * so a scenario reads like a cluster description. One scheme for both families: Service i gets
 * 10.96.0.i and fd00:96::i.
 */
import type { Topology } from '../../src/sandbox/topology.ts';

export type Fam = 'v4' | 'v6';
export const FAMILIES: readonly Fam[] = ['v4', 'v6'];

export const NODE = 'node-a';
export const ZONE = 'zone-a';
export const CLUSTER_CIDR = '10.244.0.0/16,fd00:244::/56';
export const SERVICE_CIDRS = { v4: '10.96.0.0/16', v6: 'fd00:96::/108' } as const;

export function clusterIP(i: number, fam: Fam): string {
  return fam === 'v4' ? `10.96.${i >> 8}.${i & 255}` : `fd00:96::${i.toString(16)}`;
}
export function externalIP(i: number, fam: Fam): string {
  return fam === 'v4' ? `203.0.113.${i}` : `2001:db8:113::${i.toString(16)}`;
}
export function lbIP(i: number, fam: Fam): string {
  return fam === 'v4' ? `198.51.100.${i}` : `2001:db8:100::${i.toString(16)}`;
}

export interface PortSpec {
  name: string;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  port: number;
  targetPort: number;
  nodePort?: number;
}

export interface ServiceSpec {
  name: string;
  index: number;
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  ports: PortSpec[];
  externalIPs?: boolean;
  loadBalancer?: boolean;
  sourceRanges?: (fam: Fam) => string[];
  externalTrafficPolicy?: 'Cluster' | 'Local';
  internalTrafficPolicy?: 'Cluster' | 'Local';
  affinitySeconds?: number;
  labels?: Record<string, string>;
}

export interface EndpointSpec {
  pod: string;
  /** Defaults: ready, serving, not terminating, on this node unless the pod is marked remote. */
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  node?: string;
  zoneHint?: string;
}

export function service(s: ServiceSpec): object[] {
  const ips = FAMILIES.map((f) => clusterIP(s.index, f));
  const spec: Record<string, unknown> = {
    type: s.type ?? (s.loadBalancer ? 'LoadBalancer' : s.ports.some((p) => p.nodePort) ? 'NodePort' : 'ClusterIP'),
    clusterIP: ips[0],
    clusterIPs: ips,
    ipFamilies: ['IPv4', 'IPv6'],
    ipFamilyPolicy: 'RequireDualStack',
    ports: s.ports.map((p) => ({
      name: p.name,
      protocol: p.protocol ?? 'TCP',
      port: p.port,
      targetPort: p.targetPort,
      ...(p.nodePort ? { nodePort: p.nodePort } : {}),
    })),
  };
  if (s.externalIPs) spec['externalIPs'] = FAMILIES.map((f) => externalIP(s.index, f));
  if (s.sourceRanges) spec['loadBalancerSourceRanges'] = FAMILIES.flatMap((f) => s.sourceRanges?.(f) ?? []);
  if (s.externalTrafficPolicy) spec['externalTrafficPolicy'] = s.externalTrafficPolicy;
  if (s.internalTrafficPolicy) spec['internalTrafficPolicy'] = s.internalTrafficPolicy;
  if (s.affinitySeconds) {
    spec['sessionAffinity'] = 'ClientIP';
    spec['sessionAffinityConfig'] = { clientIP: { timeoutSeconds: s.affinitySeconds } };
  }
  const status = s.loadBalancer ? { loadBalancer: { ingress: FAMILIES.map((f) => ({ ip: lbIP(s.index, f) })) } } : {};
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: s.name, namespace: 'flows', labels: s.labels ?? {} },
      spec,
      status,
    },
  ];
}

/** One EndpointSlice per family for a Service. */
export function endpoints(topo: Topology, s: ServiceSpec, eps: EndpointSpec[]): object[] {
  return FAMILIES.map((fam) => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${s.name}-${fam}`, namespace: 'flows', labels: { 'kubernetes.io/service-name': s.name } },
    addressType: fam === 'v4' ? 'IPv4' : 'IPv6',
    ports: s.ports.map((p) => ({ name: p.name, protocol: p.protocol ?? 'TCP', port: p.targetPort })),
    endpoints: eps.map((e) => ({
      addresses: [topo.pod(e.pod)[fam]],
      conditions: {
        ready: e.ready ?? true,
        serving: e.serving ?? e.ready ?? true,
        terminating: e.terminating ?? false,
      },
      nodeName: e.node ?? (REMOTE_PODS.has(e.pod) ? 'node-b' : NODE),
      ...(e.zoneHint ? { hints: { forZones: [{ name: e.zoneHint }] } } : {}),
    })),
  }));
}

/** Pods the EndpointSlices place on another node (physically they hang off this node too). */
export const REMOTE_PODS = new Set(['c', 'd']);

export function nodeObjects(topo: Topology): object[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: NODE, labels: { 'topology.kubernetes.io/zone': ZONE } },
      spec: { podCIDRs: [topo.podCidr.v4, topo.podCidr.v6] },
      status: {
        addresses: [
          { type: 'InternalIP', address: topo.node.v4 },
          { type: 'InternalIP', address: topo.node.v6 },
        ],
      },
    },
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'ServiceCIDR',
      metadata: { name: 'kubernetes' },
      spec: { cidrs: [SERVICE_CIDRS.v4, SERVICE_CIDRS.v6] },
    },
  ];
}
