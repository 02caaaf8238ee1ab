/**
 * iptables mode's canonical text against the real tools, both flavors (iptables-nft and
 * iptables-legacy), IPv4 and IPv6: what the renderer writes is what iptables-save prints back,
 * string for string (planSync finds nothing to change after loading it), through a sequence of
 * rich states loaded one after another into the same namespace (full plans write only the
 * difference, delete stale chains, never duplicate a jump); a partial plan lands on the same
 * rules; other software's rules are left alone; and `iptables-restore --test` accepts the dump.
 */
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Cidr, Family } from '../../src/model/cluster.ts';
import type { EndpointTarget, NodeState, ServicePortState } from '../../src/model/node-state.ts';
import { isKproxyServiceChain } from '../../src/backends/iptables/render/names.ts';
import { planSync } from '../../src/backends/iptables/render/plan.ts';
import { dumpText } from '../../src/backends/iptables/render/restore.ts';
import { renderIptables, type IptablesOptions } from '../../src/backends/iptables/render/ruleset.ts';
import { parseIptablesSave } from '../../src/backends/iptables/render/saved.ts';
import type { IptRuleset } from '../../src/backends/iptables/render/types.ts';
import { servicePort } from '../support/states.ts';

const NS = `kpitr-${process.pid}`;
const FLAVORS = ['nft', 'legacy'] as const;
type Flavor = (typeof FLAVORS)[number];

const tool = (family: Family, flavor: Flavor, what: 'restore' | 'save' | '') =>
  `${family === 'ipv4' ? 'iptables' : 'ip6tables'}-${flavor}${what ? `-${what}` : ''}`;

async function run(file: string, args: string[], input?: string): Promise<string> {
  const r = await execa('ip', ['netns', 'exec', NS, file, ...args], { input: input ?? '', reject: false });
  if (r.exitCode !== 0)
    throw new Error(`${file} ${args.join(' ')} failed (${r.exitCode}): ${r.stderr}\n${input ?? ''}`);
  return r.stdout;
}

const restore = (family: Family, flavor: Flavor, text: string, test = false) =>
  run(tool(family, flavor, 'restore'), ['--noflush', ...(test ? ['--test'] : [])], text);
const save = async (family: Family, flavor: Flavor) => parseIptablesSave(await run(tool(family, flavor, 'save'), []));

async function clean(flavor: Flavor): Promise<void> {
  for (const family of ['ipv4', 'ipv6'] as const)
    for (const table of ['filter', 'nat', 'mangle']) {
      await run(tool(family, flavor, ''), ['-t', table, '-F']);
      await run(tool(family, flavor, ''), ['-t', table, '-X']);
    }
}

// ---------------------------------------------------------------------------------------------
// Rich states: every rule shape, every detector, both NodePort modes, IPv4 and IPv6.

const ep = (ip: string, port = 8080, isLocal = false): EndpointTarget => ({ ip, port, isLocal });
const cidr = (address: string, prefixLength: number): Cidr => ({
  family: address.includes(':') ? 'ipv6' : 'ipv4',
  address,
  prefixLength,
});

interface Addresses {
  readonly family: Family;
  /** Service IP n. */
  readonly vip: (n: number) => string;
  /** Pod IP n (on this node when local). */
  readonly pod: (n: number) => string;
  readonly ext: (n: number) => string;
  readonly podCidr: Cidr;
  readonly nodeIP: string;
  readonly nodeNet: Cidr;
  readonly everything: Cidr;
}

const V4: Addresses = {
  family: 'ipv4',
  vip: (n) => `10.96.0.${n}`,
  pod: (n) => `10.244.${n % 2}.${n}`,
  ext: (n) => `198.51.100.${n}`,
  podCidr: cidr('10.244.0.0', 16),
  nodeIP: '192.0.2.1',
  nodeNet: cidr('192.0.2.0', 24),
  everything: cidr('0.0.0.0', 0),
};

const V6: Addresses = {
  family: 'ipv6',
  vip: (n) => `fd00:96::${n.toString(16)}`,
  pod: (n) => `fd00:244:0:${n % 2}::${n.toString(16)}`,
  // Shapes where glibc's inet_ntop matters: one zero group, and the longest run not the first.
  ext: (n) => (n % 2 === 0 ? `2001:db8:0:1:1:1:1:${n.toString(16)}` : `2001:db8:0:0:1::${n.toString(16)}`),
  podCidr: cidr('fd00:244::', 48),
  nodeIP: '2001:db8:ffff::1',
  nodeNet: cidr('2001:db8:ffff::', 64),
  everything: cidr('::', 0),
};

function ports(a: Addresses, variant: 0 | 1): ServicePortState[] {
  const local = (n: number, port = 8080) => ep(a.pod(n), port, true);
  const remote = (n: number, port = 8080) => ep(a.pod(n + 1), port);
  const sp = (
    name: string,
    protocol: ServicePortState['ref']['protocol'],
    portName: string,
    rest: Partial<ServicePortState> & Pick<ServicePortState, 'internal' | 'clusterIP'>,
  ) => servicePort({ ref: { namespace: 'shop', name, portName, protocol }, key: `shop/${name}:${portName}`, ...rest });
  const web = variant === 0 ? [local(2), remote(3), remote(5)] : [remote(3), remote(7), remote(9), remote(11)];
  const out: ServicePortState[] = [
    sp('web', 'TCP', 'http', {
      clusterIP: a.vip(10),
      port: 80,
      nodePort: 30080,
      externalIPs: [a.ext(2), a.ext(3)],
      affinityTimeoutSeconds: variant === 0 ? 10800 : 60,
      internal: { kind: 'cluster', endpoints: web as [EndpointTarget, ...EndpointTarget[]] },
      external: { kind: 'cluster', endpoints: web as [EndpointTarget, ...EndpointTarget[]] },
    }),
    sp('dns', 'UDP', '', {
      clusterIP: a.vip(53),
      port: 53,
      internal: { kind: 'cluster', endpoints: [remote(13, 53), remote(15, 53)] },
    }),
    sp('dns', 'TCP', 'tcp', {
      clusterIP: a.vip(53),
      port: 53,
      internal: { kind: 'cluster', endpoints: [remote(13, 53)] },
    }),
    sp('signal', 'SCTP', 'sctp', {
      clusterIP: a.vip(30),
      port: 3868,
      nodePort: 30868,
      internal: { kind: 'cluster', endpoints: [remote(17, 3868)] },
      external: { kind: 'cluster', endpoints: [remote(17, 3868)] },
    }),
    sp('lb', 'TCP', 'https', {
      clusterIP: a.vip(40),
      port: 443,
      nodePort: 30443,
      loadBalancerIPs: [a.ext(40)],
      loadBalancerSourceRanges:
        variant === 0
          ? [a.nodeNet, cidr(a.family === 'ipv4' ? '203.0.113.0' : '2001:db8:5::', a.family === 'ipv4' ? 25 : 48)]
          : [a.everything],
      internal: { kind: 'local', endpoints: [local(20, 8443)] },
      external: { kind: 'local', local: [local(20, 8443)], cluster: [local(20, 8443), remote(21, 8443)] },
      healthCheckNodePort: 32443,
      localEndpointCount: 1,
    }),
    sp('edge', 'TCP', 'http', {
      clusterIP: a.vip(41),
      port: 80,
      nodePort: 30081,
      externalIPs: [a.ext(41)],
      loadBalancerIPs: [a.ext(42)],
      internal: { kind: 'cluster', endpoints: [remote(23)] },
      external: { kind: 'local', local: [], cluster: [remote(23)] },
      healthCheckNodePort: 32081,
    }),
    sp('quiet', 'TCP', 'http', { clusterIP: a.vip(50), internal: { kind: 'drop' } }),
    sp('gone', 'UDP', 'syslog', {
      clusterIP: a.vip(51),
      port: 514,
      nodePort: 30514,
      externalIPs: [a.ext(51)],
      loadBalancerIPs: [a.ext(52)],
      loadBalancerSourceRanges: [a.nodeNet],
      internal: { kind: 'reject' },
      external: { kind: 'reject' },
    }),
  ];
  if (variant === 1) {
    // One Service gone, one new with a long ladder.
    out.splice(1, 1);
    const many = [1, 2, 3, 4, 5, 6, 7].map((n) => remote(30 + 2 * n));
    out.push(
      sp('many', 'TCP', 'http', {
        clusterIP: a.vip(60),
        internal: { kind: 'cluster', endpoints: many as [EndpointTarget, ...EndpointTarget[]] },
      }),
    );
  }
  return out.sort((x, y) => (x.key < y.key ? -1 : 1));
}

interface Case {
  readonly label: string;
  readonly state: NodeState;
  readonly options: IptablesOptions;
}

function cases(a: Addresses): Case[] {
  const base = {
    family: a.family,
    nodeName: 'node-a',
    nodeIPs: [a.nodeIP],
    serviceCIDRs: [],
    masqueradeAll: false,
    masqueradeMark: 0x4000,
  } as const;
  return [
    {
      label: 'ClusterCIDR detector, NodePorts on every local address',
      state: {
        ...base,
        servicePorts: ports(a, 0),
        localDetector: { kind: 'cidrs', cidrs: [a.podCidr] },
        nodePortDestinations: { kind: 'allLocal' },
      },
      options: { localhostNodePorts: true, dropInvalid: true },
    },
    {
      label: 'changed Services, bridge detector, NodePort CIDRs with loopback excluded, mark 0x8000',
      state: {
        ...base,
        servicePorts: ports(a, 1),
        localDetector: { kind: 'bridgeInterface', interfaceName: 'cbr0' },
        nodePortDestinations: {
          kind: 'cidrs',
          cidrs: [a.nodeNet, a.family === 'ipv4' ? cidr('127.0.0.0', 8) : cidr('::1', 128)],
        },
        masqueradeMark: 0x8000,
      },
      options: { localhostNodePorts: false, dropInvalid: false },
    },
    {
      label: 'interface-prefix detector, masqueradeAll, NodePorts on 0.0.0.0/0',
      state: {
        ...base,
        servicePorts: ports(a, 0),
        localDetector: { kind: 'interfacePrefix', prefix: 'veth' },
        nodePortDestinations: { kind: 'cidrs', cidrs: [a.everything] },
        masqueradeAll: true,
      },
      options: { localhostNodePorts: true, dropInvalid: true },
    },
    {
      label: 'no detector, NodePorts on the node IP',
      state: {
        ...base,
        servicePorts: ports(a, 1),
        localDetector: { kind: 'none' },
        nodePortDestinations: { kind: 'cidrs', cidrs: [cidr(a.nodeIP, a.family === 'ipv4' ? 32 : 128)] },
      },
      options: { localhostNodePorts: true, dropInvalid: true },
    },
    {
      label: 'every Service deleted',
      state: {
        ...base,
        servicePorts: [],
        localDetector: { kind: 'cidrs', cidrs: [a.podCidr] },
        nodePortDestinations: { kind: 'allLocal' },
      },
      options: { localhostNodePorts: true, dropInvalid: true },
    },
  ];
}

const render = (c: Case): IptRuleset => {
  const { ruleset, problems } = renderIptables(c.state, c.options);
  expect(problems).toEqual([]);
  return ruleset;
};

// ---------------------------------------------------------------------------------------------

beforeAll(async () => {
  await execa('ip', ['netns', 'add', NS]);
});

afterAll(async () => {
  await execa('ip', ['netns', 'del', NS], { reject: false });
});

for (const flavor of FLAVORS) {
  describe(`iptables-${flavor}: the canonical text round-trips`, () => {
    for (const a of [V4, V6]) {
      it(`${a.family}: every state loads, saves back identically, and the next full plan writes only the difference`, async () => {
        await clean(flavor);
        // Someone else's rules in built-in and own chains: kproxy leaves them alone.
        const foreign = `*filter\n:OTHER - [0:0]\n-A INPUT -j OTHER\n-A OTHER -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n`;
        await restore(a.family, flavor, foreign);
        const list = cases(a);
        for (const [i, c] of list.entries()) {
          const desired = render(c);
          const before = await save(a.family, flavor);
          const plan = planSync(desired, before, 'all-differing');
          expect(plan.changes, c.label).toBeGreaterThan(0);
          if (i === 0) expect(plan.jumpsAdded).toBe(desired.jumps.length);
          else expect(plan.chainsWritten, c.label).toBeLessThan(desired.chains.length);
          await restore(a.family, flavor, plan.text);
          const after = await save(a.family, flavor);
          const again = planSync(desired, after, 'all-differing');
          if (again.changes !== 0) {
            // Show what differs: the desired rule next to what iptables-save printed.
            const diffs = desired.chains.flatMap((ch) => {
              const have = after.get(ch.table)?.get(ch.name) ?? [];
              return ch.rules.flatMap((r, k) =>
                have[k] === r ? [] : [`${ch.table} ${ch.name}\n  want ${r}\n  have ${have[k]}`],
              );
            });
            expect(diffs, c.label).toEqual([]);
          }
          expect(again, c.label).toMatchObject({ changes: 0, text: '' });
          // Every jump exactly once, in the listed order; no stale per-service chain.
          for (const j of desired.jumps) {
            const rules = after.get(j.table)?.get(j.chain) ?? [];
            expect(
              rules.filter((r) => r === j.rule),
              `${j.chain} ${j.rule}`,
            ).toHaveLength(1);
          }
          const wanted = new Set(desired.chains.map((ch) => ch.name));
          const stale = [...(after.get('nat')?.keys() ?? [])].filter((n) => isKproxyServiceChain(n) && !wanted.has(n));
          expect(stale, c.label).toEqual([]);
          expect(after.get('filter')?.get('OTHER')).toEqual(['-p tcp -m tcp --dport 22 -j ACCEPT']);
          expect(after.get('filter')?.get('INPUT')).toContain('-j OTHER');
        }
        // Inserted one by one at the top, the jumps of a fresh load end up in the listed order.
        const first = render(list[0] as Case);
        await clean(flavor);
        await restore(a.family, flavor, planSync(first, await save(a.family, flavor), 'all-differing').text);
        const fresh = await save(a.family, flavor);
        for (const chain of ['INPUT', 'FORWARD', 'OUTPUT'])
          expect(fresh.get('filter')?.get(chain)).toEqual(
            first.jumps.filter((j) => j.table === 'filter' && j.chain === chain).map((j) => j.rule),
          );
      });

      it(`${a.family}: a partial plan (named chains, named stale chains) lands on the same rules as a full one`, async () => {
        await clean(flavor);
        const [from, to] = cases(a) as [Case, Case, ...Case[]];
        const old = render({ ...to, state: { ...to.state, servicePorts: from.state.servicePorts } });
        await restore(a.family, flavor, planSync(old, await save(a.family, flavor), 'all-differing').text);
        const next = render(to);
        const oldChains = new Map(old.chains.map((c) => [c.name, c.rules.join('\n')]));
        const chains = new Set(
          next.chains
            .filter((c) => !isKproxyServiceChain(c.name) || oldChains.get(c.name) !== c.rules.join('\n'))
            .map((c) => c.name),
        );
        const names = new Set(next.chains.map((c) => c.name));
        const deleteChains = new Set([...oldChains.keys()].filter((n) => isKproxyServiceChain(n) && !names.has(n)));
        expect(deleteChains.size).toBeGreaterThan(0);
        const plan = planSync(next, undefined, { chains, deleteChains });
        await restore(a.family, flavor, plan.text);
        expect(planSync(next, await save(a.family, flavor), 'all-differing')).toMatchObject({ changes: 0 });
      });

      it(`${a.family}: ${a.family === 'ipv4' ? 'iptables' : 'ip6tables'}-restore --test accepts the dump's section`, async () => {
        for (const c of cases(a)) {
          const text = dumpText([render(c)]);
          expect(text.split('\n')[0]).toBe(
            a.family === 'ipv4' ? '# IPv4 (iptables-restore)' : '# IPv6 (ip6tables-restore)',
          );
          await run(tool(a.family, flavor, 'restore'), ['--test'], text);
        }
      });
    }
  });
}
