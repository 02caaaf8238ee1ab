import { bareState } from '../support/states.ts';
import { describe, expect, it } from 'vitest';
import type { Family, Protocol } from '../../src/model/cluster.ts';
import type { EndpointTarget, NodeState, ServicePortState } from '../../src/model/node-state.ts';
import { planConntrackCleanup, type ConntrackEntry, type ConntrackProtocol } from '../../src/model/conntrack-plan.ts';
import {
  cleanupStaleConntrack,
  deleteConntrackEntries,
  deletionArgs,
  listConntrackEntries,
  parseConntrackList,
} from '../../src/kernel/conntrack.ts';
import type { Exec, ExecResult } from '../../src/kernel/exec.ts';

const ep = (ip: string, port = 5353, isLocal = false): EndpointTarget => ({ ip, port, isLocal });

function servicePort(over: Partial<ServicePortState> & { name?: string; protocol?: Protocol } = {}): ServicePortState {
  const { name = 'dns', protocol = 'UDP', ...rest } = over;
  const sp: ServicePortState = {
    ref: { namespace: 'kube-system', name, portName: 'dns', protocol },
    key: `kube-system/${name}:dns/${protocol}`,
    clusterIP: '10.96.0.10',
    port: 53,
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    internal: { kind: 'cluster', endpoints: [ep('10.244.1.5')] },
    localEndpointCount: 0,
    servingEndpoints: [],
    ...rest,
  };
  // Unless a test says otherwise, the serving endpoints are the ones the routes use.
  return over.servingEndpoints ? sp : { ...sp, servingEndpoints: routed(sp) };
}

function routed(sp: ServicePortState): EndpointTarget[] {
  const out: EndpointTarget[] = [];
  if ('endpoints' in sp.internal) out.push(...sp.internal.endpoints);
  if (sp.external?.kind === 'cluster') out.push(...sp.external.endpoints);
  if (sp.external?.kind === 'local') out.push(...sp.external.cluster, ...sp.external.local);
  return out;
}

const nodeState = (servicePorts: ServicePortState[], family: Family = 'ipv4'): NodeState =>
  bareState(servicePorts, family);

function entry(
  orig: [src: string, dst: string, sport: number, dport: number],
  reply: [src: string, sport: number],
  protocol: ConntrackProtocol = 'UDP',
  family: Family = 'ipv4',
): ConntrackEntry {
  return {
    family,
    protocol,
    original: { src: orig[0], dst: orig[1], sport: orig[2], dport: orig[3] },
    reply: { src: reply[0], dst: orig[0], sport: reply[1], dport: orig[2] },
  };
}

const client = '10.244.2.7';

describe('planConntrackCleanup', () => {
  it('keeps entries DNATed to a current endpoint and deletes those DNATed to a gone one', () => {
    const state = nodeState([servicePort({ internal: { kind: 'cluster', endpoints: [ep('10.244.1.6')] } })]);
    const keep = entry([client, '10.96.0.10', 40000, 53], ['10.244.1.6', 5353]);
    const gone = entry([client, '10.96.0.10', 40001, 53], ['10.244.1.5', 5353]);
    const gone2 = entry(['10.244.3.9', '10.96.0.10', 41000, 53], ['10.244.1.5', 5353]);
    const plan = planConntrackCleanup([keep, gone, gone2], { state });
    expect(plan.stale.map((s) => [s.entry, s.reason, s.frontend])).toEqual([
      [gone, 'endpoint-gone', '10.96.0.10:53'],
      [gone2, 'endpoint-gone', '10.96.0.10:53'],
    ]);
    expect(plan.deletions).toEqual([
      {
        family: 'ipv4',
        protocol: 'UDP',
        origDst: '10.96.0.10',
        origDport: 53,
        replySrc: '10.244.1.5',
        replySport: 5353,
        reason: 'endpoint-gone',
        entries: 2,
      },
    ]);
  });

  it('compares the endpoint port too (targetPort changed)', () => {
    const state = nodeState([servicePort({ internal: { kind: 'cluster', endpoints: [ep('10.244.1.5', 5454)] } })]);
    const e = entry([client, '10.96.0.10', 40000, 53], ['10.244.1.5', 5353]);
    expect(planConntrackCleanup([e], { state }).stale.map((s) => s.reason)).toEqual(['endpoint-gone']);
  });

  it('deletes a non-DNATed entry once the frontend has endpoints, keeps it while it has none', () => {
    const e = entry([client, '10.96.0.10', 40000, 53], ['10.96.0.10', 53]);
    const withEndpoints = nodeState([servicePort()]);
    expect(planConntrackCleanup([e], { state: withEndpoints }).stale.map((s) => s.reason)).toEqual(['not-dnated']);
    const rejecting = nodeState([servicePort({ internal: { kind: 'reject' } })]);
    expect(planConntrackCleanup([e], { state: rejecting }).stale).toEqual([]);
  });

  it('deletes DNATed entries of a service port scaled to zero (issue 139628)', () => {
    const state = nodeState([servicePort({ internal: { kind: 'reject' } })]);
    const e = entry([client, '10.96.0.10', 40000, 53], ['10.244.1.5', 5353]);
    expect(planConntrackCleanup([e], { state }).stale.map((s) => s.reason)).toEqual(['no-endpoints']);
  });

  it('deletes DNATed entries of a deleted service port, only with the previous state', () => {
    const previous = nodeState([servicePort({ nodePort: 30053, externalIPs: ['192.0.2.10'] })]);
    const state = nodeState([]);
    const viaClusterIP = entry([client, '10.96.0.10', 40000, 53], ['10.244.1.5', 5353]);
    const viaExternalIP = entry([client, '192.0.2.10', 40000, 53], ['10.244.1.5', 5353]);
    const viaNodePort = entry(['198.51.100.1', '192.168.1.10', 40000, 30053], ['10.244.1.5', 5353]);
    const undnated = entry([client, '10.96.0.10', 40001, 53], ['10.96.0.10', 53]);
    const all = [viaClusterIP, viaExternalIP, viaNodePort, undnated];
    expect(planConntrackCleanup(all, { state })).toEqual({ stale: [], deletions: [] });
    const plan = planConntrackCleanup(all, { state, previous, localAddresses: ['192.168.1.10'] });
    expect(plan.stale.map((s) => [s.entry, s.reason, s.frontend])).toEqual([
      [viaClusterIP, 'service-gone', '10.96.0.10:53'],
      [viaExternalIP, 'service-gone', '192.0.2.10:53'],
      [viaNodePort, 'service-gone', '*:30053'],
    ]);
  });

  it('lets the current state win when a previous frontend is reused', () => {
    const previous = nodeState([servicePort({ name: 'old' })]);
    const state = nodeState([
      servicePort({ name: 'new', internal: { kind: 'cluster', endpoints: [ep('10.244.1.5')] } }),
    ]);
    const e = entry([client, '10.96.0.10', 40000, 53], ['10.244.1.5', 5353]);
    expect(planConntrackCleanup([e], { state, previous }).stale).toEqual([]);
  });

  it('covers externalIPs, load-balancer IPs and NodePorts with the external route endpoints', () => {
    const sp = servicePort({
      nodePort: 30053,
      externalIPs: ['192.0.2.10'],
      loadBalancerIPs: ['203.0.113.5'],
      internal: { kind: 'reject' },
      external: {
        kind: 'local',
        local: [ep('10.244.1.5', 5353, true)],
        cluster: [ep('10.244.1.5', 5353, true), ep('10.244.9.9')],
      },
    });
    const state = nodeState([sp]);
    const entries = [
      entry([client, '192.0.2.10', 1, 53], ['10.244.1.5', 5353]), // keep
      entry([client, '192.0.2.10', 2, 53], ['10.244.7.7', 5353]), // gone
      entry([client, '203.0.113.5', 3, 53], ['10.244.9.9', 5353]), // keep (cluster endpoint)
      entry([client, '203.0.113.5', 4, 53], ['203.0.113.5', 53]), // not DNATed
      entry([client, '192.168.1.10', 5, 30053], ['10.244.7.7', 5353]), // NodePort, gone
      entry([client, '192.168.1.10', 6, 30053], ['10.244.1.5', 5353]), // NodePort, keep
      entry([client, '10.96.0.10', 7, 53], ['10.244.7.7', 5353]), // ClusterIP rejects; the union still has endpoints
    ];
    const plan = planConntrackCleanup(entries, { state, localAddresses: ['192.168.1.10'] });
    expect(plan.stale.map((s) => [s.entry.original.sport, s.reason, s.frontend])).toEqual([
      [2, 'endpoint-gone', '192.0.2.10:53'],
      [4, 'not-dnated', '203.0.113.5:53'],
      [5, 'endpoint-gone', '*:30053'],
      [7, 'endpoint-gone', '10.96.0.10:53'],
    ]);
  });

  it('only treats local destinations as NodePort flows when local addresses are given', () => {
    const state = nodeState([servicePort({ nodePort: 30053 })]);
    const podToPod = entry([client, '10.244.5.5', 40000, 30053], ['10.244.4.4', 30053]);
    expect(planConntrackCleanup([podToPod], { state, localAddresses: ['192.168.1.10'] }).stale).toEqual([]);
    // Upstream's behaviour without them: any destination on that port.
    expect(planConntrackCleanup([podToPod], { state }).stale.map((s) => s.reason)).toEqual(['endpoint-gone']);
  });

  it('does not take a frontend address on another port for a NodePort flow', () => {
    const state = nodeState([servicePort({ nodePort: 30053, externalIPs: ['192.168.1.10'] })]);
    const toExternalIP = entry([client, '192.168.1.10', 40000, 53], ['10.244.1.5', 5353]);
    expect(planConntrackCleanup([toExternalIP], { state, localAddresses: ['192.168.1.10'] }).stale).toEqual([]);
  });

  it('ignores TCP service ports, other protocols and other families unless asked', () => {
    const state = nodeState([servicePort({ protocol: 'TCP' }), servicePort({ name: 'sctp', protocol: 'SCTP' })]);
    const udp = entry([client, '10.96.0.10', 40000, 53], ['10.244.7.7', 5353]);
    const sctp = entry([client, '10.96.0.10', 40000, 53], ['10.244.7.7', 5353], 'SCTP');
    const v6 = entry(['fd00::1', 'fd00:96::10', 40000, 53], ['fd00:244::7', 5353], 'UDP', 'ipv6');
    expect(planConntrackCleanup([udp, sctp, v6], { state }).stale).toEqual([]);
    expect(
      planConntrackCleanup([udp, sctp, v6], { state, protocols: ['UDP', 'SCTP'] }).stale.map((s) => s.entry),
    ).toEqual([sctp]);
  });

  it('accepts a caller-supplied endpoint set (serving endpoints, as upstream)', () => {
    const state = nodeState([servicePort()]);
    const toTerminating = entry([client, '10.96.0.10', 40000, 53], ['10.244.1.99', 5353]);
    expect(planConntrackCleanup([toTerminating], { state }).stale).toHaveLength(1);
    const endpointsOf = (): EndpointTarget[] => [ep('10.244.1.5'), ep('10.244.1.99')];
    expect(planConntrackCleanup([toTerminating], { state, endpointsOf }).stale).toEqual([]);
  });

  it('works for IPv6', () => {
    const state = nodeState(
      [servicePort({ clusterIP: 'fd00:96::10', internal: { kind: 'cluster', endpoints: [ep('fd00:244::6')] } })],
      'ipv6',
    );
    const gone = entry(['fd00::1', 'fd00:96::10', 40000, 53], ['fd00:244::5', 5353], 'UDP', 'ipv6');
    const keep = entry(['fd00::1', 'fd00:96::10', 40001, 53], ['fd00:244::6', 5353], 'UDP', 'ipv6');
    expect(planConntrackCleanup([gone, keep], { state }).deletions.map((d) => [d.replySrc, d.reason])).toEqual([
      ['fd00:244::5', 'endpoint-gone'],
    ]);
  });
});

const LIST_V4 = `udp      17 29 src=10.244.2.7 dst=10.96.0.10 sport=40000 dport=53 [UNREPLIED] src=10.244.1.5 dst=10.244.2.7 sport=5353 dport=40000 mark=0 use=1
udp      17 117 src=10.244.2.7 dst=10.96.0.10 sport=40001 dport=53 src=10.244.1.6 dst=10.244.2.7 sport=5353 dport=40001 [ASSURED] mark=0 zone=3 use=1
ipv4     2 udp      17 29 src=10.244.2.8 dst=10.96.0.10 sport=40002 dport=53 [UNREPLIED] src=10.96.0.10 dst=10.244.2.8 sport=53 dport=40002 mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 [ASSURED] mark=0 use=1
udp      17 29 src=10.244.2.7 dst=10.96.0.10 sport=40000 [UNREPLIED] src=10.244.1.5 dst=10.244.2.7 sport=5353 dport=40000 mark=0 use=1
udp      17 29 src=10.244.2.7 dst=10.96.0.999 sport=40000 dport=53 src=10.244.1.5 dst=10.244.2.7 sport=5353 dport=40000 mark=0 use=1
garbage

`;

describe('parseConntrackList', () => {
  it('parses default and extended lines, counts the rest', () => {
    const { entries, unparsed } = parseConntrackList(LIST_V4, 'ipv4', 'UDP');
    expect(entries).toEqual([
      entry(['10.244.2.7', '10.96.0.10', 40000, 53], ['10.244.1.5', 5353]),
      entry(['10.244.2.7', '10.96.0.10', 40001, 53], ['10.244.1.6', 5353]),
      entry(['10.244.2.8', '10.96.0.10', 40002, 53], ['10.96.0.10', 53]),
    ]);
    expect(unparsed).toBe(4);
  });

  it('parses IPv6 into canonical text and rejects the wrong family', () => {
    const line =
      'ipv6     10 udp      17 29 src=FD00:0:0::2 dst=fd00:96::10 sport=40000 dport=53 [UNREPLIED] src=fd00:201::2 dst=fd00::2 sport=5353 dport=40000 mark=0 use=1';
    expect(parseConntrackList(line, 'ipv6', 'UDP').entries).toEqual([
      entry(['fd00::2', 'fd00:96::10', 40000, 53], ['fd00:201::2', 5353], 'UDP', 'ipv6'),
    ]);
    expect(parseConntrackList(line, 'ipv4', 'UDP')).toEqual({ entries: [], unparsed: 1 });
  });
});

interface Call {
  command: string;
  args: readonly string[];
}

function fakeRun(respond: (args: readonly string[]) => ExecResult): { run: Exec; calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    run: async (command, args) => {
      calls.push({ command, args });
      return respond(args);
    },
  };
}

const ok = (stdout: string, stderr = ''): ExecResult => ({ exitCode: 0, stdout, stderr });

describe('conntrack client', () => {
  it('lists with argv only and fails loudly on a listing error', async () => {
    const { run, calls } = fakeRun(() => ok(LIST_V4));
    const listed = await listConntrackEntries(run, 'ipv4');
    expect(listed.entries).toHaveLength(3);
    expect(calls).toEqual([{ command: 'conntrack', args: ['-L', '-f', 'ipv4', '-p', 'udp'] }]);
    const failing = fakeRun(() => ({ exitCode: 1, stdout: '', stderr: 'Operation not permitted' }));
    await expect(listConntrackEntries(failing.run, 'ipv6')).rejects.toThrow(/Operation not permitted/);
  });

  it('builds exact deletion argv and refuses invalid fields', () => {
    const d = {
      family: 'ipv6',
      protocol: 'UDP',
      origDst: 'fd00:96::10',
      origDport: 53,
      replySrc: 'fd00:244::5',
      replySport: 5353,
      reason: 'endpoint-gone',
      entries: 1,
    } as const;
    expect(deletionArgs(d)).toEqual([
      '-D',
      '-f',
      'ipv6',
      '-p',
      'udp',
      '--orig-dst',
      'fd00:96::10',
      '--dport',
      '53',
      '--reply-src',
      'fd00:244::5',
      '--reply-port-src',
      '5353',
    ]);
    expect(() => deletionArgs({ ...d, origDst: '10.0.0.1' })).toThrow();
    expect(() => deletionArgs({ ...d, replySrc: '--help' })).toThrow();
    expect(() => deletionArgs({ ...d, origDport: 70000 })).toThrow();
  });

  it('treats "0 flow entries have been deleted" as success', async () => {
    const d = planConntrackCleanup([entry([client, '10.96.0.10', 1, 53], ['10.244.7.7', 5353])], {
      state: nodeState([servicePort()]),
    }).deletions[0]!;
    const none = fakeRun(() => ({
      exitCode: 1,
      stdout: '',
      stderr: 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n',
    }));
    await expect(deleteConntrackEntries(none.run, d)).resolves.toBe(0);
    const two = fakeRun(() => ok('', 'conntrack v1.4.7 (conntrack-tools): 2 flow entries have been deleted.\n'));
    await expect(deleteConntrackEntries(two.run, d)).resolves.toBe(2);
    const broken = fakeRun(() => ({ exitCode: 2, stdout: '', stderr: 'Illegal option' }));
    await expect(deleteConntrackEntries(broken.run, d)).rejects.toThrow(/Illegal option/);
  });

  it('cleans up: lists, deletes one filter per stale (frontend, backend), reports counts and failures', async () => {
    const state = nodeState([servicePort({ internal: { kind: 'cluster', endpoints: [ep('10.244.1.6')] } })]);
    const { run, calls } = fakeRun((args) => {
      if (args[0] === '-L') return ok(LIST_V4);
      return ok('', 'conntrack v1.4.7 (conntrack-tools): 1 flow entries have been deleted.\n');
    });
    const result = await cleanupStaleConntrack(run, { state });
    expect(result).toEqual({
      family: 'ipv4',
      listed: 3,
      unparsed: 4,
      stale: { 'endpoint-gone': 1, 'no-endpoints': 0, 'not-dnated': 1, 'service-gone': 0 },
      deletions: 2,
      failedDeletions: 0,
      deferred: 0,
      deleted: 2,
      errors: [],
    });
    expect(
      calls
        .slice(1)
        .map((c) => c.args.slice(5).join(' '))
        .sort(),
    ).toEqual([
      '--orig-dst 10.96.0.10 --dport 53 --reply-src 10.244.1.5 --reply-port-src 5353',
      '--orig-dst 10.96.0.10 --dport 53 --reply-src 10.96.0.10 --reply-port-src 53',
    ]);

    const failing = fakeRun((args) => (args[0] === '-L' ? ok(LIST_V4) : { exitCode: 1, stdout: '', stderr: 'boom' }));
    const r2 = await cleanupStaleConntrack(failing.run, { state, maxDeletions: 1 });
    expect([r2.deletions, r2.failedDeletions, r2.deferred, r2.deleted]).toEqual([1, 1, 1, 0]);
    expect(r2.errors[0]).toMatch(/boom/);
  });
});
