/**
 * Times, outside vitest, what the packet-flow suite's beforeAll does (test/flows/packet-flows.test.ts):
 * build its topology (7 namespaces, one agent per pod and client), serve on the node, one kproxy
 * sync, then a second sync, a probe, cleanup and teardown. Run inside the IPVS VM to see where a
 * flow suite's time goes there:
 *   node test/ipvs-vm/measure/flow-setup.ts [nftables|ipvs]     (prints one line per step)
 */
import { performance } from 'node:perf_hooks';
import { createTopology } from '../../../src/sandbox/topology.ts';
import { BACKENDS } from '../../flows/backends.ts';
import { CLUSTER_CIDR, NODE, clusterIP, endpoints, nodeObjects, service } from '../../flows/cluster.ts';

const mode = process.argv[2] ?? 'nftables';
const backend = BACKENDS.find((b) => b.name === mode);
if (backend === undefined) throw new Error(`no backend ${mode}`);
const flags = [`--hostname-override=${NODE}`, `--cluster-cidr=${CLUSTER_CIDR}`];

let last = performance.now();
const step = (what: string): void => {
  const now = performance.now();
  console.log(`${what.padEnd(44)} ${((now - last) / 1000).toFixed(1).padStart(6)} s`);
  last = now;
};

const topo = await createTopology({
  pods: [
    { name: 'cli', tcpPorts: [], udpPorts: [] },
    { name: 'a' },
    { name: 'b' },
    { name: 'c', local: false },
    { name: 'd', local: false },
  ],
  clients: [{ name: 'ext' }, { name: 'ext2' }],
  tcpPorts: [8080],
  udpPorts: [5353],
});
try {
  step('createTopology (5 pods, 2 clients)');
  await topo.serve(topo.node, { tcp: [30010, 30014], udp: [] });
  step('serve on the node (starts its agent)');
  const web = { name: 'web', index: 10, ports: [{ name: 'http', port: 80, targetPort: 8080 }] };
  const objects = [...nodeObjects(topo), ...service(web), ...endpoints(topo, web, [{ pod: 'a' }, { pod: 'b' }])];
  const first = await backend.sync(topo, objects, flags);
  step(`kproxy sync #1 (exit ${first.exitCode})`);
  const second = await backend.sync(topo, objects, flags);
  step(`kproxy sync #2, nothing changed (exit ${second.exitCode})`);
  const t = await topo.probeMany(topo.pod('cli'), { proto: 'tcp', host: clusterIP(10, 'v4'), port: 80 }, 10);
  step(`10 TCP probes to the ClusterIP (${[...t.byPod.keys()].sort().join(',')})`);
  const c = await backend.cleanup(topo);
  step(`kproxy cleanup (exit ${c.exitCode})`);
} finally {
  await topo.destroy();
  step('destroy');
}
