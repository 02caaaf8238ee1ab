/**
 * @module cli/commands/trace
 * `kproxy trace --service NS/NAME [--count N] [--timeout D] [--output text|json]` (nftables mode):
 * traces the first packet of each new connection to one Service's frontends through this node's
 * rules (`meta nftrace`, read with `nft monitor`) and prints each packet mapped back to the Service
 * port, frontend and endpoint (src/backends/nftables/trace/). Reads the cluster like `explain`.
 *
 * It adds the tables `ip kproxy-trace` / `ip6 kproxy-trace` (never a rule in kproxy's own, which a
 * sync would repair away: see trace/table.ts) through an `nft -i` session that owns them, so the
 * kernel deletes them when the trace ends, however it ends: after N packets, at the timeout, on
 * SIGINT or SIGTERM, on an error, or killed (kernel/trace-tools.ts).
 */
import type { Loaded } from '../../config/load.ts';
import { parseGoDuration } from '../../config/duration.ts';
import { startNftMonitor, startNftSession } from '../../backends/nftables/kernel/trace-tools.ts';
import { describeTrace, frontendsText, tracedPacketText } from '../../backends/nftables/trace/describe.ts';
import { parseTraceLine, TraceGrouper } from '../../backends/nftables/trace/events.ts';
import { TRACE_TABLE, traceTableCommands } from '../../backends/nftables/trace/table.ts';
import { nodeStates } from '../../proxy/desired.ts';
import type { Logger } from '../../util/log.ts';
import { clusterSnapshot } from './cluster-input.ts';

const SERVICE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
/** How long the monitor gets to show it is listening, per attempt, and how many attempts. */
const READY_WAIT_MS = 1000;
const READY_ATTEMPTS = 10;
const SIGNAL_EXIT: Readonly<Record<string, number>> = { SIGINT: 130, SIGTERM: 143 };

export async function trace(loaded: Loaded, log: Logger, out: NodeJS.WritableStream): Promise<number> {
  const o = loaded.commandOptions;
  const fail = (message: string, code: number): number => {
    process.stderr.write(`kproxy trace: ${message}\n`);
    return code;
  };
  if (loaded.config.mode !== 'nftables')
    return fail(
      `nftables mode only (meta nftrace traces nftables rules; ${loaded.config.mode} mode's packets are not traced): use kproxy explain`,
      2,
    );
  const problems: string[] = [];
  const service = o.service ?? '';
  if (!SERVICE.test(service)) problems.push(`--service: must be NAMESPACE/NAME, got ${JSON.stringify(o.service)}`);
  const count = o.count === undefined ? undefined : Number(o.count);
  if (count !== undefined && !(Number.isInteger(count) && count > 0))
    problems.push(`--count: must be a positive integer, got ${JSON.stringify(o.count)}`);
  const timeoutMs = o.timeout === undefined ? undefined : parseGoDuration(o.timeout);
  if (o.timeout !== undefined && !(timeoutMs !== undefined && timeoutMs > 0))
    problems.push(`--timeout: must be a positive duration (30s, 2m), got ${JSON.stringify(o.timeout)}`);
  const output = o.output ?? 'text';
  if (output !== 'text' && output !== 'json')
    problems.push(`--output: must be text or json, got ${JSON.stringify(output)}`);
  if (problems.length > 0) return fail(problems.join('\n  '), 2);

  const snapshot = await clusterSnapshot(loaded, log, loaded.manifests);
  if (!snapshot) return 1;
  const states = nodeStates(snapshot, loaded.config);
  const ports = states.flatMap((s) => s.servicePorts.filter((sp) => `${sp.ref.namespace}/${sp.ref.name}` === service));
  if (ports.length === 0)
    return fail(
      `Service ${service} has no port kproxy programs on this node (no such Service, headless, ExternalName, or another proxy's)`,
      1,
    );

  let ready = false;
  let traced = 0;
  /** Why tracing ends (the first reason wins); `finished` settles with it. */
  let ended: string | undefined;
  let done: (why: string) => void = () => {};
  const finished = new Promise<string>((resolve) => {
    done = (why) => {
      ended ??= why;
      resolve(ended);
    };
  });
  const grouper = new TraceGrouper((lines) => {
    if (count !== undefined && traced >= count) return;
    const t = describeTrace(lines, ports, snapshot);
    out.write(output === 'json' ? `${JSON.stringify(t)}\n` : `${tracedPacketText(t)}\n`);
    if (count !== undefined && ++traced >= count) done('count');
  });
  const monitor = startNftMonitor((line) => {
    // Its own table's creation is the proof that the monitor listens: traces come after it.
    if (line.startsWith(`add table `) && line.endsWith(` ${TRACE_TABLE}`)) ready = true;
    const t = ready ? parseTraceLine(line) : undefined;
    if (t) grouper.add(t);
  });
  void monitor.ended.then(done);
  const session = startNftSession((complaint) =>
    done(
      /Operation not permitted/.test(complaint)
        ? `nft may not add the ${TRACE_TABLE} tables: kproxy trace needs root (CAP_NET_ADMIN), and one trace per network namespace runs at a time`
        : `nft refused the ${TRACE_TABLE} tables: ${complaint}`,
    ),
  );
  void session.ended.then(done);
  const onSignal = (signal: NodeJS.Signals) => done(signal);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  /** 0 at the end of --count or a --timeout without one, 130/143 on a signal; else 1, saying why. */
  const exitFor = (why: string): number => {
    const signal = SIGNAL_EXIT[why];
    if (signal !== undefined) return signal;
    if (why !== 'timeout') return fail(why, 1);
    return count === undefined ? 0 : fail(`timeout after ${o.timeout}: ${traced} of ${count} packet(s) traced`, 1);
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const commands = traceTableCommands(states, service);
    // The monitor may subscribe after the first transaction's events: apply again until it shows one.
    for (let attempt = 0; !ready && ended === undefined; attempt++) {
      if (attempt === READY_ATTEMPTS) done(`nft monitor showed no event within ${READY_ATTEMPTS} s`);
      else {
        session.run(commands);
        await until(() => ready || ended !== undefined, READY_WAIT_MS);
      }
    }
    if (ended !== undefined) return exitFor(ended);
    process.stderr.write(
      `kproxy trace: tracing new connections to ${service} (${frontendsText(ports)})` +
        `${count !== undefined ? `, ${count} packet(s)` : ''}${o.timeout !== undefined ? `, at most ${o.timeout}` : ''}; Ctrl-C ends\n`,
    );
    if (timeoutMs !== undefined) timer = setTimeout(() => done('timeout'), timeoutMs);
    const why = await finished;
    grouper.flush();
    return count !== undefined && traced >= count ? 0 : exitFor(why);
  } finally {
    clearTimeout(timer);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    monitor.stop();
    // The kernel deletes the tables the session owns as it ends.
    session.stop();
    await session.ended;
  }
}

/** Resolves once `condition` holds (checked every 20 ms) or after `ms`. */
async function until(condition: () => boolean, ms: number): Promise<void> {
  for (const end = Date.now() + ms; !condition() && Date.now() < end; )
    await new Promise((resolve) => setTimeout(resolve, 20));
}
