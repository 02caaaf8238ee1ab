/**
 * kproxy as a drop-in for kube-proxy: run exactly as kubeadm's DaemonSet runs kube-proxy
 * (`kube-proxy --config=/var/lib/kube-proxy/config.conf --hostname-override=$(NODE_NAME)`, the
 * image's `kube-proxy` name, no subcommand) with kubeadm's ConfigMap in v1alpha1 and in v1alpha2,
 * against the API test double, judged by packets; and the ConfigMap updated under it.
 *
 * The ConfigMap is laid out as the kubelet mounts one: the keys are symlinks through `..data`,
 * which points at a timestamped directory, and an update swaps `..data` by rename.
 *
 * kproxy runs inside the node namespace (its kernel, its healthz and metrics ports) and reaches the
 * API server, which listens on 127.0.0.1 of the test's namespace, through a Unix socket relayed to
 * 127.0.0.1:6443 inside the node namespace (test/support/unix-relay.ts): no address outside the
 * test's namespaces is used.
 */
import { mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTopology, formatTally, type Tally, type Topology } from '../../src/sandbox/topology.ts';
import { FakeApiServer } from '../support/fake-apiserver.ts';
import {
  NODE,
  clusterIP,
  collectJsonLines,
  endpointSlice,
  kproxyTable,
  nodeObject,
  resetNode,
  service,
  serviceCIDRObject,
  showLog,
  syncLines,
  waitFor,
  type LogLine,
} from '../support/daemon-harness.ts';

const KUBE_PROXY = fileURLToPath(new URL('../../bin/kube-proxy', import.meta.url));
const RELAY = fileURLToPath(new URL('../support/unix-relay.ts', import.meta.url));
const FIXTURES = new URL('../fixtures/kube-proxy-config/', import.meta.url);
const fixture = (name: string): string => readFileSync(new URL(name, FIXTURES), 'utf8');

let topo: Topology;
let server: FakeApiServer;
let work: string;
let socketRelay: Server;
let nsRelay: ResultPromise;
const running: ResultPromise[] = [];

beforeAll(async () => {
  topo = await createTopology({
    namePrefix: 'k11',
    pods: [{ name: 'cli', tcpPorts: [], udpPorts: [] }, { name: 'a' }, { name: 'b' }],
    clients: 1,
    tcpPorts: [8080],
    udpPorts: [],
  });
  work = mkdtempSync(join(tmpdir(), 'k11-drop-in-'));
  server = await FakeApiServer.start();
  server.create('Node', nodeObject(topo));
  server.create('ServiceCIDR', serviceCIDRObject());
  server.create('Service', service('web', 10));
  server.create('EndpointSlice', endpointSlice(topo, 'web-1', 'web', ['a', 'b']));
  // The API server, reachable from inside the node namespace through a Unix socket.
  const sock = join(work, 'api.sock');
  socketRelay = createServer((c) => {
    const up = connect(server.port, '127.0.0.1');
    c.pipe(up).pipe(c);
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
  });
  await new Promise<void>((resolve) => socketRelay.listen(sock, resolve));
  nsRelay = execa('ip', ['netns', 'exec', topo.node.ns, process.execPath, RELAY, '127.0.0.1:6443', sock], {
    reject: false,
    buffer: false,
    stdout: 'pipe',
  });
  await new Promise<void>((resolve, reject) => {
    nsRelay.stdout?.once('data', () => resolve());
    nsRelay.once('exit', () => reject(new Error('the relay in the node namespace exited')));
  });
}, 60_000);

afterAll(async () => {
  nsRelay?.kill('SIGTERM');
  await nsRelay;
  await new Promise<void>((resolve) => (socketRelay ? socketRelay.close(() => resolve()) : resolve()));
  await server?.close();
  await topo?.destroy();
  if (work) rmSync(work, { recursive: true, force: true });
});

afterEach(async () => {
  for (const p of running.splice(0)) {
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await p;
  }
  await resetNode(topo);
});

// ---------------------------------------------------------------------------------------------

let generation = 0;

/** A ConfigMap volume as the kubelet writes it, or its update: a new `..data` swapped in by rename. */
function writeConfigMap(dir: string, configConf: string): void {
  mkdirSync(dir, { recursive: true });
  const version = `..2026_11_30_${++generation}`;
  mkdirSync(join(dir, version));
  const data = {
    'config.conf': configConf.replaceAll('/var/lib/kube-proxy/', `${dir}/`),
    'kubeconfig.conf': fixture('kubeadm-kubeconfig.conf').replaceAll('/var/lib/kube-proxy/', `${dir}/`),
    token: 'test-token\n',
  };
  for (const [key, text] of Object.entries(data)) writeFileSync(join(dir, version, key), text);
  symlinkSync(version, join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  for (const key of Object.keys(data)) {
    try {
      symlinkSync(`..data/${key}`, join(dir, key));
    } catch {
      // Already there: the keys point through ..data and need no change.
    }
  }
}

/** `kube-proxy --config=DIR/config.conf --hostname-override=NODE` in the node namespace. */
function kubeProxy(dir: string): { proc: ResultPromise; lines: LogLine[] } {
  const proc = execa(
    'ip',
    ['netns', 'exec', topo.node.ns, KUBE_PROXY, `--config=${dir}/config.conf`, `--hostname-override=${NODE}`],
    { reject: false, buffer: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe' },
  );
  running.push(proc);
  const lines: LogLine[] = [];
  collectJsonLines(proc.stderr, lines);
  return { proc, lines };
}

const cli = (): Topology['pods'][number] => topo.pod('cli');

async function expectServed(ip: string, pods: readonly string[], timeoutMs = 15_000): Promise<void> {
  let last: Tally | undefined;
  const want = [...pods].sort().join(',');
  await waitFor(
    `${ip} served by ${want}`,
    async () => {
      last = await topo.probeMany(cli(), { proto: 'tcp', host: ip, port: 80 }, 8 * pods.length);
      return last.answered === last.total && [...last.byPod.keys()].sort().join(',') === want;
    },
    timeoutMs,
    { intervalMs: 50, describe: () => (last ? formatTally(last) : 'no probe') },
  );
}

async function udpTimeoutInNode(): Promise<string> {
  return (await execa('ip', ['netns', 'exec', topo.node.ns, 'cat', '/proc/sys/net/netfilter/nf_conntrack_udp_timeout']))
    .stdout;
}

async function stop(proc: ResultPromise, lines: readonly LogLine[]): Promise<void> {
  proc.kill('SIGTERM');
  const r = await proc;
  expect(r.exitCode, showLog(lines)).toBe(0);
}

describe("kubeadm's kube-proxy DaemonSet, image swapped", () => {
  for (const version of ['v1alpha1', 'v1alpha2'] as const) {
    it(`${version} ConfigMap: kube-proxy's arguments, no subcommand, traffic flows`, async () => {
      const dir = join(work, `cm-${version}`);
      writeConfigMap(dir, fixture(`kubeadm-${version}.yaml`));
      const { proc, lines } = kubeProxy(dir);
      await waitFor('the first sync', () => syncLines(lines).length > 0, 20_000, { describe: () => showLog(lines) });
      const start = lines.find((l) => l.msg === 'kproxy starting');
      expect(start, showLog(lines)).toMatchObject({
        mode: 'nftables',
        node: NODE,
        configSource: `${dir}/config.conf`,
        configVersion: version,
      });
      expect(typeof start?.['version']).toBe('string');
      await expectServed(clusterIP(10), ['a', 'b']);
      // The node setup ran and was logged (nf_conntrack_max is read-only outside the host namespace).
      expect(
        lines.some((l) => String(l.msg).includes('nf_conntrack_tcp_timeout_established')),
        showLog(lines),
      ).toBe(true);
      await stop(proc, lines);
    });
  }

  it('a ConfigMap update is applied live (full resync, traffic uninterrupted; the node setup in place); a restart-only change and an invalid file are refused', async () => {
    const dir = join(work, 'cm-reload');
    const base = fixture('kubeadm-v1alpha1.yaml');
    writeConfigMap(dir, base);
    const { proc, lines } = kubeProxy(dir);
    await waitFor('the first sync', () => syncLines(lines).length > 0, 20_000, { describe: () => showLog(lines) });
    await expectServed(clusterIP(10), ['a', 'b']);
    const before = await kproxyTable(topo);

    // Probe all along: the reload must not drop a connection.
    let probing = true;
    const tallies: Tally[] = [];
    const prober = (async () => {
      while (probing) tallies.push(await topo.probeMany(cli(), { proto: 'tcp', host: clusterIP(10), port: 80 }, 4));
    })();

    const masqueradeAll = base.replace('nftables:\n  masqueradeAll: false', 'nftables:\n  masqueradeAll: true');
    writeConfigMap(dir, masqueradeAll);
    await waitFor('the reload', () => lines.some((l) => l.msg.startsWith('configuration reloaded')), 10_000, {
      describe: () => showLog(lines),
    });
    expect(lines.find((l) => l.msg.startsWith('the config file changed; applying it live'))?.['changed']).toEqual([
      'masqueradeAll',
    ]);
    await waitFor('the rules of masqueradeAll', async () => (await kproxyTable(topo)) !== before, 5000);

    // The node setup alone: applied in place, no new daemon.
    const udpTimeout = masqueradeAll.replace(
      '  udpStreamTimeout: 0s\n  udpTimeout: 0s',
      '  udpStreamTimeout: 0s\n  udpTimeout: 33s',
    );
    writeConfigMap(dir, udpTimeout);
    await waitFor('the conntrack UDP timeout', async () => (await udpTimeoutInNode()) === '33', 10_000, {
      describe: () => showLog(lines),
    });
    expect(lines.filter((l) => l.msg.startsWith('configuration reloaded'))).toHaveLength(1);
    expect(lines.findLast((l) => l.msg.startsWith('the config file changed; applying it live'))?.['changed']).toEqual([
      'nodeSetup',
    ]);

    // A restart-only change (the mode): logged, and the running configuration kept.
    writeConfigMap(dir, udpTimeout.replace('mode: ""', 'mode: iptables'));
    await waitFor('the refusal', () => lines.some((l) => l.msg.includes('which only a restart applies')), 10_000, {
      describe: () => showLog(lines),
    });
    expect(lines.find((l) => l.msg.includes('which only a restart applies'))?.['restartNeeded']).toEqual(['mode']);
    // An invalid file: logged, kept.
    writeConfigMap(dir, udpTimeout.replace('clusterCIDR: 10.244.0.0/16', 'clusterCIDR: 10.244.0.0/99'));
    await waitFor(
      'the invalid file',
      () => lines.some((l) => l.msg.startsWith('the changed config file is invalid')),
      10_000,
    );

    probing = false;
    await prober;
    const total = tallies.reduce((n, t) => n + t.total, 0);
    const answered = tallies.reduce((n, t) => n + t.answered, 0);
    expect(answered, `${answered} of ${total} connections answered during the reloads`).toBe(total);
    expect(total).toBeGreaterThan(8);
    await expectServed(clusterIP(10), ['a', 'b']);
    expect(proc.exitCode).toBeNull();
    await stop(proc, lines);
  });

  it('a Service skipped as invalid gets a Warning event', async () => {
    const dir = join(work, 'cm-events');
    writeConfigMap(dir, fixture('kubeadm-v1alpha2.yaml'));
    server.create('Service', service('bad', 11, { spec: { ports: [{ name: 'x', protocol: 'TCP', port: 70000 }] } }));
    try {
      const { proc, lines } = kubeProxy(dir);
      await waitFor('the first sync', () => syncLines(lines).length > 0, 20_000, { describe: () => showLog(lines) });
      await waitFor(
        'an InvalidService event',
        () => server.events.some((e) => e.object['reason'] === 'InvalidService'),
        10_000,
        { describe: () => showLog(lines) },
      );
      const event = server.events.find((e) => e.object['reason'] === 'InvalidService')?.object;
      expect(event?.['type']).toBe('Warning');
      expect(String(event?.['message'] ?? event?.['note'])).toContain('spec.ports[0].port');
      await expectServed(clusterIP(10), ['a', 'b']);
      await stop(proc, lines);
    } finally {
      server.delete('Service', 'bad', 'e2e');
    }
  });
});
