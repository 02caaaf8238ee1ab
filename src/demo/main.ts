/**
 * @module demo/main
 * `make demo [MODE=nftables|iptables]`: builds a sandbox of network namespaces (a node, a client
 * pod, three backend pods serving HTTP, an outside client), programs the node with `kproxy sync
 * --proxy-mode MODE` from `examples/`, sends
 * real HTTP requests through the ClusterIPs and the NodePort, tallies which backend answered,
 * explains one of the requests (`kproxy explain`), shows an excerpt of `kproxy dump`, and removes
 * the sandbox (also when something fails).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { createTopology, type Topology } from '../sandbox/topology.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const kproxy = `${root}bin/kproxy`;
const MODE = process.env['MODE'] || 'nftables';
const FLAGS = [
  '--proxy-mode',
  MODE,
  '--manifests',
  `${root}examples`,
  '--hostname-override',
  'demo-node',
  '--cluster-cidr',
  '10.244.0.0/16,fd00:10:244::/56',
];
const BACKENDS = ['backend-1', 'backend-2', 'backend-3'];
/** The lines of each mode's dump that show demo/web. */
const DUMP_EXCERPT: Record<string, RegExp> = {
  nftables:
    /^add rule ip kproxy (services|(masq-)?dnat-(np-)?\d+) |^add element ip kproxy (service-ips|service-nodeports|(nodeport-)?(endpoint-addresses|target-ports)) |^\t(10\.96\.0\.10 |tcp \. 30080 .*: (goto|10\.))/,
  iptables: /demo\/web/,
  ipvs: /^-[Aa] -t (10\.96\.0\.10:80|192\.0\.2\.1:30080) |^address add 10\.96\.0\.10\/32 dev kube-ipvs0/,
};
const REQUESTS = 30;

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write(
      'make demo needs root: it creates network namespaces and programs the kernel in them. Run it as root (e.g. sudo make demo).\n',
    );
    return 1;
  }
  const say = (s: string) => process.stdout.write(`${s}\n`);
  say('Building the sandbox: a node, a client pod, three backend pods (HTTP on :8080), an outside client...');
  const topo = await createTopology({
    pods: [
      { name: 'client', v4: '10.244.0.2', v6: 'fd00:10:244::2', tcpPorts: [], udpPorts: [] },
      ...BACKENDS.map((name, i) => ({
        name,
        v4: `10.244.0.${11 + i}`,
        v6: `fd00:10:244::${11 + i}`,
        tcpPorts: [],
        udpPorts: [],
      })),
    ],
    podCidr: { v4: '10.244.0.0/24', v6: 'fd00:10:244::/64' },
    clients: 1,
  });
  const servers: ChildProcess[] = [];
  try {
    for (const name of BACKENDS) servers.push(await startBackend(topo.pod(name).ns, name));

    say(`\n$ kproxy sync ${FLAGS.join(' ')}    (inside the node's namespace)`);
    const sync = await execa('ip', ['netns', 'exec', topo.node.ns, kproxy, 'sync', ...FLAGS], { reject: false });
    process.stdout.write(summariseLog(sync.stderr));
    if (sync.exitCode !== 0) throw new Error(`kproxy sync failed (exit ${sync.exitCode})`);

    await tally(topo, 'client', 'client pod → ClusterIP http://10.96.0.10/', 'http://10.96.0.10/');
    await tally(topo, 'client', 'client pod → ClusterIP http://[fd00:10:96::a]/', 'http://[fd00:10:96::a]/', 12);
    await tally(
      topo,
      topo.client().name,
      'outside client → NodePort http://192.0.2.1:30080/',
      'http://192.0.2.1:30080/',
      12,
    );

    // Why did the client's requests go where they went? The same model, asked about one packet.
    const why = ['explain', '--src', topo.pod('client').v4, '--dst', '10.96.0.10:80', ...FLAGS];
    say(`\n$ kproxy ${why.join(' ')}`);
    const explained = await execa(kproxy, why);
    say(explained.stdout.replace(/^/gm, '  '));

    say('\nAn excerpt of `kproxy dump` (the IPv4 rules for demo/web; `kproxy dump` prints all of it):');
    const dump = await execa(kproxy, ['dump', ...FLAGS, '--ip-family', 'ipv4']);
    const lines = dump.stdout.split('\n').filter((l) => DUMP_EXCERPT[MODE]?.test(l));
    say(lines.map((l) => `  ${l}`).join('\n'));
    say('\nDone: the kernel balanced every request; kproxy only wrote the rules.');
    return 0;
  } finally {
    for (const s of servers) s.kill();
    await topo.destroy();
    say('Sandbox removed.');
  }
}

function startBackend(ns: string, name: string): Promise<ChildProcess> {
  const child = spawn(
    'ip',
    ['netns', 'exec', ns, process.execPath, fileURLToPath(new URL('./http-backend.ts', import.meta.url)), name, '8080'],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  return new Promise((resolve, reject) => {
    child.stdout?.once('data', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`backend ${name} exited (${code})`)));
  });
}

/** Sends `count` HTTP requests from a namespace, each on a new connection (no keep-alive: every
 * connection is balanced by the kernel once), and prints who answered. */
async function tally(topo: Topology, from: string, label: string, url: string, count = REQUESTS): Promise<void> {
  const ns = from === 'client' ? topo.pod('client').ns : topo.client().ns;
  const script = `
    import { get } from 'node:http';
    const once = () => new Promise((resolve) => {
      const req = get(${JSON.stringify(url)}, { agent: false, timeout: 2000 }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d)).on('end', () => resolve(body.trim()));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => resolve('failed: ' + (e.code ?? e.message)));
    });
    const counts = {};
    for (let i = 0; i < ${count}; i++) { const who = await once(); counts[who] = (counts[who] ?? 0) + 1; }
    process.stdout.write(JSON.stringify(counts));`;
  const r = await execa('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script]);
  const counts = JSON.parse(r.stdout) as Record<string, number>;
  process.stdout.write(`\n${label}: ${count} requests\n`);
  for (const [who, n] of Object.entries(counts).sort())
    process.stdout.write(`  ${who.padEnd(12)} ${'#'.repeat(n)} ${n}\n`);
}

/** kproxy logs JSON lines; show the message and the interesting counts. */
function summariseLog(stderr: string): string {
  return stderr
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      try {
        const o = JSON.parse(line) as Record<string, unknown>;
        const { level: _l, time: _t, msg, ...rest } = o;
        return `  ${String(msg)} ${JSON.stringify(rest)}\n`;
      } catch {
        return `  ${line}\n`;
      }
    })
    .join('');
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
