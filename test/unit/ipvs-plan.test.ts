/**
 * IPVS mode's plan (pure): the batch order that never leaves traffic without a destination,
 * ownership (only kproxy's virtual servers are deleted, never one in excludeCIDRs), graceful
 * drain as a state machine over an injected clock, kube-ipvs0's address changes, the helper
 * table's two transactions around the batch, and stable firewall marks.
 */
import { describe, expect, it } from 'vitest';
import { allocateFwmarks } from '../../src/backends/ipvs/render/fwmarks.ts';
import { elementFromText, observedOf, ownershipOf, planHelper } from '../../src/backends/ipvs/render/helper-plan.ts';
import type { DesiredVirtualServer } from '../../src/backends/ipvs/render/layout.ts';
import { parseIpvsSave, type ConnectionCounts } from '../../src/backends/ipvs/render/observed.ts';
import { drainKey, planAddresses, planIpvs, type IpvsPlanInput } from '../../src/backends/ipvs/render/plan.ts';
import { keyText, type VirtualServerKey } from '../../src/backends/ipvs/render/syntax.ts';
import type { Ruleset } from '../../src/backends/nftables/render/ruleset.ts';
import { element, value } from '../../src/backends/nftables/render/syntax.ts';
import type { Protocol } from '../../src/model/cluster.ts';
import type { ServicePortState } from '../../src/model/node-state.ts';

const key = (protocol: Protocol, ip: string, port: number): VirtualServerKey => ({
  kind: 'address',
  protocol,
  ip,
  port,
});

function desired(
  ...list: [VirtualServerKey, string[], Partial<DesiredVirtualServer['vs']>?][]
): Map<string, DesiredVirtualServer> {
  return new Map(
    list.map(([k, servers, extra]) => [
      keyText(k),
      {
        vs: { key: k, scheduler: 'rr', flags: [], ...extra },
        realServers: servers.map((s) => {
          const [ip, port] = s.split(':');
          return { ip: ip ?? '', port: Number(port), weight: 1 };
        }),
        servicePort: 'ns/svc:p',
        protocol: k.kind === 'address' ? k.protocol : 'TCP',
      },
    ]),
  );
}

const CIP = key('TCP', '10.96.0.10', 80);
const DNS = key('UDP', '10.96.0.53', 53);

function input(over: Partial<IpvsPlanInput> & Pick<IpvsPlanInput, 'desired' | 'observed'>): IpvsPlanInput {
  return {
    owned: new Set([keyText(CIP), keyText(DNS)]),
    excluded: () => false,
    draining: new Map(),
    now: 1_000_000,
    drainTimeoutMs: 60_000,
    ...over,
  };
}

function counts(entries: Record<string, Record<string, [number, number]>>): ConnectionCounts {
  return new Map(
    Object.entries(entries).map(([k, servers]) => [
      k,
      new Map(Object.entries(servers).map(([hp, [active, inactive]]) => [hp, { active, inactive }])),
    ]),
  );
}

describe('planIpvs: order and ownership', () => {
  it('an empty kernel: services first, then their real servers', () => {
    const p = planIpvs(
      input({
        desired: desired([CIP, ['10.244.0.11:8080', '10.244.0.12:8080']], [DNS, []]),
        observed: parseIpvsSave(''),
      }),
    );
    expect(p.lines).toEqual([
      '-A -t 10.96.0.10:80 -s rr',
      '-A -u 10.96.0.53:53 -s rr',
      '-a -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 1',
      '-a -t 10.96.0.10:80 -r 10.244.0.12:8080 -m -w 1',
    ]);
    expect(p.needsConnections).toBe(false);
  });

  it('what already matches gives an empty batch', () => {
    const observed = parseIpvsSave('-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 1\n');
    expect(planIpvs(input({ desired: desired([CIP, ['10.244.0.11:8080']]), observed })).lines).toEqual([]);
  });

  it('new real servers come before the old ones go, and a service goes last', () => {
    const observed = parseIpvsSave(
      [
        '-A -u 10.96.0.53:53 -s rr',
        '-a -u 10.96.0.53:53 -r 10.244.0.11:5353 -m -w 1',
        '-A -t 10.96.0.99:80 -s rr',
        '-a -t 10.96.0.99:80 -r 10.244.0.9:80 -m -w 1',
      ].join('\n'),
    );
    const p = planIpvs(
      input({
        desired: desired([DNS, ['10.244.0.12:5353']], [CIP, ['10.244.0.11:8080']]),
        observed,
        owned: new Set([keyText(DNS), 'TCP/10.96.0.99:80']),
      }),
    );
    expect(p.lines).toEqual([
      '-A -t 10.96.0.10:80 -s rr',
      '-a -u 10.96.0.53:53 -r 10.244.0.12:5353 -m -w 1',
      '-a -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 1',
      // UDP: no draining.
      '-d -u 10.96.0.53:53 -r 10.244.0.11:5353',
      '-D -t 10.96.0.99:80',
    ]);
    expect(p.deleted).toEqual(['TCP/10.96.0.99:80']);
  });

  it('never deletes a virtual server it does not own, nor one of its own inside excludeCIDRs', () => {
    const observed = parseIpvsSave('-A -t 192.0.2.50:80 -s wrr\n-A -t 10.1.0.1:80 -s rr\n-A -f 7 -s rr\n');
    const p = planIpvs(
      input({
        desired: new Map(),
        observed,
        owned: new Set(['TCP/10.1.0.1:80']),
        excluded: (k) => k.kind === 'address' && k.ip.startsWith('10.1.'),
      }),
    );
    expect(p.lines).toEqual([]);
  });

  it('takes over a desired virtual server someone else created, fixing its scheduler, persistence and servers', () => {
    const observed = parseIpvsSave(
      '-A -t 10.96.0.10:80 -s wlc -p 300 -M 255.255.255.0\n-a -t 10.96.0.10:80 -r 10.244.0.11:8080 -g -w 5 -x 10\n',
    );
    const p = planIpvs(input({ desired: desired([CIP, ['10.244.0.11:8080']]), observed, owned: new Set() }));
    expect(p.adopted).toEqual(['TCP/10.96.0.10:80']);
    expect(p.lines).toEqual(['-E -t 10.96.0.10:80 -s rr', '-e -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 1']);
  });

  it('changes scheduler, mh flags and persistence in place', () => {
    const observed = parseIpvsSave('-A -t 10.96.0.10:80 -s rr\n');
    const p = planIpvs(
      input({ desired: desired([CIP, [], { scheduler: 'mh', flags: ['mh-port'], persistence: 600 }]), observed }),
    );
    expect(p.lines).toEqual(['-E -t 10.96.0.10:80 -s mh -b mh-port -p 600']);
  });
});

describe('planIpvs: graceful drain', () => {
  const observed = parseIpvsSave(
    '-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 1\n-a -t 10.96.0.10:80 -r 10.244.0.12:8080 -m -w 1\n',
  );
  const want = desired([CIP, ['10.244.0.12:8080']]);
  const dk = drainKey('TCP/10.96.0.10:80', { ip: '10.244.0.11', port: 8080 });

  it('asks for connection counts before a TCP real server goes', () => {
    const p = planIpvs(input({ desired: want, observed }));
    expect(p.needsConnections).toBe(true);
    expect(p.lines).toEqual([]);
  });

  it('deleted at once when it has no connection', () => {
    const p = planIpvs(input({ desired: want, observed, connections: counts({}) }));
    expect(p.lines).toEqual(['-d -t 10.96.0.10:80 -r 10.244.0.11:8080']);
    expect(p.draining.size).toBe(0);
  });

  it('with connections: weight 0, draining since now; kept while they last; deleted when they end', () => {
    const busy = counts({ 'TCP/10.96.0.10:80': { '10.244.0.11:8080': [1, 0] } });
    const first = planIpvs(input({ desired: want, observed, connections: busy, now: 5_000 }));
    expect(first.lines).toEqual(['-e -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 0']);
    expect([...first.draining]).toEqual([[dk, 5_000]]);

    const drained = parseIpvsSave(
      '-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 0\n-a -t 10.96.0.10:80 -r 10.244.0.12:8080 -m -w 1\n',
    );
    const still = counts({ 'TCP/10.96.0.10:80': { '10.244.0.11:8080': [0, 2] } });
    const later = planIpvs(
      input({ desired: want, observed: drained, connections: still, draining: first.draining, now: 30_000 }),
    );
    expect(later.lines).toEqual([]);
    expect([...later.draining]).toEqual([[dk, 5_000]]);

    const done = planIpvs(
      input({ desired: want, observed: drained, connections: counts({}), draining: later.draining, now: 31_000 }),
    );
    expect(done.lines).toEqual(['-d -t 10.96.0.10:80 -r 10.244.0.11:8080']);
    expect(done.draining.size).toBe(0);
  });

  it('bounded: deleted at the drain timeout even with connections', () => {
    const drained = parseIpvsSave('-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 0\n');
    const busy = counts({ 'TCP/10.96.0.10:80': { '10.244.0.11:8080': [3, 0] } });
    const args = { desired: desired([CIP, []]), observed: drained, connections: busy, draining: new Map([[dk, 0]]) };
    expect(planIpvs(input({ ...args, now: 59_999 })).lines).toEqual([]);
    expect(planIpvs(input({ ...args, now: 60_000 })).lines).toEqual(['-d -t 10.96.0.10:80 -r 10.244.0.11:8080']);
  });

  it('a drained real server seen at start drains from then on', () => {
    const drained = parseIpvsSave('-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 0\n');
    const busy = counts({ 'TCP/10.96.0.10:80': { '10.244.0.11:8080': [1, 0] } });
    const p = planIpvs(input({ desired: desired([CIP, []]), observed: drained, connections: busy, now: 7 }));
    expect(p.lines).toEqual([]);
    expect([...p.draining]).toEqual([[dk, 7]]);
  });

  it('an endpoint that comes back while draining gets its weight back (its connections stay)', () => {
    const drained = parseIpvsSave('-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 0\n');
    const p = planIpvs(
      input({ desired: desired([CIP, ['10.244.0.11:8080']]), observed: drained, draining: new Map([[dk, 0]]) }),
    );
    expect(p.lines).toEqual(['-e -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 1']);
    expect(p.draining.size).toBe(0);
  });

  it('a deleted service takes its real servers along, without draining', () => {
    const p = planIpvs(input({ desired: new Map(), observed }));
    expect(p.lines).toEqual(['-D -t 10.96.0.10:80']);
    expect(p.needsConnections).toBe(false);
  });
});

describe('planAddresses', () => {
  it('adds missing addresses; removes unused ones only when no virtual server is left on them', () => {
    const observed = parseIpvsSave('-A -t 10.96.0.10:80 -s rr\n-A -t 10.96.0.11:80 -s rr\n-A -t 10.96.0.12:80 -s rr\n');
    const p = planAddresses(
      new Set(['10.96.0.10', '10.96.0.20']),
      new Set(['10.96.0.10', '10.96.0.11', '10.96.0.12']),
      observed,
      new Set(['TCP/10.96.0.11:80']),
    );
    // 10.96.0.12 keeps a virtual server (someone else's): its address stays.
    expect(p).toEqual({ add: ['10.96.0.20'], remove: ['10.96.0.11'] });
  });
});

describe('planHelper: two transactions around the batch', () => {
  const spec = (name: string, verdictMap = false) => ({
    name,
    keyType: ['ipv4_addr', 'inet_proto', 'inet_service'],
    verdictMap,
    flags: [],
  });
  const frontend = (ip: string) => value.concat([value.ip(ip), value.protocol('TCP'), value.port(80)]);
  const ruleset = (owned: string[], rejects: [string, 'drop' | 'reject'][]): Ruleset => ({
    family: 'ip',
    table: 'kproxy-ipvs',
    chains: [{ name: 'reject-chain', rules: [{ statements: [{ text: 'reject', json: { reject: null } }] }] }],
    sets: [
      { spec: spec('virtual-servers'), elements: owned.map((ip) => element.set(frontend(ip))) },
      {
        spec: spec('no-endpoint-services', true),
        elements: rejects.map(([ip, v]) =>
          element.vmap(frontend(ip), v === 'drop' ? { kind: 'drop' } : { kind: 'goto', chain: 'reject-chain' }),
        ),
      },
    ],
  });

  it('adds before the batch, removes after it; a map element that changes verdict changes before', () => {
    const was = ruleset(['10.96.0.1', '10.96.0.2'], [['10.96.0.1', 'reject']]);
    const now = ruleset(['10.96.0.2', '10.96.0.3'], [['10.96.0.1', 'drop']]);
    const p = planHelper(now, observedOf(was));
    const text = (l: readonly { text: string }[]) => l.map((f) => f.text);
    expect(text(p.before)).toEqual([
      'delete element ip kproxy-ipvs no-endpoint-services { 10.96.0.1 . tcp . 80 }',
      'add element ip kproxy-ipvs virtual-servers { 10.96.0.3 . tcp . 80 }',
      'add element ip kproxy-ipvs no-endpoint-services { 10.96.0.1 . tcp . 80 : drop }',
    ]);
    expect(text(p.after)).toEqual(['delete element ip kproxy-ipvs virtual-servers { 10.96.0.1 . tcp . 80 }']);
  });

  it('a missing table is created whole; what already matches plans nothing', () => {
    const rs = ruleset(['10.96.0.2'], []);
    expect(planHelper(rs, undefined).before.length).toBeGreaterThan(0);
    expect(planHelper(rs, observedOf(rs))).toEqual({ before: [], after: [] });
  });

  it('reads elements back only in the shapes kproxy writes', () => {
    expect(elementFromText('10.96.0.1 . tcp . 80', spec('x'))).toBe('10.96.0.1 . tcp . 80');
    expect(elementFromText('10.96.0.1 . tcp . 80 : goto reject-chain', spec('x', true))).toBe(
      '10.96.0.1 . tcp . 80 : goto reject-chain',
    );
    for (const bad of [
      '10.96.0.01 . tcp . 80',
      '10.96.0.1 . icmp . 80',
      '10.96.0.1 . tcp . 0',
      'x; flush ruleset',
      '10.96.0.1 . tcp',
    ]) {
      expect(elementFromText(bad, spec('x')), bad).toBeUndefined();
    }
    expect(elementFromText('10.96.0.1 . tcp . 80 : goto bad chain', spec('x', true))).toBeUndefined();
  });

  it('ownership: the virtual servers and marks the helper table records, and the marks of frontends', () => {
    const o = ownershipOf('ipv4', {
      chains: new Map(),
      sets: new Map([
        [
          'virtual-servers',
          { spec: spec('virtual-servers'), elements: new Set(['10.96.0.1 . udp . 53', 'fd00::1 . tcp . 80', 'junk']) },
        ],
        ['short-circuit-marks', { spec: { ...spec('m'), keyType: ['mark'] }, elements: new Set(['3']) }],
        [
          'short-circuit',
          { spec: spec('short-circuit', true), elements: new Set(['192.0.2.1 . tcp . 30080 : goto short-circuit-3']) },
        ],
      ]),
    });
    expect([...o.owned]).toEqual(['UDP/10.96.0.1:53', 'FWM/4/3']);
    expect([...o.priorMarks]).toEqual([['192.0.2.1 . tcp . 30080', 3]]);
  });
});

describe('allocateFwmarks', () => {
  const port = (k: string): ServicePortState => ({ key: k }) as ServicePortState;
  const fronts = (sp: ServicePortState) => [`${sp.key} . tcp . 80`];

  it('from 1, skipping the masquerade bit and marks other programs use', () => {
    const m = allocateFwmarks([port('a'), port('b'), port('c')], fronts, new Map(), new Set([2]), 0x1);
    expect([...m]).toEqual([
      ['a', 4],
      ['b', 6],
      ['c', 8],
    ]);
  });

  it('keeps the marks the kernel already gives a port, so its fwmark service survives restarts', () => {
    const prior = new Map([
      ['b . tcp . 80', 1],
      ['c . tcp . 80', 1],
    ]);
    const m = allocateFwmarks([port('a'), port('b'), port('c')], fronts, prior, new Set(), 0x4000);
    expect([...m]).toEqual([
      ['b', 1],
      ['a', 2],
      ['c', 3],
    ]);
  });
});
