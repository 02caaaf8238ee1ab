/**
 * Stale UDP conntrack cleanup against the real kernel. Three namespaces per family:
 *
 *   client ──veth── node (forwards, nft DNAT for the "Service", conntrack lives here) ──veth── server
 *                                                                        (endpoint A and endpoint B)
 *
 * A client that keeps its source port keeps following its conntrack entry whatever the rules say
 * now; each case shows that first (the datagram still goes the old way), then runs the cleanup and
 * shows the next datagram from the same port goes the new way.
 */
import { bareState } from '../support/states.ts';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import type { Family } from '../../src/model/cluster.ts';
import type { EndpointTarget, NodeState, ServicePortState } from '../../src/model/node-state.ts';
import { cleanupStaleConntrack, listConntrackEntries } from '../../src/kernel/conntrack.ts';
import { execProgram, type Exec } from '../../src/kernel/exec.ts';

interface Plan {
  readonly family: Family;
  readonly nft: 'ip' | 'ip6';
  readonly prefix: string;
  readonly client: string;
  readonly nodeClientSide: string;
  readonly nodeServerSide: string;
  readonly epA: string;
  readonly epB: string;
  readonly vip: string;
  readonly vipNet: string;
  readonly bracket: (ip: string) => string;
}

const PLANS: readonly Plan[] = [
  {
    family: 'ipv4',
    nft: 'ip',
    prefix: '24',
    client: '10.200.0.2',
    nodeClientSide: '10.200.0.1',
    nodeServerSide: '10.201.0.1',
    epA: '10.201.0.2',
    epB: '10.201.0.3',
    vip: '10.96.0.10',
    vipNet: '10.96.0.0/16',
    bracket: (ip) => ip,
  },
  {
    family: 'ipv6',
    nft: 'ip6',
    prefix: '64',
    client: 'fd00:200::2',
    nodeClientSide: 'fd00:200::1',
    nodeServerSide: 'fd00:201::1',
    epA: 'fd00:201::2',
    epB: 'fd00:201::3',
    vip: 'fd00:96::10',
    vipNet: 'fd00:96::/64',
    bracket: (ip) => `[${ip}]`,
  },
];

const SVC_PORT = 53;
const EP_PORT = 5353;

/** Receives on both endpoints; one JSON line per datagram. */
const SERVER = `
const dgram = require('node:dgram');
const [type, ...addrs] = process.argv.slice(1);
let bound = 0;
for (const address of addrs) {
  const s = dgram.createSocket(type);
  s.on('message', (msg, rinfo) => {
    process.stdout.write(JSON.stringify({ to: address, from: rinfo.address, port: rinfo.port, msg: msg.toString() }) + '\\n');
  });
  s.bind(${EP_PORT}, address, () => { if (++bound === addrs.length) process.stdout.write('ready\\n'); });
}
`;

/** Sends one datagram from a fixed source address and port. */
const CLIENT = `
const dgram = require('node:dgram');
const [type, src, sport, dst, dport, msg] = process.argv.slice(1);
const s = dgram.createSocket(type);
s.bind(Number(sport), src, () => s.send(msg, Number(dport), dst, (err) => { s.close(); if (err) { console.error(err); process.exit(1); } }));
`;

const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot).each(PLANS)('stale UDP conntrack cleanup ($family)', (p) => {
  const tag = `kpct${process.pid}${randomBytes(3).toString('hex')}`;
  const ns = { client: `${tag}-c`, node: `${tag}-n`, server: `${tag}-s` };
  const created: string[] = [];
  let server: ResultPromise | undefined;
  const received: { to: string; msg: string }[] = [];
  const dgramType = p.family === 'ipv4' ? 'udp4' : 'udp6';
  /** conntrack runs in the node namespace. */
  const nodeRun: Exec = (command, args) => execProgram('ip', ['netns', 'exec', ns.node, command, ...args]);
  let seq = 0;

  const ip = (...args: string[]) => execa('ip', args);
  const inNs = (name: string, cmd: string, args: string[]) => execa('ip', ['netns', 'exec', name, cmd, ...args]);

  beforeAll(async () => {
    for (const name of Object.values(ns)) {
      await ip('netns', 'add', name);
      created.push(name);
      await ip('-n', name, 'link', 'set', 'lo', 'up');
      // No duplicate address detection, link-local addresses included: the first datagram would
      // otherwise be lost while neighbour discovery waits for it.
      if (p.family === 'ipv6') {
        await inNs(name, 'sysctl', [
          '-q',
          '-w',
          'net.ipv6.conf.all.accept_dad=0',
          'net.ipv6.conf.default.accept_dad=0',
        ]);
      }
    }
    await ip('-n', ns.node, 'link', 'add', 'nc0', 'type', 'veth', 'peer', 'name', 'cli0', 'netns', ns.client);
    await ip('-n', ns.node, 'link', 'add', 'ns0', 'type', 'veth', 'peer', 'name', 'srv0', 'netns', ns.server);
    const v6 = p.family === 'ipv6' ? ['nodad'] : [];
    const addr = (name: string, dev: string, a: string) =>
      ip('-n', name, 'addr', 'add', `${a}/${p.prefix}`, 'dev', dev, ...v6);
    await addr(ns.client, 'cli0', p.client);
    await addr(ns.node, 'nc0', p.nodeClientSide);
    await addr(ns.node, 'ns0', p.nodeServerSide);
    await addr(ns.server, 'srv0', p.epA);
    await addr(ns.server, 'srv0', p.epB);
    for (const [name, dev] of [
      [ns.client, 'cli0'],
      [ns.node, 'nc0'],
      [ns.node, 'ns0'],
      [ns.server, 'srv0'],
    ] as const) {
      await ip('-n', name, 'link', 'set', dev, 'up');
    }
    const fam = p.family === 'ipv4' ? '-4' : '-6';
    await ip(fam, '-n', ns.client, 'route', 'add', 'default', 'via', p.nodeClientSide);
    await ip(fam, '-n', ns.server, 'route', 'add', 'default', 'via', p.nodeServerSide);
    // Service addresses without a DNAT rule get forwarded to the server namespace, which does not
    // own them and drops them: a flow that was never DNATed gets a confirmed conntrack entry.
    await ip(fam, '-n', ns.node, 'route', 'add', p.vipNet, 'via', p.epA);
    await inNs(ns.node, 'sysctl', [
      '-q',
      '-w',
      p.family === 'ipv4' ? 'net.ipv4.ip_forward=1' : 'net.ipv6.conf.all.forwarding=1',
    ]);

    server = execa('ip', ['netns', 'exec', ns.server, process.execPath, '-e', SERVER, dgramType, p.epA, p.epB], {
      buffer: false,
      stdin: 'ignore',
    });
    server.catch(() => undefined);
    await new Promise<void>((resolve, reject) => {
      let pending = '';
      server!.stdout!.on('data', (chunk: Buffer) => {
        pending += chunk.toString();
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (line === 'ready') resolve();
          else received.push(JSON.parse(line) as { to: string; msg: string });
        }
      });
      server!.once('exit', (code) => reject(new Error(`server exited early (${code})`)));
    });
  });

  afterAll(async () => {
    server?.kill();
    for (const name of created) await execa('ip', ['netns', 'del', name], { reject: false });
  });

  type Rules = { kind: 'dnat'; to: string } | { kind: 'reject' } | { kind: 'none' };

  /** The node's "Service" rules; like kube-proxy's, NAT applies to new flows only, and so does reject. */
  async function setRules(rules: Rules): Promise<void> {
    const t = `${p.nft} kpct`;
    const match = `${p.nft} daddr ${p.vip} udp dport ${SVC_PORT}`;
    const nat = rules.kind === 'dnat' ? `${match} dnat to ${p.bracket(rules.to)}:${EP_PORT}` : '';
    const reject = rules.kind === 'reject' ? `ct state new ${match} reject` : '';
    const text = [
      `table ${t}`,
      `delete table ${t}`,
      `table ${t} {`,
      `  chain kpre {`,
      `    type nat hook prerouting priority dstnat; policy accept;`,
      `    ${nat}`,
      `  }`,
      `  chain kfwd {`,
      `    type filter hook forward priority filter; policy accept;`,
      // A conntrack match keeps conntrack on in this namespace whatever else the table holds: a NAT
      // chain alone does not, and without tracking old entries would simply be ignored.
      `    ct state new counter`,
      `    ${reject}`,
      `  }`,
      `}`,
      '',
    ].join('\n');
    await execa('ip', ['netns', 'exec', ns.node, 'nft', '-f', '-'], { input: text });
  }

  /** Sends one datagram from `sport` and says which endpoint got it (undefined: none within the wait). */
  async function send(sport: number): Promise<string | undefined> {
    const msg = `m${++seq}`;
    await inNs(ns.client, process.execPath, [
      '-e',
      CLIENT,
      dgramType,
      p.client,
      String(sport),
      p.vip,
      String(SVC_PORT),
      msg,
    ]);
    const deadline = Date.now() + 1500;
    while (Date.now() < deadline) {
      const hit = received.find((r) => r.msg === msg);
      if (hit) return hit.to;
      await new Promise((r) => setTimeout(r, 20));
    }
    return undefined;
  }

  async function flowsFrom(sport: number) {
    const { entries } = await listConntrackEntries(nodeRun, p.family);
    return entries.filter((e) => e.original.sport === sport && e.original.dst === p.vip);
  }

  const ep = (ip: string): EndpointTarget => ({ ip, port: EP_PORT, isLocal: false });

  function state(internal: ServicePortState['internal'] | undefined): NodeState {
    const servicePorts: ServicePortState[] = internal
      ? [
          {
            ref: { namespace: 'default', name: 'dns', portName: 'dns', protocol: 'UDP' },
            key: 'default/dns:dns/UDP',
            clusterIP: p.vip,
            port: SVC_PORT,
            externalIPs: [],
            loadBalancerIPs: [],
            loadBalancerSourceRanges: [],
            internal,
            localEndpointCount: 0,
            servingEndpoints: 'endpoints' in internal ? internal.endpoints : [],
          },
        ]
      : [];
    return bareState(servicePorts, p.family, 'node');
  }

  const localAddresses = [p.nodeClientSide, p.nodeServerSide];

  it('moves a flow off an endpoint that is no longer used', async () => {
    await inNs(ns.node, 'conntrack', ['-F']).catch(() => undefined);
    const sport = 40001;
    await setRules({ kind: 'dnat', to: p.epA });
    expect(await send(sport)).toBe(p.epA);
    expect((await flowsFrom(sport)).map((e) => e.reply.src)).toEqual([p.epA]);

    await setRules({ kind: 'dnat', to: p.epB });
    // Without cleanup the flow sticks to A: this is what the cleanup is for.
    expect(await send(sport)).toBe(p.epA);

    const result = await cleanupStaleConntrack(nodeRun, {
      state: state({ kind: 'cluster', endpoints: [ep(p.epB)] }),
      localAddresses,
    });
    expect(result).toMatchObject({ deletions: 1, deleted: 1, failedDeletions: 0, unparsed: 0 });
    expect(result.stale['endpoint-gone']).toBe(1);
    expect(await send(sport)).toBe(p.epB);

    // Converged: a second run finds nothing to do.
    const again = await cleanupStaleConntrack(nodeRun, {
      state: state({ kind: 'cluster', endpoints: [ep(p.epB)] }),
      localAddresses,
    });
    expect(again).toMatchObject({ deletions: 0, deleted: 0 });
  });

  it('lets a flow created before the rules existed be DNATed once the Service has endpoints', async () => {
    await inNs(ns.node, 'conntrack', ['-F']).catch(() => undefined);
    const sport = 40002;
    await setRules({ kind: 'none' });
    expect(await send(sport)).toBeUndefined();
    expect((await flowsFrom(sport)).map((e) => e.reply.src)).toEqual([p.vip]);

    await setRules({ kind: 'dnat', to: p.epB });
    expect(await send(sport)).toBeUndefined();

    // While the Service has no endpoints, the undnated entry is left alone.
    const early = await cleanupStaleConntrack(nodeRun, { state: state({ kind: 'reject' }), localAddresses });
    expect(early).toMatchObject({ deletions: 0, deleted: 0 });

    const result = await cleanupStaleConntrack(nodeRun, {
      state: state({ kind: 'cluster', endpoints: [ep(p.epB)] }),
      localAddresses,
    });
    expect(result).toMatchObject({ deletions: 1, deleted: 1 });
    expect(result.stale['not-dnated']).toBe(1);
    expect(await send(sport)).toBe(p.epB);
  });

  it('stops a flow to a Service scaled to zero (upstream issue 139628)', async () => {
    await inNs(ns.node, 'conntrack', ['-F']).catch(() => undefined);
    const sport = 40003;
    await setRules({ kind: 'dnat', to: p.epA });
    expect(await send(sport)).toBe(p.epA);

    await setRules({ kind: 'reject' });
    expect(await send(sport)).toBe(p.epA);

    const result = await cleanupStaleConntrack(nodeRun, { state: state({ kind: 'reject' }), localAddresses });
    expect(result).toMatchObject({ deletions: 1, deleted: 1 });
    expect(result.stale['no-endpoints']).toBe(1);
    expect(await send(sport)).toBeUndefined();
    expect(await flowsFrom(sport)).toEqual([]);
  });

  it('stops a flow to a deleted Service, given the previous state', async () => {
    await inNs(ns.node, 'conntrack', ['-F']).catch(() => undefined);
    const sport = 40004;
    const before = state({ kind: 'cluster', endpoints: [ep(p.epA)] });
    await setRules({ kind: 'dnat', to: p.epA });
    expect(await send(sport)).toBe(p.epA);

    await setRules({ kind: 'none' });
    expect(await send(sport)).toBe(p.epA);

    const blind = await cleanupStaleConntrack(nodeRun, { state: state(undefined), localAddresses });
    expect(blind).toMatchObject({ deletions: 0, deleted: 0 });
    expect(await send(sport)).toBe(p.epA);

    const result = await cleanupStaleConntrack(nodeRun, { state: state(undefined), previous: before, localAddresses });
    expect(result).toMatchObject({ deletions: 1, deleted: 1 });
    expect(result.stale['service-gone']).toBe(1);
    expect(await send(sport)).toBeUndefined();
  });
});
