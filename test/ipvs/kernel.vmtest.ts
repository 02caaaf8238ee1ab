/**
 * IPVS mode against a real IPVS kernel: runs ONLY inside the IPVS VM (test/ipvs/ipvs-vm.test.ts
 * boots it; the host's `vitest run` does not pick up *.vmtest.ts). kproxy programs the VM's own
 * network namespace (the "node"), two pod namespaces serve TCP and UDP (test/ipvs/echo-server.ts),
 * and this process is the client, so it can hold a TCP connection open across syncs. The backend
 * runs in-process with an injected clock (a Node start costs ~40 s in the VM).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IpvsProxyBackend, type IpvsBackendOptions } from '../../src/backends/ipvs/backend.ts';
import { loadProxyConfig } from '../../src/config/load.ts';
import { startDaemon } from '../../src/daemon/daemon.ts';
import { logEventRecorder } from '../../src/daemon/events.ts';
import type { ProxyConfig } from '../../src/config/proxy-config.ts';
import { KernelToolError } from '../../src/kernel/errors.ts';
import { execProgram } from '../../src/kernel/exec.ts';
import { familyStateOf, type FamilyState } from '../../src/proxy/backend.ts';
import { nodeStates } from '../../src/proxy/desired.ts';
import { parseManifestText } from '../../src/source/manifests.ts';
import { manifestSource } from '../../src/source/manifest-source.ts';
import { buildSnapshot } from '../../src/source/normalize.ts';
import { createLogger } from '../../src/util/log.ts';

const NODE = 'node-k';
const PODS = [
  { name: 'p1', ns: 'kpi-p1', veth: 'kpi1', ip: '10.244.9.11' },
  { name: 'p2', ns: 'kpi-p2', veth: 'kpi2', ip: '10.244.9.12' },
] as const;
const GATEWAY = '10.244.9.1';
const TCP = 8080;
const UDP = 5353;
const DRAIN_TIMEOUT_MS = 60_000;

if (process.env['KPROXY_IPVS_VM'] !== '1') throw new Error('test/ipvs/*.vmtest.ts run only inside the IPVS VM');

// ---------------------------------------------------------------------------------------------
// The cluster, as manifests

interface Svc {
  name: string;
  ip: string;
  port?: number;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  pods: string[];
  annotations?: Record<string, string>;
  affinity?: number;
}

function objects(...services: Svc[]): object[] {
  const out: object[] = [
    {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: NODE },
      status: { addresses: [{ type: 'InternalIP', address: GATEWAY }] },
    },
  ];
  for (const s of services) {
    const protocol = s.protocol ?? 'TCP';
    out.push({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: s.name, namespace: 'k', ...(s.annotations ? { annotations: s.annotations } : {}) },
      spec: {
        clusterIP: s.ip,
        ports: [{ name: 'p', protocol, port: s.port ?? 80 }],
        ...(s.affinity
          ? { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: s.affinity } } }
          : {}),
      },
    });
    out.push({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${s.name}-1`, namespace: 'k', labels: { 'kubernetes.io/service-name': s.name } },
      addressType: 'IPv4',
      ports: [{ name: 'p', protocol, port: protocol === 'UDP' ? UDP : TCP }],
      endpoints: s.pods.map((p) => ({
        addresses: [PODS.find((x) => x.name === p)?.ip],
        nodeName: NODE,
        conditions: { ready: true },
      })),
    });
  }
  return out;
}

function desired(flags: readonly string[], ...services: Svc[]): { config: ProxyConfig; families: FamilyState[] } {
  const { config } = loadProxyConfig({
    argv: ['--proxy-mode=ipvs', `--hostname-override=${NODE}`, '--cluster-cidr=10.244.0.0/16', ...flags],
    hostname: 'unused',
    readFile: () => '',
  });
  const parsed = parseManifestText(
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects(...services) }),
    'x',
  );
  const { snapshot } = buildSnapshot(parsed.objects, config.nodeName);
  return { config, families: nodeStates(snapshot, config).map(familyStateOf) };
}

const quiet = createLogger(0, { write: () => {} });

function backendFor(config: ProxyConfig, opts: IpvsBackendOptions = {}): IpvsProxyBackend {
  return new IpvsProxyBackend({ config, exec: execProgram, log: quiet }, { drainCheckMs: 0, ...opts });
}

/** One sync of a fresh kproxy (as `kproxy sync` does), then the kernel must match. */
async function syncOnce(flags: readonly string[], ...services: Svc[]) {
  const { config, families } = desired(flags, ...services);
  const b = backendFor(config);
  const report = await b.sync({ families, full: true, changed: new Set() });
  expect(await b.matches(families)).toBe(true);
  return report;
}

// ---------------------------------------------------------------------------------------------
// The kernel, read back

async function sh(cmd: string, ...args: string[]): Promise<string> {
  return (await execa(cmd, args)).stdout;
}
const ipvsSave = () => sh('ipvsadm', '-Sn');
const dummyAddresses = async () => {
  const r = await execa('ip', ['-o', 'addr', 'show', 'dev', 'kube-ipvs0'], { reject: false });
  return r.exitCode === 0 ? [...r.stdout.matchAll(/inet6? (\S+)\//g)].map((m) => m[1]) : undefined;
};
const helperTables = async () =>
  (await sh('nft', 'list', 'tables')).split('\n').filter((l) => l.includes('kproxy-ipvs'));

// ---------------------------------------------------------------------------------------------
// Traffic from this process (the node)

interface Held {
  readonly pod: string;
  echo(text: string): Promise<string>;
  reset(): void;
  close(): void;
}

function connect(host: string, port = 80, timeoutMs = 3000): Promise<Held> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    let buffer = '';
    let waiter: ((line: string) => void) | undefined;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer from ${host}:${port}`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('data', (d: string) => {
      buffer += d;
      let nl = buffer.indexOf('\n');
      while (nl >= 0) {
        const l = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (waiter) {
          const w = waiter;
          waiter = undefined;
          w(l);
        }
        nl = buffer.indexOf('\n');
      }
    });
    waiter = (pod) => {
      clearTimeout(timer);
      resolve({
        pod,
        echo: (text) =>
          new Promise((res, rej) => {
            const t = setTimeout(() => rej(new Error('the held connection did not echo')), timeoutMs);
            waiter = (l) => {
              clearTimeout(t);
              res(l);
            };
            sock.write(`${text}\n`);
          }),
        reset: () => sock.resetAndDestroy(),
        close: () => sock.end(),
      });
    };
  });
}

/** Who answers `n` new connections (closing each). */
async function tally(host: string, n: number, port = 80): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const c = await connect(host, port);
    out[c.pod] = (out[c.pod] ?? 0) + 1;
    c.close();
  }
  return out;
}

function udpAsk(host: string, port = 53, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const t = setTimeout(() => {
      s.close();
      reject(new Error(`no UDP answer from ${host}:${port}`));
    }, timeoutMs);
    s.on('message', (m) => {
      clearTimeout(t);
      s.close();
      resolve(m.toString().trim());
    });
    s.send('?', port, host);
  });
}

// ---------------------------------------------------------------------------------------------
// The pods

const servers: ChildProcess[] = [];

async function startPods(): Promise<void> {
  for (const p of PODS) {
    await execa('ip', ['netns', 'add', p.ns]);
    await execa('ip', ['link', 'add', p.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p.ns]);
    await execa('ip', ['addr', 'add', `${GATEWAY}/32`, 'dev', p.veth]);
    await execa('ip', ['link', 'set', p.veth, 'up']);
    await execa('ip', ['route', 'add', `${p.ip}/32`, 'dev', p.veth]);
    for (const args of [
      ['addr', 'add', `${p.ip}/24`, 'dev', 'eth0'],
      ['link', 'set', 'eth0', 'up'],
      ['link', 'set', 'lo', 'up'],
      ['route', 'add', 'default', 'via', GATEWAY],
    ])
      await execa('ip', ['netns', 'exec', p.ns, 'ip', ...args]);
  }
  const script = fileURLToPath(new URL('./echo-server.ts', import.meta.url));
  await Promise.all(
    PODS.map(
      (p) =>
        new Promise<void>((resolve, reject) => {
          const child = spawn(
            'ip',
            ['netns', 'exec', p.ns, process.execPath, script, p.name, String(TCP), String(UDP)],
            {
              stdio: ['pipe', 'pipe', 'inherit'],
            },
          );
          servers.push(child);
          child.stdout?.once('data', () => resolve());
          child.once('exit', (code) => reject(new Error(`echo server ${p.name} exited (${code})`)));
        }),
    ),
  );
}

async function stopPods(): Promise<void> {
  for (const s of servers) s.kill();
  for (const p of PODS) {
    await execa('ip', ['link', 'del', p.veth], { reject: false });
    await execa('ip', ['netns', 'del', p.ns], { reject: false });
  }
}

async function cleanKernel(): Promise<void> {
  const { config } = desired([]);
  await backendFor(config).cleanup();
  await execa('ipvsadm', ['-C']);
}

// ---------------------------------------------------------------------------------------------

const WEB: Svc = { name: 'web', ip: '10.96.9.10', pods: ['p1', 'p2'] };
const DNS: Svc = { name: 'dns', ip: '10.96.9.53', port: 53, protocol: 'UDP', pods: ['p1'] };

describe('ipvs: in a real IPVS kernel', () => {
  beforeAll(async () => {
    await startPods();
  }, 300_000);
  afterAll(async () => {
    await cleanKernel().catch(() => {});
    await stopPods();
  }, 120_000);

  it('a sync programs virtual servers, kube-ipvs0 and the helper tables; a restarted kproxy adopts them; drift is described and repaired', async () => {
    const first = await syncOnce([], WEB, DNS);
    expect(first.changes).toBeGreaterThan(0);
    expect((await ipvsSave()).split('\n').sort()).toEqual([
      '-A -t 10.96.9.10:80 -s rr',
      '-A -u 10.96.9.53:53 -s rr',
      '-a -t 10.96.9.10:80 -r 10.244.9.11:8080 -m -w 1',
      '-a -t 10.96.9.10:80 -r 10.244.9.12:8080 -m -w 1',
      '-a -u 10.96.9.53:53 -r 10.244.9.11:5353 -m -w 1',
    ]);
    expect(await dummyAddresses()).toEqual(['10.96.9.10', '10.96.9.53']);
    expect(await helperTables()).toEqual(['table ip kproxy-ipvs', 'table ip6 kproxy-ipvs']);
    expect(await tally(WEB.ip, 8)).toEqual({ p1: 4, p2: 4 });
    expect(await udpAsk(DNS.ip)).toBe('p1');

    // A restarted kproxy (a new process: nothing in memory) adopts all of it without a change.
    const again = await syncOnce([], WEB, DNS);
    expect(again.changes).toBe(0);

    // Someone deletes a real server, an address and an ownership record: the next sync repairs it.
    const { config, families } = desired([], WEB, DNS);
    const b = backendFor(config);
    expect((await b.sync({ families, full: true, changed: new Set() })).changes).toBe(0);
    await execa('ipvsadm', ['-d', '-t', '10.96.9.10:80', '-r', '10.244.9.12:8080']);
    await execa('ip', ['addr', 'del', '10.96.9.53/32', 'dev', 'kube-ipvs0']);
    await execa('nft', ['delete', 'element', 'ip', 'kproxy-ipvs', 'virtual-servers', '{ 10.96.9.10 . tcp . 80 }']);
    // `kproxy diff` names each of the three, and changes nothing.
    const drift = [
      'IPVS virtual server -t 10.96.9.10:80 lacks real server 10.244.9.12:8080',
      'kube-ipvs0 lacks the address 10.96.9.53',
      'table ip kproxy-ipvs: set virtual-servers lacks 10.96.9.10 . tcp . 80',
    ];
    expect(await b.describeDrift(families)).toEqual(drift);
    expect(await backendFor(config).describeDrift(families)).toEqual(drift);
    const repair = await b.sync({ families, full: true, changed: new Set() });
    expect(repair.drift).toBe(true);
    // The real server, the address, the ownership record.
    expect(repair.changes).toBe(3);
    expect(await b.matches(families)).toBe(true);
    expect(await b.describeDrift(families)).toEqual([]);
    expect(await udpAsk(DNS.ip)).toBe('p1');
  });

  it("never touches virtual servers it did not create; cleanup removes only kproxy's (and kube-ipvs0, the tables)", async () => {
    const foreign = [
      '-A -t 10.96.9.99:80 -s wrr',
      '-a -t 10.96.9.99:80 -r 10.244.9.12:8080 -m -w 3',
      '-A -f 77 -s rr',
      '-A -t 192.0.2.99:443 -s sh',
    ];
    await execa('ipvsadm', ['-R'], { input: `${foreign.join('\n')}\n` });
    await syncOnce([], WEB, DNS);
    // WEB goes: its virtual server is deleted, the foreign ones stay.
    const r = await syncOnce([], DNS);
    expect(r.changes).toBeGreaterThan(0);
    const save = await ipvsSave();
    expect(save).not.toContain('10.96.9.10');
    for (const l of foreign) expect(save).toContain(l);
    expect(await dummyAddresses()).toEqual(['10.96.9.53']);

    const { config } = desired([]);
    const removed = await backendFor(config).cleanup();
    expect(removed).toEqual([
      'virtual server UDP/10.96.9.53:53',
      'interface kube-ipvs0 with its addresses',
      'table ip kproxy-ipvs',
      'table ip6 kproxy-ipvs',
    ]);
    expect(
      (await ipvsSave())
        .split('\n')
        .filter((l) => l.startsWith('-A'))
        .sort(),
    ).toEqual(foreign.filter((l) => l.startsWith('-A')).sort());
    expect(await dummyAddresses()).toBeUndefined();
    expect(await helperTables()).toEqual([]);
    expect(await backendFor(config).cleanup()).toEqual([]);
    await execa('ipvsadm', ['-C']);
  });

  it('graceful drain: a held TCP connection to a removed endpoint keeps working while new ones go elsewhere', async () => {
    let now = 1_000_000;
    const { config, families } = desired([], WEB, DNS);
    const b = backendFor(config, { clock: () => now, drainTimeoutMs: DRAIN_TIMEOUT_MS });
    await b.sync({ families, full: true, changed: new Set() });

    const held = await connect(WEB.ip);
    const gone = held.pod;
    const stays = gone === 'p1' ? 'p2' : 'p1';
    const goneIp = PODS.find((p) => p.name === gone)?.ip;

    // The endpoint leaves (and the UDP Service moves from p1 to p2).
    const without = desired([], { ...WEB, pods: [stays] }, { ...DNS, pods: ['p2'] });
    const r = await b.sync({ families: without.families, full: true, changed: new Set(['k/web', 'k/dns']) });
    expect(r.detail?.['draining']).toBe(1);
    const save = await ipvsSave();
    expect(save).toContain(`-a -t 10.96.9.10:80 -r ${goneIp}:8080 -m -w 0`);
    // UDP real servers go at once.
    expect(save).not.toContain('-r 10.244.9.11:5353');
    expect(await udpAsk(DNS.ip)).toBe('p2');
    expect(await held.echo('still there')).toBe('still there');
    expect(await tally(WEB.ip, 6)).toEqual({ [stays]: 6 });
    expect(await b.matches(without.families)).toBe(true);

    // It comes back while draining: its weight returns, the held connection never noticed.
    await b.sync({ families, full: true, changed: new Set(['k/web']) });
    expect(await ipvsSave()).toContain(`-a -t 10.96.9.10:80 -r ${goneIp}:8080 -m -w 1`);
    expect(await held.echo('again')).toBe('again');

    // It leaves again; the connection ends (RST: IPVS keeps a closed connection 10 s in CLOSE).
    await b.sync({ families: without.families, full: true, changed: new Set(['k/web']) });
    expect(await ipvsSave()).toContain(`-r ${goneIp}:8080 -m -w 0`);
    expect(await b.checkDraining()).toBe(0);
    held.reset();
    // Deleted on the first check that finds it without connections.
    const deadline = Date.now() + 60_000;
    while ((await b.checkDraining()) === 0) {
      if (Date.now() > deadline) throw new Error(`still draining after 60 s: ${await sh('ipvsadm', '-Ln')}`);
      await new Promise((res) => setTimeout(res, 2000));
    }
    expect(await ipvsSave()).not.toContain(`${goneIp}:8080`);

    // Bounded: a connection that lasts past the drain timeout does not keep it.
    await b.sync({ families, full: true, changed: new Set(['k/web']) });
    let long: Held | undefined;
    for (let i = 0; i < 6 && long?.pod !== gone; i++) {
      long?.close();
      long = await connect(WEB.ip);
    }
    expect(long?.pod).toBe(gone);
    await b.sync({ families: without.families, full: true, changed: new Set(['k/web']) });
    expect(await ipvsSave()).toContain(`-r ${goneIp}:8080 -m -w 0`);
    now += DRAIN_TIMEOUT_MS - 1;
    expect(await b.checkDraining()).toBe(0);
    now += 1;
    expect(await b.checkDraining()).toBe(1);
    expect(await ipvsSave()).not.toContain(`${goneIp}:8080`);
    long?.reset();
  }, 240_000);

  it('schedulers: the configured default, per-Service annotations, one this kernel lacks; SCTP', async () => {
    const sh_: Svc = {
      name: 'hashed',
      ip: '10.96.9.20',
      pods: ['p1', 'p2'],
      annotations: { 'kproxy.io/ipvs-scheduler': 'sh' },
    };
    const mh: Svc = {
      name: 'maglev',
      ip: '10.96.9.21',
      pods: ['p1', 'p2'],
      annotations: { 'kproxy.io/ipvs-scheduler': 'mh' },
    };
    // Linux 6.1 has no ip_vs_twos (it came with 6.2).
    const twos: Svc = {
      name: 'twos',
      ip: '10.96.9.22',
      pods: ['p1', 'p2'],
      annotations: { 'kproxy.io/ipvs-scheduler': 'twos' },
    };
    const sctp: Svc = { name: 'sig', ip: '10.96.9.24', port: 9000, protocol: 'SCTP', pods: ['p1'] };
    const { config, families } = desired(['--ipvs-scheduler=wlc'], WEB, sh_, mh, twos, sctp);
    const r = await backendFor(config).sync({ families, full: true, changed: new Set() });
    expect(r.problems.map((p) => `${p.object} ${p.path}: ${p.message}`)).toEqual([
      'k/twos metadata.annotations["kproxy.io/ipvs-scheduler"]: the kernel offers no IPVS scheduler "twos" (module ip_vs_twos); the Service uses wlc',
    ]);
    const save = await ipvsSave();
    expect(save).toContain('-A -t 10.96.9.10:80 -s wlc');
    expect(save).toContain('-A -t 10.96.9.20:80 -s sh');
    expect(save).toContain('-A -t 10.96.9.21:80 -s mh -b mh-port');
    expect(save).toContain('-A -t 10.96.9.22:80 -s wlc');
    expect(save).toContain('-A --sctp-service 10.96.9.24:9000 -s wlc');
    expect(save).toContain('-a --sctp-service 10.96.9.24:9000 -r 10.244.9.11:8080 -m -w 1');
    // Source hashing: every connection from this node lands on one pod.
    expect(Object.keys(await tally(sh_.ip, 6))).toHaveLength(1);

    const bad = desired(['--ipvs-scheduler=twos'], WEB);
    await expect(
      backendFor(bad.config).sync({ families: bad.families, full: true, changed: new Set() }),
    ).rejects.toThrow(KernelToolError);
    await expect(
      backendFor(bad.config).sync({ families: bad.families, full: true, changed: new Set() }),
    ).rejects.toThrow(
      /the kernel offers no IPVS scheduler "twos" \(module ip_vs_twos\); choose another with --ipvs-scheduler/,
    );
    await cleanKernel();
  });

  it('ClientIP affinity as persistence, connection timeouts, strictARP, and excludeCIDRs', async () => {
    const sticky: Svc = { ...WEB, name: 'sticky', ip: '10.96.9.30', affinity: 600 };
    const excluded: Svc = { ...WEB, name: 'excluded', ip: '10.96.9.200' };
    const flags = [
      '--ipvs-tcp-timeout=901s',
      '--ipvs-tcpfin-timeout=31s',
      '--ipvs-udp-timeout=61s',
      '--ipvs-strict-arp',
      '--ipvs-exclude-cidrs=10.96.9.128/25',
    ];
    await syncOnce(flags, sticky, excluded);
    expect(await ipvsSave()).toContain('-A -t 10.96.9.30:80 -s rr -p 600');
    expect(Object.keys(await tally(sticky.ip, 6))).toHaveLength(1);
    expect(await sh('ipvsadm', '-L', '--timeout')).toMatch(/901 31 61/);
    expect(await sh('sysctl', '-n', 'net.ipv4.conf.all.arp_ignore')).toBe('1');
    expect(await sh('sysctl', '-n', 'net.ipv4.conf.all.arp_announce')).toBe('2');
    for (const s of [
      'net.ipv4.vs.conntrack',
      'net.ipv4.vs.expire_nodest_conn',
      'net.ipv4.vs.expire_quiescent_template',
      'net.ipv4.ip_forward',
    ])
      expect(await sh('sysctl', '-n', s), s).toBe('1');

    // Both Services go: the one inside excludeCIDRs keeps its virtual server (and kproxy forgets it).
    await syncOnce(flags);
    const save = await ipvsSave();
    expect(save).not.toContain('10.96.9.30');
    expect(save).toContain('-A -t 10.96.9.200:80 -s rr');
    expect(await sh('nft', 'list', 'set', 'ip', 'kproxy-ipvs', 'virtual-servers')).not.toContain('10.96.9.200');
    await cleanKernel();
  });
  it('the daemon (kproxy run) in IPVS mode: follows a watched manifest directory, serves /proxyMode and its metrics', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kproxy-ipvs-daemon-'));
    const write = (...services: Svc[]) =>
      writeFileSync(
        join(dir, 'cluster.json'),
        JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects(...services) }),
      );
    // The batch runs before kube-ipvs0 gets the addresses: wait for both.
    const until = async (what: string, check: (save: string) => boolean) => {
      const deadline = Date.now() + 60_000;
      while (!check(await ipvsSave()) || !(await dummyAddresses())?.includes(WEB.ip)) {
        if (Date.now() > deadline) throw new Error(`the daemon did not ${what}: ${await ipvsSave()}`);
        await new Promise((res) => setTimeout(res, 500));
      }
    };
    write(WEB);
    const { config } = desired(['--ipvs-min-sync-period=100ms', '--ipvs-sync-period=5s']);
    const daemon = await startDaemon({
      config: { ...config, healthzBindAddress: '127.0.0.1:0', metricsBindAddress: '127.0.0.1:0' },
      source: manifestSource({ dir, nodeName: NODE, log: quiet, pollMs: 500 }),
      events: logEventRecorder(quiet),
      log: quiet,
    });
    try {
      await until(
        'program WEB',
        (s) => s.includes('-r 10.244.9.11:8080 -m -w 1') && s.includes('-r 10.244.9.12:8080 -m -w 1'),
      );
      expect(await tally(WEB.ip, 4)).toEqual({ p1: 2, p2: 2 });
      write({ ...WEB, pods: ['p2'] }, DNS);
      // p1 drains (its closed connections linger in TIME_WAIT) or is already gone.
      await until(
        'follow the change',
        (s) =>
          (s.includes('-r 10.244.9.11:8080 -m -w 0') || !s.includes('10.244.9.11:8080')) && s.includes('10.96.9.53:53'),
      );
      while (!(await dummyAddresses())?.includes(DNS.ip)) await new Promise((res) => setTimeout(res, 500));
      expect(await udpAsk(DNS.ip)).toBe('p1');
      const base = daemon.metricsServer?.url ?? '';
      expect(await (await fetch(`${base}/proxyMode`)).text()).toBe('ipvs');
      const metrics = await (await fetch(`${base}/metrics`)).text();
      // Upstream's IPVS-mode failure counter (per ip_family), never incremented here.
      expect(metrics).toMatch(/^# HELP kubeproxy_sync_proxy_rules_iptables_restore_failures_total /m);
      expect(metrics).not.toMatch(/^kubeproxy_sync_proxy_rules_iptables_restore_failures_total\S* [1-9]/m);
      expect(metrics).toMatch(/^kubeproxy_sync_proxy_rules_duration_seconds_count\S* [1-9]/m);
      expect((await fetch(`${daemon.healthz?.url ?? ''}/livez`)).status).toBe(200);
    } finally {
      await daemon.stop();
      rmSync(dir, { recursive: true, force: true });
      await cleanKernel();
    }
  });
});
