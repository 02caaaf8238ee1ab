/**
 * The IPVS backend's orchestration against a fake kernel (every tool call recorded): the order of
 * one sync — helper transaction, the ipvsadm batch, kube-ipvs0, the second transaction — the
 * one-time preparation (sysctls, scheduler probe), and errors. The kernel itself is exercised in
 * the IPVS VM (test/ipvs/kernel.vmtest.ts).
 */
import { describe, expect, it } from 'vitest';
import { IpvsProxyBackend } from '../../src/backends/ipvs/backend.ts';
import { loadProxyConfig } from '../../src/config/load.ts';
import { KernelToolError } from '../../src/kernel/errors.ts';
import type { Exec, ExecResult } from '../../src/kernel/exec.ts';
import { buildNodeState } from '../../src/model/build-node-state.ts';
import { familyStateOf } from '../../src/proxy/backend.ts';
import { createLogger } from '../../src/util/log.ts';
import { node, remote, service, slice, snapshot } from '../support/cluster-builders.ts';

const ok = (stdout = ''): ExecResult => ({ exitCode: 0, stdout, stderr: '' });
const fail = (stderr: string, exitCode = 1): ExecResult => ({ exitCode, stdout: '', stderr });

interface FakeKernel {
  save: string;
  dummy: boolean;
  addresses: string;
  helper?: unknown;
  restoreStderr?: string;
}

function fake(k: FakeKernel): { exec: Exec; calls: string[] } {
  const calls: string[] = [];
  const exec: Exec = async (file, args, stdin) => {
    const call = `${file} ${args.join(' ')}`;
    calls.push(stdin ? `${call} <<${stdin.trim().split('\n').join(' | ')}` : call);
    if (file === 'ipvsadm' && args[0] === '-Sn') return ok(k.save);
    if (file === 'ipvsadm' && args[0] === '-R')
      return k.restoreStderr && !stdin?.includes('4294967295')
        ? { exitCode: 0, stdout: '', stderr: k.restoreStderr }
        : ok();
    if (file === 'ipvsadm' && args[0] === '-Ln') return ok('');
    if (file === 'ip' && args.join(' ') === '-o addr show') return ok(k.addresses);
    if (file === 'ip' && args[2] === 'show')
      return k.dummy ? ok('3: kube-ipvs0: <BROADCAST,NOARP>') : fail('Device "kube-ipvs0" does not exist.');
    if (file === 'nft' && args[0] === '-j')
      return k.helper ? ok(JSON.stringify(k.helper)) : fail('Error: No such file or directory');
    if (file === 'sysctl' && args[0] === '-n') return ok(args[1] === 'net.ipv4.ip_forward' ? '1' : '0');
    return ok();
  };
  return { exec, calls };
}

const ADDRESSES = '2: eth0    inet 192.0.2.1/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever';
const config = loadProxyConfig({
  argv: ['--proxy-mode=ipvs', '--hostname-override=node-a'],
  hostname: 'x',
  readFile: () => '',
}).config;
const quiet = createLogger(0, { write: () => {} });

function families(withWeb: boolean) {
  const snap = snapshot({
    node: node(),
    services: withWeb ? [service('web')] : [],
    slices: withWeb ? [slice('web', [remote('10.244.1.2')])] : [],
  });
  return (['ipv4', 'ipv6'] as const).map((f) =>
    familyStateOf(buildNodeState(snap, f, { ...config, nodeName: 'node-a' })),
  );
}

/** The kernel-changing calls in order: the command and the first line of its input. */
function changes(calls: readonly string[]): string[] {
  return calls
    .filter((c) => /^(nft -f|ipvsadm -R|ip -batch|ip link add|sysctl -w)/.test(c) && !c.includes('4294967295'))
    .map((c) => c.split(' | ')[0] ?? c);
}

describe('IpvsProxyBackend (fake kernel)', () => {
  it('first sync: sysctls and the scheduler probe once; then helper rules, the batch, kube-ipvs0 and its addresses', async () => {
    const { exec, calls } = fake({ save: '', dummy: false, addresses: ADDRESSES });
    const b = new IpvsProxyBackend({ config, exec, log: quiet }, { drainCheckMs: 0 });
    const r = await b.sync({ families: families(true), full: true, changed: new Set() });
    expect(r.kind).toBe('full');
    expect(calls).toContain('ipvsadm -R <<-A -f 4294967295 -s rr | -D -f 4294967295');
    expect(changes(calls)).toEqual([
      'sysctl -w net.ipv4.vs.conntrack=1',
      'sysctl -w net.ipv4.vs.expire_nodest_conn=1',
      'sysctl -w net.ipv4.vs.expire_quiescent_template=1',
      'nft -f - <<add table ip kproxy-ipvs',
      'ipvsadm -R <<-A -t 10.96.0.10:80 -s rr',
      'ip link add kube-ipvs0 type dummy',
      'ip -batch - <<address add 10.96.0.10/32 dev kube-ipvs0',
    ]);
    // Prepared once: a second sync neither sets sysctls nor probes again.
    calls.length = 0;
    await b.sync({ families: families(true), full: true, changed: new Set() });
    expect(calls.filter((c) => c.startsWith('sysctl') || c.includes('4294967295'))).toEqual([]);
  });

  it('a removed Service: its records stay until the batch deleted it, its address goes after', async () => {
    const helper = {
      nftables: [
        {
          set: {
            family: 'ip',
            name: 'virtual-servers',
            table: 'kproxy-ipvs',
            type: ['ipv4_addr', 'inet_proto', 'inet_service'],
            elem: [{ concat: ['10.96.0.10', 'tcp', 80] }],
          },
        },
        {
          set: { family: 'ip', name: 'ipvs-addresses', table: 'kproxy-ipvs', type: 'ipv4_addr', elem: ['10.96.0.10'] },
        },
      ],
    };
    const { exec, calls } = fake({
      save: '-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1\n-A -t 192.0.2.99:80 -s rr\n',
      dummy: true,
      addresses: `${ADDRESSES}\n3: kube-ipvs0    inet 10.96.0.10/32 scope global kube-ipvs0\\       valid_lft forever`,
      helper,
    });
    const b = new IpvsProxyBackend({ config, exec, log: quiet }, { drainCheckMs: 0 });
    await b.sync({ families: families(false), full: true, changed: new Set() });
    const order = changes(calls).map((c) => c.split(' <<')[0]);
    const batch = calls.find((c) => c.startsWith('ipvsadm -R <<-D'));
    // Only kproxy's own virtual server goes; 192.0.2.99:80 is someone else's.
    expect(batch).toBe('ipvsadm -R <<-D -t 10.96.0.10:80');
    const t2 = calls.filter((c) => c.startsWith('nft -f')).at(-1);
    expect(t2).toContain('delete element ip kproxy-ipvs virtual-servers { 10.96.0.10 . tcp . 80 }');
    expect(order.slice(-3)).toEqual(['ipvsadm -R', 'ip -batch -', 'nft -f -']);
    expect(calls.find((c) => c.startsWith('ip -batch'))).toBe('ip -batch - <<address del 10.96.0.10/32 dev kube-ipvs0');
  });

  it('ipvsadm -R error output fails the sync even when it exits 0; a missing default scheduler is a clear error', async () => {
    const k = fake({ save: '', dummy: false, addresses: ADDRESSES, restoreStderr: 'Service already exists' });
    const b = new IpvsProxyBackend({ config, exec: k.exec, log: quiet }, { drainCheckMs: 0 });
    await expect(b.sync({ families: families(true), full: true, changed: new Set() })).rejects.toThrow(
      /ipvsadm -R failed: Service already exists/,
    );
    const noSched: Exec = async (file, args, stdin) =>
      file === 'ipvsadm' && stdin?.includes('4294967295')
        ? fail('Scheduler or persistence engine not found', 255)
        : fake({ save: '', dummy: false, addresses: ADDRESSES }).exec(file, args, stdin);
    const c = new IpvsProxyBackend({ config, exec: noSched, log: quiet }, { drainCheckMs: 0 });
    const err = await c.sync({ families: families(true), full: true, changed: new Set() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KernelToolError);
    expect((err as Error).message).toBe(
      'the kernel offers no IPVS scheduler "rr" (module ip_vs_rr); choose another with --ipvs-scheduler / ipvs.scheduler',
    );
  });

  it('describeDrift (kproxy diff) reads only: it names what a sync would write, and writes nothing, not even a probe', async () => {
    const { exec, calls } = fake({
      save: '-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.9:8080 -m -w 1\n',
      dummy: true,
      addresses: `${ADDRESSES}\n3: kube-ipvs0    inet 10.96.0.99/32 scope global kube-ipvs0\\       valid_lft forever`,
    });
    const b = new IpvsProxyBackend({ config, exec, log: quiet }, { drainCheckMs: 0 });
    const drift = await b.describeDrift(families(true));
    expect(drift).toEqual([
      'sysctl net.ipv4.vs.conntrack is 0; IPVS mode sets 1 so that conntrack sees IPVS flows and nat postrouting can masquerade them',
      'sysctl net.ipv4.vs.expire_nodest_conn is 0; IPVS mode sets 1 so that connections to a deleted real server end on their next packet',
      'sysctl net.ipv4.vs.expire_quiescent_template is 0; IPVS mode sets 1 so that ClientIP affinity leaves a real server with weight 0',
      'IPVS virtual server -t 10.96.0.10:80 lacks real server 10.244.1.2:8080',
      'IPVS virtual server -t 10.96.0.10:80: real server 10.244.1.9:8080 is not desired',
      'kube-ipvs0 lacks the address 10.96.0.10',
      'kube-ipvs0 also holds 10.96.0.99, which no virtual server uses',
      'table ip kproxy-ipvs: missing from the kernel',
      'table ip6 kproxy-ipvs: missing from the kernel',
    ]);
    expect(changes(calls)).toEqual([]);
    expect(calls.filter((c) => c.includes('4294967295'))).toEqual([]);
  });
});
