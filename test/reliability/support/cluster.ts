/**
 * Objects and "pods" for the reliability tests. A pod here is an IP address: a few pod namespaces
 * each hold many addresses (routed from the node like any pod's), and their agents answer on all of
 * them, naming the address they were reached at. So a rollout can cycle through dozens of pods
 * without creating a namespace per pod, and every answer says which endpoint served it.
 */
import type { Topology } from '../../../src/sandbox/topology.ts';
import { NS, NODE, POD_PORT } from '../../support/daemon-harness.ts';

export interface VirtualPod {
  readonly ip: string;
  /** The pod namespace that answers for it. */
  readonly host: string;
}

/** Adds `perHost` addresses (10.244.0.FIRST…) to each named pod namespace, routed from the node. */
export async function addVirtualPods(
  topo: Topology,
  hosts: readonly string[],
  perHost: number,
  first = 100,
): Promise<VirtualPod[]> {
  const pods: VirtualPod[] = [];
  const nodeLines: string[] = [];
  await Promise.all(
    hosts.map(async (host, h) => {
      const p = topo.pod(host);
      const lines: string[] = [];
      for (let i = 0; i < perHost; i++) {
        const ip = `10.244.0.${first + h * perHost + i}`;
        lines.push(`addr add ${ip}/32 dev eth0`);
        nodeLines.push(`route add ${ip}/32 dev ${p.nodeIface}`);
        pods.push({ ip, host });
      }
      await topo.ipBatch(p, lines);
    }),
  );
  await topo.ipBatch(topo.node, nodeLines);
  return pods.sort((a, b) => ipNum(a.ip) - ipNum(b.ip));
}

/** Undoes addVirtualPods (best effort). */
export async function removeVirtualPods(topo: Topology, pods: readonly VirtualPod[]): Promise<void> {
  await topo
    .ipBatch(
      topo.node,
      pods.map((p) => `route del ${p.ip}/32`),
    )
    .catch(() => undefined);
  for (const host of new Set(pods.map((p) => p.host))) {
    const lines = pods.filter((p) => p.host === host).map((p) => `addr del ${p.ip}/32 dev eth0`);
    await topo.ipBatch(topo.pod(host), lines).catch(() => undefined);
  }
}

function ipNum(ip: string): number {
  return ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

export type Condition = 'ready' | 'terminating';

/** An EndpointSlice of Service `service` in namespace e2e: addresses with their condition. */
export function sliceOf(
  service: string,
  endpoints: ReadonlyMap<string, Condition> | readonly (readonly [string, Condition])[],
  opts: { name?: string; protocol?: 'TCP' | 'UDP'; port?: number; portName?: string } = {},
): Record<string, unknown> {
  const list = endpoints instanceof Map ? [...endpoints.entries()] : [...(endpoints as [string, Condition][])];
  return {
    metadata: {
      name: opts.name ?? `${service}-1`,
      namespace: NS,
      labels: { 'kubernetes.io/service-name': service },
    },
    addressType: 'IPv4',
    ports: [{ name: opts.portName ?? 'http', protocol: opts.protocol ?? 'TCP', port: opts.port ?? POD_PORT }],
    endpoints: list.map(([ip, c]) => ({
      addresses: [ip],
      conditions: { ready: c === 'ready', serving: true, terminating: c === 'terminating' },
      nodeName: NODE,
    })),
  };
}
