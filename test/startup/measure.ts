/**
 * Start-up and convergence figures of `kproxy run`, measured on whole processes (issue 13; the
 * README's "Start-up and convergence" section and docs/adr/0007 quote its output):
 *
 *   node test/startup/measure.ts [--services 20] [--endpoints 10] [--modes nftables,iptables]
 *                                [--restarts 5] [--quiet-seconds 0] [--cli-runs 9]
 *
 * Needs root. Runs itself inside a fresh network namespace, where it serves a fake API server
 * (test/support/fake-apiserver.ts) with N Services × M endpoints and starts `bin/kproxy run
 * --kubeconfig` as a child process, exactly as a user would:
 *
 *  - cli: `node -e 0`, `kproxy --help`, `kproxy --version` (wall time and peak RSS, median);
 *  - exec → first list request (the API server sees it), exec → first sync logged, exec → the
 *    kernel holds the rules (polled: `nft get element` on the endpoint map / `iptables-save`, src/bench/kernel-probe.ts), from an empty kernel;
 *  - restart: kill -9, change one EndpointSlice while kproxy is down, start it again: exec → the
 *    change is in the kernel (polled at ≤ 1,000 Services, else the sync's own log line);
 *  - quiet: the daemon's average CPU (itself and its process tree: the tool child, the tools) with no
 *    changes, over --quiet-seconds (the light consistency check runs every syncPeriod, 30 s).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { serviceHasEndpoint } from '../../src/bench/kernel-probe.ts';
import {
  firstListAt,
  now,
  sleep,
  startKproxyRun,
  syncLogged,
  whenTrue,
  type KproxyProcess,
} from '../../src/bench/kproxy-run.ts';
import { FakeApiServer, kubeconfigYaml } from '../support/fake-apiserver.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const KPROXY = join(ROOT, 'bin/kproxy');
const NODE_BIN = join(ROOT, 'node_modules/node/bin/node');
const NODE = 'node-a';
const NODE_IP = '10.0.0.1';

const { values } = parseArgs({
  options: {
    services: { type: 'string', default: '20' },
    endpoints: { type: 'string', default: '10' },
    modes: { type: 'string', default: 'nftables,iptables' },
    restarts: { type: 'string', default: '5' },
    'quiet-seconds': { type: 'string', default: '0' },
    'cli-runs': { type: 'string', default: '9' },
  },
});
const SERVICES = Number(values.services);
const ENDPOINTS = Number(values.endpoints);
const MODES = String(values.modes).split(',') as ('nftables' | 'iptables')[];
const RESTARTS = Number(values.restarts);
const QUIET_S = Number(values['quiet-seconds']);
const CLI_RUNS = Number(values['cli-runs']);

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : (s[Math.floor((s.length - 1) / 2)] as number);
};
const ms = (x: number): string => `${Math.round(x)} ms`;

// ---------------------------------------------------------------------------------------------
// A fresh network namespace for the whole run

if (!process.env['KP_MEASURE_NS']) {
  if (process.getuid?.() !== 0) throw new Error('measure.ts needs root (network namespaces, nft)');
  const ns = `kpmeasure${process.pid}`;
  spawnSync('ip', ['netns', 'add', ns], { stdio: 'inherit' });
  try {
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, ...process.argv.slice(1)], {
      stdio: 'inherit',
      env: { ...process.env, KP_MEASURE_NS: ns },
    });
    process.exitCode = r.status ?? 1;
  } finally {
    spawnSync('ip', ['netns', 'del', ns], { stdio: 'inherit' });
  }
} else {
  await measureAll();
}

async function measureAll(): Promise<void> {
  run('ip', ['link', 'set', 'lo', 'up']);
  run('ip', ['link', 'add', 'kp0', 'type', 'veth', 'peer', 'name', 'kp1']);
  run('ip', ['link', 'set', 'kp1', 'up']);
  run('ip', ['addr', 'add', `${NODE_IP}/24`, 'dev', 'kp0']);
  run('ip', ['link', 'set', 'kp0', 'up']);
  const cpus = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  console.log(`# kproxy start-up: ${SERVICES} Services × ${ENDPOINTS} endpoints; load average ${cpus}`);
  if (CLI_RUNS > 0) cli();
  for (const mode of MODES) await daemon(mode);
}

function run(file: string, args: readonly string[]): string {
  const r = spawnSync(file, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

// ---------------------------------------------------------------------------------------------
// The CLI, whole processes

function cli(): void {
  const time = (argv: readonly string[]): { wall: number; rss: number } => {
    const walls: number[] = [];
    const rss: number[] = [];
    for (let i = 0; i < CLI_RUNS; i++) {
      const r = spawnSync('/usr/bin/time', ['-f', '%e %M', ...argv], { encoding: 'utf8' });
      const [wall, kb] = (r.stderr.trim().split('\n').at(-1) ?? '').split(' ').map(Number);
      walls.push((wall ?? Number.NaN) * 1000);
      rss.push((kb ?? Number.NaN) / 1024);
    }
    return { wall: median(walls), rss: median(rss) };
  };
  // One warm-up run fills Node's compile cache, as any earlier kproxy command on the machine does.
  spawnSync(KPROXY, ['--help']);
  const base = time([NODE_BIN, '-e', '0']);
  console.log(`cli: node -e 0 ${ms(base.wall)}, ${base.rss.toFixed(0)} MiB (median of ${CLI_RUNS})`);
  for (const args of [['--help'], ['--version']]) {
    const t = time([KPROXY, ...args]);
    console.log(
      `cli: kproxy ${args.join(' ')} ${ms(t.wall)} (${(t.wall / base.wall).toFixed(1)}× node -e 0), ${t.rss.toFixed(0)} MiB`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// The daemon

type Obj = Record<string, unknown>;

function clusterIP(i: number): string {
  return `10.96.${Math.floor(i / 250)}.${(i % 250) + 1}`;
}

function endpointIP(i: number, j: number): string {
  const n = i * ENDPOINTS + j;
  return `10.${100 + Math.floor(n / 62500)}.${Math.floor(n / 250) % 250}.${(n % 250) + 1}`;
}

function serviceObject(i: number): Obj {
  return {
    metadata: { name: `svc-${i}`, namespace: 'bench' },
    spec: {
      type: 'ClusterIP',
      clusterIP: clusterIP(i),
      clusterIPs: [clusterIP(i)],
      ipFamilies: ['IPv4'],
      ipFamilyPolicy: 'SingleStack',
      ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }],
    },
  };
}

function sliceObject(i: number, first?: string): Obj {
  return {
    metadata: { name: `svc-${i}-1`, namespace: 'bench', labels: { 'kubernetes.io/service-name': `svc-${i}` } },
    addressType: 'IPv4',
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
    endpoints: Array.from({ length: ENDPOINTS }, (_, j) => ({
      addresses: [j === 0 && first ? first : endpointIP(i, j)],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: `node-${j % 50}`,
    })),
  };
}

function startKproxy(kubeconfig: string, mode: string): KproxyProcess {
  return startKproxyRun([
    '--kubeconfig',
    kubeconfig,
    '--hostname-override',
    NODE,
    '--proxy-mode',
    mode,
    '--cluster-cidr',
    '10.244.0.0/16',
    '--healthz-bind-address',
    '127.0.0.1:10256',
    '--metrics-bind-address',
    '127.0.0.1:10249',
    ...(process.env['KP_MEASURE_DEBUG'] ? ['-v', '5'] : []),
    ...(process.env['KP_MEASURE_FLAGS']?.split(' ').filter(Boolean) ?? []),
  ]);
}

/** Service i's endpoints in the kernel include `ip`. */
function kernelHas(mode: 'nftables' | 'iptables', i: number, ip: string): Promise<boolean> {
  return serviceHasEndpoint(mode, 'nft', { clusterIp: clusterIP(i), port: 80, endpoints: ENDPOINTS }, ip);
}

/** utime, stime, cutime, cstime of a process, in clock ticks (fields 14-17 of /proc/PID/stat). */
function cpuFields(path: string): number[] {
  const stat = readFileSync(path, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return [11, 12, 13, 14].map((i) => Number(fields[i]));
}

/**
 * CPU of a process and every descendant still running (each with its reaped children): the
 * daemon's tools run in its spawner's child (libnftables, netlink), whose time the daemon's own
 * cutime never holds while the child lives.
 */
function cpuTicks(pid: number): number {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // the process ended
    }
  }
  let total = 0;
  const visit = (p: number): void => {
    try {
      total += cpuFields(`/proc/${p}/stat`).reduce((a, b) => a + b, 0);
    } catch {
      return;
    }
    for (const c of children.get(p) ?? []) visit(c);
  };
  visit(pid);
  return total;
}

/** Per thread (name → utime + stime) of a process. */
function threadTicks(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const [u = 0, s = 0] = cpuFields(`/proc/${pid}/task/${tid}/stat`);
      out.set(`${name}/${tid}`, u + s);
    } catch {
      // the thread ended
    }
  }
  return out;
}

async function daemon(mode: 'nftables' | 'iptables'): Promise<void> {
  // Leftovers of a previous mode in this namespace.
  spawnSync('nft', ['flush', 'ruleset']);
  // A real API server sends a watch bookmark about once a minute (the fake's default is 500 ms).
  const server = await FakeApiServer.start({ bookmarkIntervalMs: 60_000 });
  const dir = mkdtempSync(join(tmpdir(), 'kpmeasure-'));
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, kubeconfigYaml(server));
  server.create('Node', {
    metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE } },
    spec: { podCIDRs: ['10.244.0.0/24'] },
    status: { addresses: [{ type: 'InternalIP', address: NODE_IP }] },
  });
  server.create('ServiceCIDR', { metadata: { name: 'kubernetes' }, spec: { cidrs: ['10.96.0.0/16'] } });
  for (let i = 0; i < SERVICES; i++) {
    server.create('Service', serviceObject(i));
    server.create('EndpointSlice', sliceObject(i));
  }
  const poll = SERVICES <= 1000;

  // Cold start: an empty kernel.
  let requestsBefore = server.requests.length;
  let child = startKproxy(kubeconfig, mode);
  const probe = endpointIP(SERVICES - 1, 0);
  const kernelAt = poll
    ? await whenTrue('the rules', () => kernelHas(mode, SERVICES - 1, probe), 120_000, 5)
    : (await whenTrue('the first sync', () => syncLogged(child) !== undefined, 600_000, 50)) &&
      (syncLogged(child)?.at as number);
  let listAt = firstListAt(server.requests, requestsBefore);
  await whenTrue('the first sync logged', () => syncLogged(child) !== undefined, 600_000, 5);
  const first = syncLogged(child);
  console.log(
    `${mode}: cold start, exec → first list request ${listAt ? ms(listAt - child.spawnedAt) : '?'}, → first sync logged ${
      first ? ms(first.at - child.spawnedAt) : '?'
    } (its own ms: ${first?.line['ms']}), → rules in the kernel ${ms(kernelAt - child.spawnedAt)}${poll ? '' : ' (log)'}`,
  );
  if (process.env['KP_MEASURE_DEBUG'])
    for (const l of child.lines.slice(0, 30))
      console.log(Math.round(l.at - child.spawnedAt), JSON.stringify(l.line).slice(0, 200));
  if (process.env['KP_MEASURE_DEBUG']) {
    for (const argv of [
      ['nft', '-j', 'list', 'tables', 'ip'],
      ['nft', '-j', 'list', 'chains', 'ip'],
      ['nft', '-j', 'list', 'maps', 'ip'],
      ['conntrack', '-L', '-f', 'ipv4', '-p', 'udp'],
    ]) {
      const r = spawnSync('/usr/bin/time', ['-f', '%e s wall, %U s user, %S s sys', ...argv], {
        encoding: 'utf8',
        maxBuffer: 1 << 30,
      });
      console.log(argv.join(' '), '→', r.stderr.trim().split('\n').at(-1), `${r.stdout.length} bytes`);
    }
  }
  await sleep(SERVICES > 1000 ? 5000 : 1500);

  // Restarts after kill -9, with a change made while kproxy was down.
  const restarts: { list: number; converged: number; firstSyncMs: number }[] = [];
  for (let r = 0; r < RESTARTS; r++) {
    child.kill('SIGKILL');
    await child.exited;
    const fresh = `10.250.${r}.${1 + (Date.now() % 200)}`;
    server.update('EndpointSlice', sliceObject(0, fresh));
    requestsBefore = server.requests.length;
    child = startKproxy(kubeconfig, mode);
    const c = child;
    const at = poll
      ? await whenTrue('the change', () => kernelHas(mode, 0, fresh), 120_000, 5)
      : (await whenTrue('the first sync', () => syncLogged(c) !== undefined, 600_000, 20)) &&
        (syncLogged(c)?.at as number);
    listAt = firstListAt(server.requests, requestsBefore);
    await whenTrue('the first sync logged', () => syncLogged(c) !== undefined, 600_000, 5);
    if (process.env['KP_MEASURE_DEBUG'])
      for (const l of c.lines.filter(
        (x) => x.line['msg'] === 'T' || x.line['msg'] === 'sync' || String(x.line['msg']).includes('synced'),
      ))
        console.log(Math.round(l.at - c.spawnedAt), JSON.stringify(l.line).slice(0, 160));
    restarts.push({
      list: (listAt ?? Number.NaN) - child.spawnedAt,
      converged: at - child.spawnedAt,
      firstSyncMs: Number(syncLogged(c)?.line['ms'] ?? Number.NaN),
    });
    await sleep(SERVICES > 1000 ? 5000 : 1000);
  }
  if (restarts.length > 0) {
    console.log(
      `${mode}: restart after kill -9 (change made while down), median of ${restarts.length}: exec → first list request ${ms(
        median(restarts.map((x) => x.list)),
      )}, exec → change in the kernel ${ms(median(restarts.map((x) => x.converged)))}${poll ? '' : ' (log)'} [${restarts
        .map((x) => Math.round(x.converged))
        .join(', ')}], first sync's own ms ${median(restarts.map((x) => x.firstSyncMs))}`,
    );
  }

  if (QUIET_S > 0) {
    // Settle: the watches open and the first sync's garbage is collected.
    await sleep(SERVICES > 1000 ? 30_000 : 10_000);
    const hz = 100;
    const t0 = now();
    const c0 = cpuTicks(child.pid);
    const f0 = cpuFields(`/proc/${child.pid}/stat`);
    const th0 = threadTicks(child.pid);
    await sleep(QUIET_S * 1000);
    const c1 = cpuTicks(child.pid);
    const f1 = cpuFields(`/proc/${child.pid}/stat`);
    const th1 = threadTicks(child.pid);
    if (process.env['KP_MEASURE_DEBUG']) {
      console.log('utime, stime, cutime, cstime ticks:', f1.map((v, i) => v - (f0[i] ?? 0)).join(', '));
      const busiest = [...th1].map(([k, v]) => [k, v - (th0.get(k) ?? 0)] as const).sort((a, b) => b[1] - a[1]);
      console.log(
        'busiest threads (ticks):',
        busiest
          .slice(0, 6)
          .map(([k, v]) => `${k} ${v}`)
          .join(', '),
      );
    }
    const seconds = (now() - t0) / 1000;
    const checks = child.lines.filter((l) => l.at > t0 && l.line['kind'] === 'none').length;
    const fulls = child.lines.filter((l) => l.at > t0 && l.line['kind'] === 'full').length;
    if (process.env['KP_MEASURE_DEBUG'])
      for (const l of child.lines.filter((x) => x.at > t0 && Number(x.line['level']) >= 30))
        console.log(Math.round(l.at - t0), JSON.stringify(l.line).slice(0, 200));
    console.log(
      `${mode}: quiet for ${seconds.toFixed(0)} s: ${(((c1 - c0) / hz / seconds) * 100).toFixed(2)}% of a core (the daemon and its process tree: the tool child, the tools), ${checks} periodic ticks, ${fulls} full syncs`,
    );
  }
  child.kill('SIGTERM');
  await child.exited;
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}
