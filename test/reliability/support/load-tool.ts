/**
 * The reliability tests' traffic, as a process inside a network namespace:
 *
 *   ip netns exec NS node load-tool.ts tcp  '{"targets":[{"host":"10.96.0.10","port":80}],"rate":200,"timeoutMs":2000}'
 *   ip netns exec NS node load-tool.ts udp  '{"host":"10.96.0.53","port":5353,"intervalMs":50,"timeoutMs":45}'
 *   ip netns exec NS node load-tool.ts echo '{"name":"a","port":5353}'
 *
 * tcp: opens `rate` new connections per second (open loop: a slow answer does not slow the rate),
 * round-robin over the targets, each read until the server's JSON line; prints one JSON line per
 * connection: `{"t":EPOCH_MS,"i":TARGET,"k":KIND,"ms":DURATION,"pod":NAME,"ep":"IP:PORT"}` (ep: the address
 * the server was reached at, i.e. the endpoint the connection was DNATed to) with KIND one of ok,
 * timeout, refused, reset, error (`code` then says which).
 * udp: one socket, one source port for the whole run (a long-lived client such as a resolver),
 * sends a sequence number every `intervalMs`; prints `{"seq":N,"t":EPOCH_MS,"pod":NAME|null}` per
 * datagram (null: no answer within timeoutMs).
 * echo: a UDP server answering `{"pod":NAME,"seq":N}` (the datagram's sequence number).
 * Runs until stdin closes or SIGTERM; prints `{"done":true}` last.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';

const [mode = '', json = '{}'] = process.argv.slice(2);
const opts = JSON.parse(json) as Record<string, unknown>;
let stopping = false;
const out = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
const stops: (() => void)[] = [];
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  for (const s of stops) s();
};
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();
process.on('SIGTERM', stop);

interface Target {
  readonly host: string;
  readonly port: number;
}

function tcp(): void {
  const targets = opts['targets'] as Target[];
  const rate = Number(opts['rate'] ?? 200);
  const timeoutMs = Number(opts['timeoutMs'] ?? 2000);
  let inFlight = 0;
  let n = 0;
  const started = performance.now();
  const one = (i: number): void => {
    const target = targets[i] as Target;
    const t = Date.now();
    const t0 = performance.now();
    inFlight++;
    let data = '';
    let done = false;
    const sock = net.connect({ host: target.host, port: target.port, noDelay: true });
    const finish = (r: Record<string, unknown>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      inFlight--;
      out({ t, i, ms: Math.round((performance.now() - t0) * 10) / 10, ...r });
    };
    const timer = setTimeout(() => finish({ k: 'timeout' }), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('data', (c: string) => {
      data += c;
      const nl = data.indexOf('\n');
      if (nl < 0) return;
      try {
        const reply = JSON.parse(data.slice(0, nl)) as { pod?: string; local?: string; localPort?: number };
        finish({ k: 'ok', pod: reply.pod, ep: `${reply.local}:${reply.localPort}` });
      } catch {
        finish({ k: 'error', code: 'EBADREPLY' });
      }
    });
    sock.on('end', () => finish({ k: 'reset', code: 'EOF' }));
    sock.on('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? 'UNKNOWN';
      finish(
        code === 'ECONNREFUSED'
          ? { k: 'refused' }
          : code === 'ECONNRESET'
            ? { k: 'reset', code }
            : { k: 'error', code },
      );
    });
  };
  // Open loop on a 5 ms tick: as many connections as the schedule says are due.
  const tick = setInterval(() => {
    const due = Math.floor(((performance.now() - started) / 1000) * rate);
    while (n < due && !stopping) one(n++ % targets.length);
  }, 5);
  stops.push(() => {
    clearInterval(tick);
    const wait = setInterval(() => {
      if (inFlight > 0) return;
      clearInterval(wait);
      out({ done: true, sent: n });
      process.exit(0);
    }, 10);
  });
}

function udp(): void {
  const host = String(opts['host']);
  const port = Number(opts['port']);
  const intervalMs = Number(opts['intervalMs'] ?? 50);
  const timeoutMs = Number(opts['timeoutMs'] ?? intervalMs - 5);
  const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  const pending = new Map<number, { t: number; timer: ReturnType<typeof setTimeout> }>();
  let seq = 0;
  sock.on('message', (msg) => {
    try {
      const r = JSON.parse(msg.toString('utf8')) as { pod: string; seq: number };
      const p = pending.get(r.seq);
      if (!p) return;
      pending.delete(r.seq);
      clearTimeout(p.timer);
      out({ seq: r.seq, t: p.t, pod: r.pod });
    } catch {
      /* not ours */
    }
  });
  // ICMP port unreachable on a connected socket: counted as a loss by the timeout.
  sock.on('error', () => undefined);
  sock.bind(0, () => {
    sock.connect(port, host, () => {
      const send = (): void => {
        const s = seq++;
        const t = Date.now();
        const timer = setTimeout(() => {
          pending.delete(s);
          out({ seq: s, t, pod: null });
        }, timeoutMs);
        pending.set(s, { t, timer });
        sock.send(JSON.stringify({ seq: s }), () => undefined);
      };
      send();
      const tick = setInterval(send, intervalMs);
      stops.push(() => {
        clearInterval(tick);
        setTimeout(() => {
          out({ done: true, sent: seq, port: sock.address().port });
          process.exit(0);
        }, timeoutMs + 10);
      });
    });
  });
}

function echo(): void {
  const name = String(opts['name']);
  const sock = dgram.createSocket({ type: 'udp6', ipv6Only: false });
  sock.on('message', (msg, rinfo) => {
    let seq = -1;
    try {
      seq = (JSON.parse(msg.toString('utf8')) as { seq: number }).seq;
    } catch {
      /* answer anyway */
    }
    sock.send(JSON.stringify({ pod: name, seq }), rinfo.port, rinfo.address, () => undefined);
  });
  sock.bind({ port: Number(opts['port']), address: '::' }, () => out({ listening: true }));
  stops.push(() => {
    sock.close();
    out({ done: true });
    process.exit(0);
  });
}

if (mode === 'tcp') tcp();
else if (mode === 'udp') udp();
else if (mode === 'echo') echo();
else {
  process.stderr.write(`load-tool: unknown mode ${JSON.stringify(mode)}\n`);
  process.exit(2);
}
