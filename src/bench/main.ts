/**
 * @module bench/main
 * `npm run bench [-- options]`: builds synthetic clusters, measures kproxy's cold sync (and the
 * same load in upstream's classic layout), the real `kproxy sync` per proxy mode, incremental
 * syncs through the daemon and first-packet latency, per mode, in fresh network namespaces;
 * prints tables, writes `bench-results/bench-<timestamp>.json`. Needs root, `ip`, `nft` (and
 * iptables for iptables mode). Not part of `make test`. See src/bench/README.md.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DEFAULT_SHAPE, parseSize, sizeLabel, type ClusterSize } from './cluster-gen.ts';
import { renderTable } from './format.ts';
import { cleanupAll, installCleanupHooks, sweepLeftovers } from './netns.ts';
import { curveSpec } from './curve.ts';
import { writePlot } from './plot.ts';
import type { BenchContext, BenchOptions, ScenarioResult } from './scenario.ts';
import { SCENARIOS } from './scenarios/index.ts';
import { BENCH_MODES, IPTABLES_FLAVORS } from './pipeline.ts';
import { timingMethod } from './timed-exec.ts';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

const USAGE = `Usage: npm run bench -- [options]

  --sizes LIST                 Services x endpoints per Service (default 1000x10,10000x10,5000x50)
  --quick                      small set: sizes 100x10,300x10; latency with 10 and 300 Services, 300 connects,
                               10 changes of each kind, 2 restarts
  --modes LIST                 proxy modes for modes, incremental, first-packet (default nftables,iptables)
  --iptables-flavor F          auto|nft|legacy: kproxy's --iptables-flavor in iptables mode (default auto:
                               kproxy detects, which is iptables-nft in a fresh namespace)
  --timeout SECONDS            kill a kproxy load (nft -f, kproxy sync, daemon start) after this long (default 600)
  --upstream-max-services N    skip the upstream-layout load above N Services (default 10000)
  --upstream-timeout SECONDS   kill an upstream-layout load after this long, report "timeout" (default 600)
  --no-upstream                skip the upstream-layout comparison
  --latency-services LIST      Service counts for first-packet latency (default 10,10000)
  --ipvs-sizes LIST            sizes for the ipvs scenario, run inside the emulated IPVS VM (default 300x10)
  --latency-endpoints LIST     endpoints per Service for first-packet latency: the first with every Service
                               count, the others with the smallest (default 10,1000)
  --connects N                 connects per target and size (default 2000)
  --changes N                  incremental syncs per kind of change and size, and endpoint changes of the run
                               scenario (default 100)
  --restarts N                 run scenario: kill -9 + restarts of kproxy run per size and mode (default 3)
  --nodes N                    nodes the endpoints are spread over (default 50, ~2% local)
  --affinity-percent P         % of Services with ClientIP affinity (default 0)
  --only LIST / --skip LIST    scenarios by name: ${SCENARIOS.map((s) => s.name).join(', ')}
  --json PATH                  also write the JSON results here
  --plot PATH.png              draw the curve: cold sync (modes, else cold-sync; upstream layout) and one endpoint
                               change p50/p99 (incremental, else run) vs Services, beside upstream's published figures
  --keep-files                 keep the generated nft transaction files (printed at the end)
  --replot RESULTS.json        only draw --plot PATH.png from an earlier run's JSON (no root needed)
`;

class UsageError extends Error {}

function parseList<T>(text: string, parse: (s: string) => T | undefined, what: string): T[] {
  const out = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const v = parse(s);
      if (v === undefined) throw new UsageError(`bad ${what}: ${JSON.stringify(s)}`);
      return v;
    });
  if (out.length === 0) throw new UsageError(`empty ${what} list`);
  return out;
}

function positiveInt(s: string): number | undefined {
  const n = Number(s);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

function parseOptions(
  argv: readonly string[],
): { options: BenchOptions; json?: string; plot?: string; replot?: string } | 'help' {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    options: {
      sizes: { type: 'string' },
      modes: { type: 'string', default: BENCH_MODES.join(',') },
      'iptables-flavor': { type: 'string', default: 'auto' },
      timeout: { type: 'string', default: '600' },
      quick: { type: 'boolean', default: false },
      'upstream-max-services': { type: 'string', default: '10000' },
      'upstream-timeout': { type: 'string', default: '600' },
      'no-upstream': { type: 'boolean', default: false },
      'latency-services': { type: 'string' },
      'latency-endpoints': { type: 'string' },
      'ipvs-sizes': { type: 'string' },
      connects: { type: 'string' },
      changes: { type: 'string' },
      restarts: { type: 'string' },
      nodes: { type: 'string', default: String(DEFAULT_SHAPE.nodes) },
      'affinity-percent': { type: 'string', default: '0' },
      only: { type: 'string' },
      skip: { type: 'string' },
      json: { type: 'string' },
      plot: { type: 'string' },
      'keep-files': { type: 'boolean', default: false },
      replot: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return 'help';
  const quick = values.quick;
  const sizes: ClusterSize[] = parseList(
    values.sizes ?? (quick ? '100x10,300x10' : '1000x10,10000x10,5000x50'),
    parseSize,
    'size (e.g. 10000x10)',
  );
  const int = (name: string, text: string | undefined, fallback: number): number => {
    const n = positiveInt(text ?? String(fallback));
    if (n === undefined) throw new UsageError(`--${name} must be a positive integer`);
    return n;
  };
  const known = SCENARIOS.map((s) => s.name);
  const names = (text: string | undefined) =>
    text === undefined ? undefined : parseList(text, (s) => (known.includes(s) ? s : undefined), 'scenario');
  const only = names(values.only);
  const skip = names(values.skip) ?? [];
  if (values['no-upstream']) skip.push('upstream');
  const affinityPercent = Number(values['affinity-percent']);
  if (!(affinityPercent >= 0 && affinityPercent <= 100)) throw new UsageError('--affinity-percent must be 0..100');
  const modes = [
    ...new Set(parseList(values.modes, (s) => BENCH_MODES.find((m) => m === s), `mode (${BENCH_MODES.join(', ')})`)),
  ];
  const iptablesFlavor = IPTABLES_FLAVORS.find((f) => f === values['iptables-flavor']);
  if (!iptablesFlavor) throw new UsageError(`--iptables-flavor must be one of ${IPTABLES_FLAVORS.join(', ')}`);
  const options: BenchOptions = {
    sizes,
    modes,
    iptablesFlavor,
    shape: { nodes: int('nodes', values.nodes, 50), affinityPercent },
    upstreamMaxServices: int('upstream-max-services', values['upstream-max-services'], 10000),
    upstreamTimeoutMs: int('upstream-timeout', values['upstream-timeout'], 600) * 1000,
    kproxyTimeoutMs: int('timeout', values.timeout, 600) * 1000,
    latencyServices: parseList(
      values['latency-services'] ?? (quick ? '10,300' : '10,10000'),
      positiveInt,
      'Service count',
    ),
    latencyEndpoints: parseList(
      values['latency-endpoints'] ?? (quick ? '10,100' : '10,1000'),
      positiveInt,
      'endpoint count',
    ),
    ipvsSizes: parseList(values['ipvs-sizes'] ?? (quick ? '100x10' : '300x10'), parseSize, 'size').map(sizeLabel),
    connects: int('connects', values.connects, quick ? 300 : 2000),
    changes: int('changes', values.changes, quick ? 10 : 100),
    restarts: int('restarts', values.restarts, quick ? 2 : 3),
    scenarios: known.filter((n) => (only ? only.includes(n) : true) && !skip.includes(n)),
    keepFiles: values['keep-files'],
  };
  if (values.replot && !values.plot) throw new UsageError('--replot needs --plot PATH.png');
  return {
    options,
    ...(values.json ? { json: values.json } : {}),
    ...(values.plot ? { plot: values.plot } : {}),
    ...(values.replot ? { replot: values.replot } : {}),
  };
}

function tryRun(file: string, args: string[]): string | undefined {
  try {
    return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch {
    return undefined;
  }
}

function hostInfo(): Record<string, unknown> {
  const cpuModel = cpus()[0]?.model ?? 'unknown';
  let memTotalMiB: number | undefined;
  try {
    const m = /^MemTotal:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) memTotalMiB = Math.round(Number(m[1]) / 1024);
  } catch {
    /* not Linux */
  }
  return {
    kernel: tryRun('uname', ['-r']),
    nft: tryRun('nft', ['--version']),
    iptables: tryRun('iptables', ['--version']),
    node: process.version,
    cpus: cpus().length,
    cpuModel,
    memTotalMiB,
    timing: timingMethod(),
    loadAverageAtStart: loadavg(),
  };
}

function preflight(options: BenchOptions): void {
  if (process.getuid?.() !== 0) throw new UsageError('the bench needs root (network namespaces, nft)');
  if (tryRun('nft', ['--version']) === undefined) throw new UsageError('nft is not installed');
  if (tryRun('ip', ['-V']) === undefined) throw new UsageError('ip (iproute2) is not installed');
  if (options.modes.includes('iptables')) {
    const tools = options.iptablesFlavor === 'auto' ? ['nft'] : [options.iptablesFlavor];
    for (const f of tools)
      if (tryRun(`iptables-${f}-restore`, ['--version']) === undefined)
        throw new UsageError(`iptables-${f}-restore is not installed (needed for --modes iptables)`);
  }
}

async function main(argv: readonly string[]): Promise<number> {
  let parsed: ReturnType<typeof parseOptions>;
  try {
    parsed = parseOptions(argv);
  } catch (err) {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n\n${USAGE}`);
    return 2;
  }
  if (parsed === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const { options } = parsed;
  if (parsed.replot && parsed.plot) {
    const saved = JSON.parse(readFileSync(parsed.replot, 'utf8')) as {
      host: Record<string, unknown>;
      scenarios: Record<string, ScenarioResult>;
    };
    const spec = curveSpec(new Map(Object.entries(saved.scenarios)), saved.host);
    if (!spec) {
      process.stderr.write(`bench: no cold sync or incremental results to draw in ${parsed.replot}\n`);
      return 1;
    }
    process.stderr.write(
      `plot: ${writePlot(resolve(parsed.plot), spec, (m) => process.stderr.write(`${m}\n`)).join(', ')}\n`,
    );
    return 0;
  }
  try {
    preflight(options);
  } catch (err) {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    return 2;
  }
  installCleanupHooks();
  const swept = sweepLeftovers();
  const started = new Date();
  const log = (m: string) =>
    process.stderr.write(`[${((Date.now() - started.getTime()) / 1000).toFixed(1).padStart(6)}s] ${m}\n`);
  if (swept.length > 0) log(`removed ${swept.length} namespaces left by earlier bench runs`);
  const host = hostInfo();
  const load1 = loadavg()[0] ?? 0;
  if (load1 > cpus().length / 2)
    log(
      `warning: load average ${load1.toFixed(1)} on ${cpus().length} CPUs: other work on this machine will distort the timings`,
    );
  log(
    `sizes ${options.sizes.map(sizeLabel).join(', ')}; modes ${options.modes.join(', ')}; scenarios ${options.scenarios.join(', ')}; ${String(host['nft'])}, ${String(host['iptables'])}, Linux ${String(host['kernel'])}, ${String(host['cpus'])} CPUs`,
  );

  const workDir = mkdtempSync(join(tmpdir(), 'kpbench-'));
  const results = new Map<string, ScenarioResult>();
  const ctx: BenchContext = { options, workDir, results, log };
  // A scenario that fails does not stop the others (a long run at 50k keeps what it measured).
  const failed: { scenario: string; error: string }[] = [];
  try {
    for (const s of SCENARIOS.filter((sc) => options.scenarios.includes(sc.name))) {
      log(`== ${s.name}: ${s.description}`);
      try {
        results.set(s.name, await s.run(ctx));
      } catch (err) {
        const error = err instanceof Error ? (err.stack ?? err.message) : String(err);
        failed.push({ scenario: s.name, error });
        log(`scenario ${s.name} failed: ${error}`);
      }
    }
  } finally {
    cleanupAll();
    if (!options.keepFiles) rmSync(workDir, { recursive: true, force: true });
  }

  const out: string[] = [];
  for (const r of results.values()) {
    out.push('', `## ${r.title}`, '');
    for (const t of r.tables) out.push(renderTable(t), '');
    for (const n of r.notes) out.push(`  ${n}`);
  }
  process.stdout.write(`${out.join('\n')}\n`);

  const stamp = started.toISOString().replace(/[:.]/g, '-');
  const json = {
    startedAt: started.toISOString(),
    durationS: (Date.now() - started.getTime()) / 1000,
    host: { ...host, loadAverageAtEnd: loadavg() },
    options: { ...options, sizes: options.sizes.map(sizeLabel) },
    scenarios: Object.fromEntries([...results].map(([name, r]) => [name, { title: r.title, data: r.data }])),
    ...(failed.length > 0 ? { failed } : {}),
  };
  const text = `${JSON.stringify(json, null, 1)}\n`;
  const resultsDir = join(REPO, 'bench-results');
  mkdirSync(resultsDir, { recursive: true });
  const files = [join(resultsDir, `bench-${stamp}.json`)];
  if (parsed.json) files.push(resolve(parsed.json));
  for (const f of files) {
    mkdirSync(dirname(f), { recursive: true });
    writeFileSync(f, text);
  }
  log(`results: ${files.join(', ')}`);
  const loads = (l: readonly number[]) => l.map((x) => x.toFixed(2)).join(', ');
  log(`load average at the end: ${loads(loadavg())} (at the start: ${loads(host['loadAverageAtStart'] as number[])})`);
  if (parsed.plot) {
    const spec = curveSpec(results, host);
    if (spec) log(`plot: ${writePlot(resolve(parsed.plot), spec, log).join(', ')}`);
    else log('plot: no cold sync (modes, cold-sync) or endpoint change (incremental, run) results to draw');
  }
  if (options.keepFiles) log(`transaction files kept in ${workDir}`);
  if (failed.length > 0) log(`failed scenarios: ${failed.map((f) => f.scenario).join(', ')}`);
  return failed.length > 0 ? 1 : 0;
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      cleanupAll();
      process.stderr.write(
        `bench: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exit(1);
    },
  );
}
