/**
 * The backends the packet-flow suite runs against. Each programs the node namespace of a topology
 * from a directory of manifests, the way a user would: through the real `kproxy` CLI.
 * iptables and IPVS join this list when they exist; the suite itself does not change.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import type { Topology } from '../../src/sandbox/topology.ts';
import { ipvsCleanup, ipvsSync } from '../ipvs/in-process.ts';
import { ENDPOINT_MAP, PORTS_PER_SHARD } from '../../src/backends/nftables/render/names.ts';
import { endpoints, service, type ServiceSpec } from './cluster.ts';

const KPROXY = fileURLToPath(new URL('../../bin/kproxy', import.meta.url));

export interface SyncOutcome {
  readonly exitCode: number;
  /** kproxy's JSON log lines. */
  readonly log: readonly Record<string, unknown>[];
}

/**
 * Where a mode's packet-level behaviour differs from nftables mode, by upstream's design; the suite
 * asserts each difference explicitly instead of skipping the flow.
 */
export interface ModeBehaviour {
  /** nftables mode REJECTs a ClusterIP's unused ports; iptables mode has no rule for them (routed on). */
  readonly rejectsUnusedClusterIpPorts: boolean;
  /** nftables mode DROPs unallocated ServiceCIDR addresses; iptables mode has no rule for them. */
  readonly dropsUnallocatedServiceIps: boolean;
  /** Upstream's default nodePortAddresses: every local address (iptables), or the primary node IPs (nftables). */
  readonly nodePortsOnEveryLocalAddress: boolean;
  /** iptables.localhostNodePorts: NodePorts also answer on 127.0.0.1 (IPv4 only), through route_localnet. */
  readonly localhostNodePorts: boolean;
}

export interface Backend {
  readonly name: string;
  /** Its `--proxy-mode`. */
  readonly mode: string;
  /** Why the suite cannot run against it here; undefined: it runs. */
  readonly skip?: string;
  readonly behaviour: ModeBehaviour;
  sync(topo: Topology, objects: readonly object[], flags: readonly string[]): Promise<SyncOutcome>;
  cleanup(topo: Topology): Promise<SyncOutcome>;
  /** True while the node namespace holds any kproxy rule of this mode. */
  hasRules(topo: Topology): Promise<boolean>;
}

/** Runs `kproxy ARGS` in the topology's node namespace. */
async function kproxy(topo: Topology, args: readonly string[]): Promise<SyncOutcome> {
  const r = await execa('ip', ['netns', 'exec', topo.node.ns, KPROXY, ...args], { reject: false });
  const log = r.stderr
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return { msg: l };
      }
    });
  return { exitCode: r.exitCode ?? 1, log };
}

async function kproxySync(
  mode: string,
  topo: Topology,
  objects: readonly object[],
  flags: readonly string[],
): Promise<SyncOutcome> {
  const dir = mkdtempSync(join(tmpdir(), 'kproxy-flows-'));
  try {
    writeFileSync(join(dir, 'cluster.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
    return await kproxy(topo, ['sync', '--proxy-mode', mode, '--manifests', dir, ...flags]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function backend(
  mode: string,
  behaviour: ModeBehaviour,
  hasRules: (topo: Topology) => Promise<boolean>,
  skip?: string,
): Backend {
  return {
    name: mode,
    mode,
    ...(skip ? { skip } : {}),
    behaviour,
    sync: (topo, objects, flags) => kproxySync(mode, topo, objects, flags),
    cleanup: (topo) => kproxy(topo, ['cleanup', '--proxy-mode', mode]),
    hasRules,
  };
}

async function inNode(topo: Topology, file: string, args: readonly string[]): Promise<string> {
  return (await execa('ip', ['netns', 'exec', topo.node.ns, file, ...args])).stdout;
}

const NFTABLES: ModeBehaviour = {
  rejectsUnusedClusterIpPorts: true,
  dropsUnallocatedServiceIps: true,
  nodePortsOnEveryLocalAddress: false,
  localhostNodePorts: false,
};

const nftables = backend('nftables', NFTABLES, async (topo) => (await topo.nft(['list', 'tables'])).includes('kproxy'));

export const BACKENDS: readonly Backend[] = [
  nftables,
  shardedEndpointMaps(nftables),
  backend(
    'iptables',
    {
      rejectsUnusedClusterIpPorts: false,
      dropsUnallocatedServiceIps: false,
      nodePortsOnEveryLocalAddress: true,
      localhostNodePorts: true,
    },
    async (topo) => {
      const saved = (await inNode(topo, 'iptables-save', [])) + (await inNode(topo, 'ip6tables-save', []));
      // KUBE-FIREWALL stays after cleanup, as upstream leaves it (the kubelet shares it).
      return /^:KUBE-(SERVICES|PROXY-CANARY) /m.test(saved);
    },
  ),
  ipvsBackend(),
];

/** Services added to every sync by {@link shardedEndpointMaps}: each family's table then has this many more ports. */
const PADDING_SERVICES = PORTS_PER_SHARD + 76;

/**
 * nftables mode past {@link PORTS_PER_SHARD} service ports, where endpoints are spread over
 * several address maps (`endpoint-addresses-0`, `-1`, and their DNAT chains): every flow again,
 * with that many more Services (each with pod a behind it) beside the suite's own.
 */
function shardedEndpointMaps(b: Backend): Backend {
  const padding = (topo: Topology): object[] =>
    Array.from({ length: PADDING_SERVICES }, (_, i) => {
      const s: ServiceSpec = {
        name: `padding-${i}`,
        index: 1000 + i,
        ports: [{ name: 'http', port: 80, targetPort: 8080 }],
      };
      return [...service(s), ...endpoints(topo, s, [{ pod: 'a' }])];
    }).flat();
  return {
    ...b,
    name: `${b.name}-sharded`,
    sync: async (topo, objects, flags) => {
      const outcome = await b.sync(topo, [...objects, ...padding(topo)], flags);
      // The variant tests what it says only if the tables really are sharded.
      if (outcome.exitCode === 0)
        for (const family of ['ip', 'ip6'])
          await topo.nft(['list', 'map', family, 'kproxy', `${ENDPOINT_MAP.addresses}-1`]);
      return outcome;
    },
  };
}

/**
 * IPVS mode needs a kernel with IPVS: test/ipvs/ipvs-vm.test.ts boots the IPVS VM and runs this
 * suite there (KPROXY_IPVS_VM=1). Its syncs run in-process, exactly as the CLI runs them
 * (test/ipvs/in-process.ts): a Node start in the VM costs 40 s and more under emulation.
 */
function ipvsBackend(): Backend {
  const inVm = process.env['KPROXY_IPVS_VM'] === '1';
  return {
    name: 'ipvs',
    mode: 'ipvs',
    ...(inVm ? {} : { skip: 'this kernel has no IPVS: test/ipvs/ipvs-vm.test.ts runs it in the IPVS VM' }),
    behaviour: {
      // Upstream's KUBE-IPVS-FILTER: a new connection to any other port of an address on kube-ipvs0 is rejected.
      rejectsUnusedClusterIpPorts: true,
      // Not on kube-ipvs0, such an address would be routed away: kproxy's helper table drops it, as nftables mode does.
      dropsUnallocatedServiceIps: true,
      // Upstream's IPVS default: NodePorts on every local address but loopback.
      nodePortsOnEveryLocalAddress: true,
      localhostNodePorts: false,
    },
    sync: (topo, objects, flags) => ipvsSync(topo.node.ns, objects, flags),
    cleanup: (topo) => ipvsCleanup(topo.node.ns),
    hasRules: async (topo) => {
      const tables = await topo.nft(['list', 'tables']);
      const servers = await execa('ip', ['netns', 'exec', topo.node.ns, 'ipvsadm', '-Sn'], { reject: false });
      const dummy = await execa('ip', ['netns', 'exec', topo.node.ns, 'ip', 'link', 'show', 'kube-ipvs0'], {
        reject: false,
      });
      return tables.includes('kproxy-ipvs') || servers.stdout.trim() !== '' || dummy.exitCode === 0;
    },
  };
}
