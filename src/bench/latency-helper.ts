/**
 * @module bench/latency-helper
 * The two ends of the first-packet measurement, run inside the pod namespaces:
 *
 *   node latency-helper.ts serve PORT
 *       accepts TCP connections on 0.0.0.0:PORT; prints "ready" once listening.
 *   node latency-helper.ts connect --targets IP:PORT,IP:PORT,... --count N [--warmup W]
 *       N rounds; each round opens one connection to every target in turn and times connect()
 *       (SYN sent → SYN/ACK received, so the node's rules run on the first packet of each flow),
 *       then resets it (no TIME_WAIT). Prints `{"targets":[{"target","samplesUs":[...],"failures"}]}`.
 */
import { connect, createServer } from 'node:net';
import { parseArgs } from 'node:util';

function serve(port: number): void {
  const server = createServer((sock) => {
    sock.on('error', () => {});
    sock.on('end', () => sock.destroy());
  });
  server.listen({ port, host: '0.0.0.0', backlog: 4096 }, () => process.stdout.write('ready\n'));
  process.on('SIGTERM', () => process.exit(0));
}

function connectOnce(host: string, port: number, timeoutMs: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const sock = connect({ host, port, noDelay: true });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(undefined);
    }, timeoutMs);
    sock.once('connect', () => {
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      clearTimeout(timer);
      sock.resetAndDestroy();
      resolve(us);
    });
    sock.once('error', () => {
      clearTimeout(timer);
      resolve(undefined);
    });
  });
}

async function runConnects(targets: readonly string[], rounds: number, warmup: number): Promise<void> {
  const parsed = targets.map((t) => {
    const i = t.lastIndexOf(':');
    return { target: t, host: t.slice(0, i), port: Number(t.slice(i + 1)) };
  });
  const results = parsed.map((p) => ({ target: p.target, samplesUs: [] as number[], failures: 0 }));
  for (let round = 0; round < warmup + rounds; round++) {
    for (let i = 0; i < parsed.length; i++) {
      const p = parsed[i];
      const r = results[i];
      if (!p || !r) continue;
      const us = await connectOnce(p.host, p.port, 2000);
      if (round < warmup) continue;
      if (us === undefined) r.failures++;
      else r.samplesUs.push(us);
    }
  }
  process.stdout.write(`${JSON.stringify({ targets: results })}\n`);
}

async function main(): Promise<void> {
  const [mode, ...rest] = process.argv.slice(2);
  if (mode === 'serve') {
    serve(Number(rest[0]));
    return;
  }
  if (mode === 'connect') {
    const { values } = parseArgs({
      args: rest,
      options: {
        targets: { type: 'string' },
        count: { type: 'string', default: '2000' },
        warmup: { type: 'string', default: '50' },
      },
    });
    await runConnects((values.targets ?? '').split(',').filter(Boolean), Number(values.count), Number(values.warmup));
    return;
  }
  throw new Error('usage: latency-helper.ts serve PORT | connect --targets IP:PORT,... --count N');
}

if (import.meta.main) await main();
