// Agent process for flow tests. Runs inside a network namespace:
//   ip netns exec NS <node> agent.ts NAME
// It is both a server (TCP/UDP listeners answering with a JSON line naming NAME and the peer)
// and a client (probes on request). Requests/responses are JSON lines on stdin/stdout
// (see protocol.ts). It exits when stdin closes, so a dead test process never leaves it behind.
import * as dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as readline from 'node:readline';
import type { AgentRequest, AgentResponse, ProbeResult, ProbeSpec, ServerReply } from './protocol.ts';

const name = process.argv[2] ?? 'agent';
const DEFAULT_TIMEOUT_MS = 400;

function unmap(addr: string | undefined): string {
  if (addr === undefined) return '';
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  return m?.[1] ?? addr;
}

function send(res: AgentResponse): void {
  process.stdout.write(`${JSON.stringify(res)}\n`);
}

// ---------------------------------------------------------------- servers

const tcpServers = new Map<number, net.Server>();
const udpServers = new Map<number, dgram.Socket>();

function listenTcp(port: number): Promise<void> {
  if (tcpServers.has(port)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const server = net.createServer((sock) => {
      sock.on('error', () => {});
      const reply: ServerReply = {
        pod: name,
        peer: unmap(sock.remoteAddress),
        peerPort: sock.remotePort ?? 0,
        local: unmap(sock.localAddress),
        localPort: sock.localPort ?? 0,
        proto: 'tcp',
      };
      sock.end(`${JSON.stringify(reply)}\n`);
    });
    server.once('error', reject);
    // '::' with ipv6Only=false is dual stack: IPv4 clients show up as ::ffff:a.b.c.d.
    server.listen({ port, host: '::', ipv6Only: false, backlog: 1024 }, () => {
      server.off('error', reject);
      server.on('error', () => {});
      tcpServers.set(port, server);
      resolve();
    });
  });
}

function listenUdp(port: number): Promise<void> {
  if (udpServers.has(port)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket({ type: 'udp6', ipv6Only: false });
    sock.once('error', reject);
    sock.on('message', (_msg, rinfo) => {
      const addr = sock.address();
      const reply: ServerReply = {
        pod: name,
        peer: unmap(rinfo.address),
        peerPort: rinfo.port,
        // A wildcard UDP socket does not know the datagram's destination address; report the port only.
        local: '',
        localPort: addr.port,
        proto: 'udp',
      };
      sock.send(`${JSON.stringify(reply)}\n`, rinfo.port, rinfo.address, () => {});
    });
    sock.bind({ port, address: '::' }, () => {
      sock.off('error', reject);
      sock.on('error', () => {});
      udpServers.set(port, sock);
      resolve();
    });
  });
}

async function unlisten(tcp: number[], udp: number[]): Promise<void> {
  await Promise.all([
    ...tcp.map(
      (p) =>
        new Promise<void>((resolve) => {
          const s = tcpServers.get(p);
          tcpServers.delete(p);
          if (s === undefined) return resolve();
          s.close(() => resolve());
        }),
    ),
    ...udp.map(
      (p) =>
        new Promise<void>((resolve) => {
          const s = udpServers.get(p);
          udpServers.delete(p);
          if (s === undefined) return resolve();
          s.close(() => resolve());
        }),
    ),
  ]);
}

// ---------------------------------------------------------------- probes

function errorResult(err: NodeJS.ErrnoException): ProbeResult {
  const code = err.code ?? 'UNKNOWN';
  if (code === 'ECONNREFUSED') return { kind: 'rejected' };
  return { kind: 'error', code, message: err.message };
}

function parseReply(text: string): ProbeResult {
  try {
    const r = JSON.parse(text.trim()) as ServerReply;
    return { kind: 'answered', ...r };
  } catch {
    return { kind: 'error', code: 'EBADREPLY', message: `unparseable reply: ${JSON.stringify(text.slice(0, 200))}` };
  }
}

/**
 * TcpExtLockDroppedIcmps of this namespace: ICMP errors that reached a TCP socket while its owner
 * held the lock. For a SYN_SENT socket the kernel then keeps only a soft error and reports it when
 * the SYN is retransmitted (after 1 s). IPv6 TCP rejects hit this when the whole round trip runs in
 * the softirq of the connect() syscall (see cpuPlan() in topology.ts).
 */
function lockDroppedIcmps(): number {
  try {
    const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const keys = lines[i]?.split(/\s+/) ?? [];
      if (keys[0] !== 'TcpExt:') continue;
      const idx = keys.indexOf('LockDroppedIcmps');
      return idx < 0 ? 0 : Number(lines[i + 1]?.split(/\s+/)[idx] ?? 0);
    }
  } catch {
    /* no /proc: no extension */
  }
  return 0;
}

/** Wait this long after connect() when an ICMP error may have been lock-dropped (SYN RTO is 1 s). */
const SYN_RETRANSMIT_CONFIRM_MS = 1400;

function probeTcp(spec: ProbeSpec): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const started = Date.now();
    const dropped0 = lockDroppedIcmps();
    let done = false;
    let connected = false;
    let data = '';
    const opts: net.NetConnectOpts = { host: spec.host, port: spec.port, noDelay: true };
    if (spec.sourcePort !== undefined) opts.localPort = spec.sourcePort;
    if (spec.sourceAddress !== undefined) opts.localAddress = spec.sourceAddress;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const sock = net.connect(opts);
    const finish = (r: ProbeResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const onTimeout = (): void => {
      if (connected) {
        finish({ kind: 'error', code: 'ENODATA', message: 'connected but no answer before timeout' });
        return;
      }
      const remaining = started + SYN_RETRANSMIT_CONFIRM_MS - Date.now();
      if (remaining > 0 && lockDroppedIcmps() > dropped0) {
        // An ICMP error for some connect() in flight was only kept as a soft error: wait for the
        // SYN retransmit, which turns it into a hard error (ECONNREFUSED/EHOSTUNREACH/...).
        timer = setTimeout(() => finish({ kind: 'timeout' }), remaining);
        return;
      }
      finish({ kind: 'timeout' });
    };
    timer = setTimeout(onTimeout, spec.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      connected = true;
    });
    sock.on('data', (chunk: string) => {
      data += chunk;
    });
    sock.on('end', () => finish(parseReply(data)));
    sock.on('error', (err: NodeJS.ErrnoException) => {
      // A reset after the answer arrived still counts as answered.
      if (data.includes('\n')) finish(parseReply(data));
      else finish(errorResult(err));
    });
  });
}

function probeUdp(spec: ProbeSpec): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let done = false;
    const type = net.isIPv6(spec.host) ? 'udp6' : 'udp4';
    const sock = dgram.createSocket({ type });
    const finish = (r: ProbeResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        sock.close();
      } catch {
        /* already closed */
      }
      resolve(r);
    };
    const timer = setTimeout(() => finish({ kind: 'timeout' }), spec.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    // A connected UDP socket gets ICMP errors (port unreachable → ECONNREFUSED) as socket errors.
    sock.on('error', (err: NodeJS.ErrnoException) => finish(errorResult(err)));
    sock.on('message', (msg) => finish(parseReply(msg.toString('utf8'))));
    const bindOpts: dgram.BindOptions = { port: spec.sourcePort ?? 0 };
    if (spec.sourceAddress !== undefined) bindOpts.address = spec.sourceAddress;
    sock.bind(bindOpts, () => {
      sock.connect(spec.port, spec.host, (err?: Error) => {
        if (err) return finish(errorResult(err as NodeJS.ErrnoException));
        sock.send('probe\n', (e) => {
          if (e) finish(errorResult(e as NodeJS.ErrnoException));
        });
      });
    });
  });
}

function probeOnce(spec: ProbeSpec): Promise<ProbeResult> {
  return spec.proto === 'tcp' ? probeTcp(spec) : probeUdp(spec);
}

async function probeMany(spec: ProbeSpec, count: number, concurrency: number): Promise<ProbeResult[]> {
  const results = new Array<ProbeResult>(count);
  let next = 0;
  const workers = Math.max(1, Math.min(spec.sourcePort !== undefined ? 1 : concurrency, count));
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (next < count) {
        const i = next++;
        results[i] = await probeOnce(spec);
      }
    }),
  );
  return results;
}

// ---------------------------------------------------------------- request loop

async function handle(req: AgentRequest): Promise<AgentResponse> {
  switch (req.op) {
    case 'ping':
      return { id: req.id, ok: true };
    case 'listen':
      await Promise.all([...req.tcp.map(listenTcp), ...req.udp.map(listenUdp)]);
      return { id: req.id, ok: true, tcp: [...tcpServers.keys()], udp: [...udpServers.keys()] };
    case 'unlisten':
      await unlisten(req.tcp, req.udp);
      return { id: req.id, ok: true, tcp: [...tcpServers.keys()], udp: [...udpServers.keys()] };
    case 'probe':
      return { id: req.id, ok: true, results: await probeMany(req.spec, req.count, req.concurrency) };
  }
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  if (line.trim() === '') return;
  let req: AgentRequest;
  try {
    req = JSON.parse(line) as AgentRequest;
  } catch {
    return;
  }
  handle(req).then(send, (err: unknown) => {
    send({
      id: req.id,
      ok: false,
      error: err instanceof Error ? `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`.trim() : String(err),
    });
  });
});
rl.on('close', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
send({ id: 0, ok: true });
