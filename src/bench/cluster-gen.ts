/**
 * @module bench/cluster-gen
 * Synthetic clusters for the benchmark, as the raw Kubernetes objects an API server would return
 * (Services, EndpointSlices, this Node, a ServiceCIDR), so the bench runs the real pipeline from
 * `buildSnapshot` on. Deterministic: the same size gives the same objects, in every process.
 *
 * Shape (per `ClusterSize`): every Service has one TCP port (80 → targetPort 8080) and a ClusterIP
 * in 10.96.0.0/12; every 10th Service is a NodePort; every 100th (offset 50) is a LoadBalancer
 * with an ingress IP in 198.18.0.0/15, half of them `externalTrafficPolicy: Local`, a quarter with
 * `loadBalancerSourceRanges`. Endpoints (pod IPs from 10.64.0.0/10, all ready) are spread
 * round-robin over `nodes` nodes, so about 1/nodes of them are local to `node-0`, the node the
 * rules are built for; at most 100 endpoints per EndpointSlice, as the EndpointSlice controller does.
 */

export const BENCH_NODE = 'node-0';
export const BENCH_NODE_IP = '192.168.0.10';
/** Pod network of the synthetic cluster (also kproxy's --cluster-cidr in the bench). */
export const BENCH_CLUSTER_CIDR = '10.64.0.0/10';
export const BENCH_SERVICE_CIDR = '10.96.0.0/12';
export const SERVICE_PORT = 80;
export const TARGET_PORT = 8080;
const MAX_ENDPOINTS_PER_SLICE = 100;

export interface ClusterSize {
  readonly services: number;
  readonly endpointsPerService: number;
}

export interface ClusterShape {
  /** Nodes the endpoints are spread over (default 50: ~2% of endpoints are local). */
  readonly nodes: number;
  /** Percentage of Services with `sessionAffinity: ClientIP` (default 0). */
  readonly affinityPercent: number;
}

export const DEFAULT_SHAPE: ClusterShape = { nodes: 50, affinityPercent: 0 };

export interface ClusterStats {
  readonly services: number;
  readonly nodePortServices: number;
  readonly loadBalancerServices: number;
  readonly endpointSlices: number;
  readonly endpoints: number;
  readonly localEndpoints: number;
}

export function sizeLabel(s: ClusterSize): string {
  return `${s.services}x${s.endpointsPerService}`;
}

export function parseSize(text: string): ClusterSize | undefined {
  const m = /^(\d+)(k?)x(\d+)$/i.exec(text.trim());
  if (!m) return undefined;
  const services = Number(m[1]) * (m[2] ? 1000 : 1);
  const endpointsPerService = Number(m[3]);
  if (!Number.isSafeInteger(services) || services < 1 || services > 1_000_000) return undefined;
  if (!Number.isSafeInteger(endpointsPerService) || endpointsPerService < 1 || endpointsPerService > 10_000)
    return undefined;
  return { services, endpointsPerService };
}

function ipv4(base: number, offset: number): string {
  const n = (base + offset) >>> 0;
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

const SERVICE_BASE = (10 << 24) | (96 << 16); // 10.96.0.0
const POD_BASE = (10 << 24) | (64 << 16); // 10.64.0.0
const LB_BASE = (198 << 24) | (18 << 16); // 198.18.0.0

/** The Service's ClusterIP (i is the Service index). */
export function clusterIpOf(i: number): string {
  return ipv4(SERVICE_BASE, 10 + i);
}

/** The g-th endpoint's pod IP over the whole cluster (skips .0 and .1 of 10.64.0.0). */
export function podIpOf(g: number): string {
  return ipv4(POD_BASE, 2 + g);
}

/** An endpoint of the synthetic cluster: its Service (port `http`, TCP) and pod IP. */
export interface EndpointRef {
  readonly namespace: string;
  readonly service: string;
  readonly ip: string;
}

/** The last endpoint on BENCH_NODE (round-robin over the nodes: every `nodes`-th endpoint). */
export function lastLocalEndpoint(size: ClusterSize, shape: ClusterShape): EndpointRef {
  const last = size.services * size.endpointsPerService - 1;
  const g = last - (last % shape.nodes);
  const i = Math.floor(g / size.endpointsPerService);
  return { namespace: serviceNamespace(i), service: serviceName(i), ip: podIpOf(g) };
}

export function serviceNamespace(i: number): string {
  return `ns-${i % 100}`;
}

export function serviceName(i: number): string {
  return `svc-${i}`;
}

/** The raw objects of a synthetic cluster, in API order (Services, slices, Node, ServiceCIDR). */
export function syntheticCluster(
  size: ClusterSize,
  shape: ClusterShape = DEFAULT_SHAPE,
): { objects: unknown[]; stats: ClusterStats } {
  const objects: unknown[] = [];
  let nodePortServices = 0;
  let loadBalancerServices = 0;
  let endpointSlices = 0;
  let endpoints = 0;
  let localEndpoints = 0;
  let nextNodePort = 30000;
  const affinityEvery = shape.affinityPercent > 0 ? Math.max(1, Math.round(100 / shape.affinityPercent)) : 0;

  for (let i = 0; i < size.services; i++) {
    const namespace = serviceNamespace(i);
    const name = serviceName(i);
    const isLb = i % 100 === 50;
    const isNodePort = !isLb && i % 10 === 5;
    const type = isLb ? 'LoadBalancer' : isNodePort ? 'NodePort' : 'ClusterIP';
    const port: Record<string, unknown> = {
      name: 'http',
      protocol: 'TCP',
      port: SERVICE_PORT,
      targetPort: TARGET_PORT,
    };
    if (isLb || isNodePort) port['nodePort'] = nextNodePort++;
    const spec: Record<string, unknown> = {
      type,
      clusterIP: clusterIpOf(i),
      clusterIPs: [clusterIpOf(i)],
      ports: [port],
      selector: { app: name },
    };
    const service: Record<string, unknown> = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace, uid: `svc-uid-${i}`, resourceVersion: '1' },
      spec,
    };
    if (isLb) {
      const lbIndex = loadBalancerServices++;
      if (lbIndex % 2 === 1) {
        spec['externalTrafficPolicy'] = 'Local';
        spec['healthCheckNodePort'] = nextNodePort++;
      }
      if (lbIndex % 4 === 0) spec['loadBalancerSourceRanges'] = ['203.0.113.0/24', '198.51.100.0/24'];
      service['status'] = { loadBalancer: { ingress: [{ ip: ipv4(LB_BASE, 1 + lbIndex) }] } };
    } else if (isNodePort) {
      nodePortServices++;
    }
    if (affinityEvery > 0 && i % affinityEvery === 3) {
      spec['sessionAffinity'] = 'ClientIP';
      spec['sessionAffinityConfig'] = { clientIP: { timeoutSeconds: 10800 } };
    }
    objects.push(service);
  }

  let g = 0;
  for (let i = 0; i < size.services; i++) {
    const namespace = serviceNamespace(i);
    const name = serviceName(i);
    for (let first = 0, s = 0; first < size.endpointsPerService; first += MAX_ENDPOINTS_PER_SLICE, s++) {
      const count = Math.min(MAX_ENDPOINTS_PER_SLICE, size.endpointsPerService - first);
      const eps: unknown[] = [];
      for (let k = 0; k < count; k++, g++) {
        const nodeName = `node-${g % shape.nodes}`;
        if (nodeName === BENCH_NODE) localEndpoints++;
        eps.push({
          addresses: [podIpOf(g)],
          conditions: { ready: true, serving: true, terminating: false },
          nodeName,
          targetRef: { kind: 'Pod', namespace, name: `${name}-pod-${first + k}` },
        });
      }
      endpoints += count;
      endpointSlices++;
      objects.push({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: {
          name: `${name}-${s.toString(36)}`,
          namespace,
          labels: {
            'kubernetes.io/service-name': name,
            'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
          },
        },
        addressType: 'IPv4',
        ports: [{ name: 'http', protocol: 'TCP', port: TARGET_PORT }],
        endpoints: eps,
      });
    }
  }

  objects.push({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: BENCH_NODE, labels: { 'kubernetes.io/hostname': BENCH_NODE } },
    spec: { podCIDR: '10.64.0.0/24', podCIDRs: ['10.64.0.0/24'] },
    status: {
      addresses: [
        { type: 'InternalIP', address: BENCH_NODE_IP },
        { type: 'Hostname', address: BENCH_NODE },
      ],
    },
  });
  objects.push({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'ServiceCIDR',
    metadata: { name: 'kubernetes' },
    spec: { cidrs: [BENCH_SERVICE_CIDR] },
  });

  return {
    objects,
    stats: {
      services: size.services,
      nodePortServices,
      loadBalancerServices,
      endpointSlices,
      endpoints,
      localEndpoints,
    },
  };
}

/** A worker's command-line arguments for a synthetic cluster (read back by `clusterFromArgs`). */
export function clusterArgs(size: ClusterSize, shape: ClusterShape): string[] {
  return [
    '--services',
    String(size.services),
    '--endpoints',
    String(size.endpointsPerService),
    '--nodes',
    String(shape.nodes),
    '--affinity-percent',
    String(shape.affinityPercent),
  ];
}

/** The `parseArgs` options `clusterArgs` writes. */
export const CLUSTER_ARG_OPTIONS = {
  services: { type: 'string' },
  endpoints: { type: 'string' },
  nodes: { type: 'string', default: String(DEFAULT_SHAPE.nodes) },
  'affinity-percent': { type: 'string', default: String(DEFAULT_SHAPE.affinityPercent) },
} as const;

/** The size and shape from a worker's parsed `CLUSTER_ARG_OPTIONS`. */
export function clusterFromArgs(values: {
  services?: string | undefined;
  endpoints?: string | undefined;
  nodes?: string | undefined;
  'affinity-percent'?: string | undefined;
}): { size: ClusterSize; shape: ClusterShape } {
  const services = Number(values.services);
  const endpointsPerService = Number(values.endpoints);
  if (!Number.isInteger(services) || !Number.isInteger(endpointsPerService))
    throw new Error('--services and --endpoints are required');
  return {
    size: { services, endpointsPerService },
    shape: { nodes: Number(values.nodes), affinityPercent: Number(values['affinity-percent']) },
  };
}
