/**
 * The ctnetlink channel (`kernel/ctnetlink.ts` in the spawner's child, `kernel/ctnetlink-client.ts`)
 * against the real kernel, in a `kpct-*` sandbox: a client sends UDP to a "Service" address the
 * node DNATs to pod a; the channel lists those flows as `conntrack -L` does (IPv4 and IPv6, with the
 * kernel's ids), deletes exactly the one it is asked to and leaves the others, refuses a wrong id
 * or an entry re-created since the listing, and refuses invalid input before it reaches the kernel.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listConntrackEntries, cleanupStaleConntrack } from '../../src/kernel/conntrack.ts';
import { ctnetlinkOver, type CtnetlinkClient } from '../../src/kernel/ctnetlink-client.ts';
import { startSpawner, type Spawner } from '../../src/kernel/spawner.ts';
import { inNetns } from '../../src/kernel/exec.ts';
import type { ConntrackEntry } from '../../src/model/conntrack-plan.ts';
import type { NodeState } from '../../src/model/node-state.ts';
import { createTopology, type Topology } from '../../src/sandbox/topology.ts';
import { bareState, udpServicePort } from '../support/states.ts';

const isRoot = process.getuid?.() === 0;
const VIP = { ipv4: '10.96.0.53', ipv6: 'fd00:96::53' } as const;
const PORT = 53;

describe.skipIf(!isRoot)('ctnetlink channel (kernel)', () => {
  let topo: Topology;
  let ct: CtnetlinkClient;
  let spawner: Spawner;

  beforeAll(async () => {
    topo = await createTopology({
      pods: [{ name: 'a' }, { name: 'b' }],
      clients: [{ name: 'ext' }],
      tcpPorts: [8080],
      udpPorts: [PORT],
      namePrefix: 'kpct-',
    });
    spawner = startSpawner(['ip', 'netns', 'exec', topo.node.ns]);
    ct = ctnetlinkOver(spawner.call);
  }, 60_000);

  afterAll(async () => {
    ct?.close();
    spawner?.stop();
    await topo?.destroy();
  });

  /** DNAT of the VIPs to one pod; `ct state new` keeps conntrack on in the namespace. */
  const rules = (pod: string) => {
    const p = topo.pod(pod);
    return `table inet kpct {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr ${VIP.ipv4} udp dport ${PORT} dnat ip to ${p.v4}
    ip6 daddr ${VIP.ipv6} udp dport ${PORT} dnat ip6 to ${p.v6}
  }
  chain filter_fwd {
    type filter hook forward priority filter; policy accept;
    ct state new counter
  }
}
`;
  };
  const send = async (family: 'ipv4' | 'ipv6', sourcePort: number) =>
    topo.probe(topo.client(), { proto: 'udp', host: VIP[family], port: PORT, sourcePort });
  const toolList = async (family: 'ipv4' | 'ipv6') =>
    (await listConntrackEntries(inNetns(topo.node.ns), family)).entries.filter((e) => e.original.dst === VIP[family]);
  const ours = (entries: readonly ConntrackEntry[], family: 'ipv4' | 'ipv6') =>
    entries.filter((e) => e.original.dst === VIP[family]);
  const key = (e: ConntrackEntry) =>
    `${e.original.src}:${e.original.sport}>${e.original.dst}:${e.original.dport}|${e.reply.src}:${e.reply.sport}`;

  it('loads the library in the node namespace', async () => {
    expect(await ct.ready).toBeUndefined();
    expect(ct.available()).toBe(true);
  });

  it.each(['ipv4', 'ipv6'] as const)(
    '%s: lists as conntrack -L does, deletes exactly one by tuple and id',
    async (family) => {
      await topo.loadRuleset(rules('a'));
      for (const sport of [41001, 41002, 41003])
        expect(await send(family, sport)).toMatchObject({ kind: 'answered', pod: 'a' });

      const listed = ours((await ct.list(family, 'UDP')).entries, family);
      expect(listed.map(key).sort()).toEqual((await toolList(family)).map(key).sort());
      expect(listed).toHaveLength(3);
      for (const e of listed) {
        expect(e.reply.src).toBe(family === 'ipv4' ? topo.pod('a').v4 : topo.pod('a').v6);
        expect(e.id).toEqual(expect.any(Number));
      }
      const [victim] = listed.filter((e) => e.original.sport === 41002) as [ConntrackEntry];

      // A wrong id: the kernel leaves the entry alone.
      expect(await ct.destroy([{ ...victim, id: ((victim.id as number) + 1) >>> 0 }])).toEqual({
        deleted: 0,
        missing: 1,
        errors: [],
      });
      expect(ours((await ct.list(family, 'UDP')).entries, family)).toHaveLength(3);

      const t0 = performance.now();
      expect(await ct.destroy([victim])).toEqual({ deleted: 1, missing: 0, errors: [] });
      const ms = performance.now() - t0;
      console.log(
        `ctnetlink ${family}: one exact deletion answered in ${ms.toFixed(2)} ms (round trip through the child)`,
      );
      const left = (await toolList(family)).map((e) => e.original.sport).sort();
      expect(left).toEqual([41001, 41003]);
    },
  );

  it('leaves alone an entry re-created since the listing (same tuple, new id)', async () => {
    await topo.loadRuleset(rules('a'));
    expect(await send('ipv4', 41010)).toMatchObject({ kind: 'answered', pod: 'a' });
    const [old] = ours((await ct.list('ipv4', 'UDP')).entries, 'ipv4').filter((e) => e.original.sport === 41010);
    expect(old).toBeDefined();
    // The flow is deleted behind the channel's back, the rules now send it to b, and it comes back.
    expect(await ct.destroy([old as ConntrackEntry])).toMatchObject({ deleted: 1 });
    await topo.loadRuleset(rules('b'));
    expect(await send('ipv4', 41010)).toMatchObject({ kind: 'answered', pod: 'b' });

    expect(await ct.destroy([old as ConntrackEntry])).toEqual({ deleted: 0, missing: 1, errors: [] });
    const now = (await toolList('ipv4')).filter((e) => e.original.sport === 41010);
    expect(now.map((e) => e.reply.src)).toEqual([topo.pod('b').v4]);
  });

  it('refuses invalid input before it reaches the kernel', async () => {
    const bad = (over: Partial<ConntrackEntry['original']>, extra: Partial<ConntrackEntry> = {}): ConntrackEntry => ({
      family: 'ipv4',
      protocol: 'UDP',
      original: { src: '192.0.2.2', dst: VIP.ipv4, sport: 1, dport: PORT, ...over },
      reply: { src: '10.244.0.2', dst: '192.0.2.2', sport: PORT, dport: 1 },
      ...extra,
    });
    const r = await ct.destroy([
      bad({ src: '10.0.0.1; reboot' }),
      bad({ dst: VIP.ipv6 }),
      bad({ sport: 70000 }),
      bad({}, { id: -1 }),
      bad({}, { protocol: 'TCP' as never }),
      bad({}, { family: 'ipx' as never }),
    ]);
    expect(r.deleted).toBe(0);
    expect(r.errors).toHaveLength(6);
    await expect(ct.list('ipx' as never, 'UDP')).rejects.toThrow(/invalid/);
  });

  it('runs the stale-flow cleanup by exact tuple: an endpoint swap moves the flow', async () => {
    // Earlier cases' flows go first (they would be stale too).
    await ct.destroy(ours((await ct.list('ipv4', 'UDP')).entries, 'ipv4'));
    await topo.loadRuleset(rules('a'));
    expect(await send('ipv4', 41020)).toMatchObject({ kind: 'answered', pod: 'a' });
    await topo.loadRuleset(rules('b'));
    expect(await send('ipv4', 41020)).toMatchObject({ kind: 'answered', pod: 'a' });

    const sp = udpServicePort(VIP.ipv4, PORT, { ip: topo.pod('b').v4, port: PORT, isLocal: false });
    const state: NodeState = bareState([sp], 'ipv4', 'node');
    // The tool path must not be taken: a runner that fails every call.
    const refuse = async () => ({ exitCode: 1, stdout: '', stderr: 'the tool must not run' });
    const r = await cleanupStaleConntrack(refuse, { state, table: ct });
    expect(r).toMatchObject({ deleted: 1, failedDeletions: 0 });
    expect(r.stale['endpoint-gone']).toBe(1);
    expect(await send('ipv4', 41020)).toMatchObject({ kind: 'answered', pod: 'b' });
  });
});
