/**
 * `kproxy sync --proxy-mode ipvs` and `kproxy cleanup --proxy-mode ipvs`, run the way the CLI runs
 * them (src/cli/main.ts: config, manifests, model, backend sync, the final `matches` check, stale
 * conntrack cleanup, the same log messages) but inside the test process, with every kernel tool
 * run in the node's network namespace. Inside the IPVS VM a Node process start costs 40 s or more
 * under emulation (kproxy --help: 37–90 s), so the IPVS suites start none per sync.
 */
import { hostname } from 'node:os';
import { ipvsMode } from '../../src/backends/ipvs/index.ts';
import { ConfigError, loadProxyConfig } from '../../src/config/load.ts';
import { cleanupStaleConntrack } from '../../src/kernel/conntrack.ts';
import { KernelToolError } from '../../src/kernel/errors.ts';
import { execProgram, inNetns, type Exec } from '../../src/kernel/exec.ts';
import { familyStateOf } from '../../src/proxy/backend.ts';
import { nodeStates } from '../../src/proxy/desired.ts';
import { parseManifestText } from '../../src/source/manifests.ts';
import { buildSnapshot } from '../../src/source/normalize.ts';
import { createLogger, type Logger } from '../../src/util/log.ts';
import { formatProblem, type Problem } from '../../src/util/problems.ts';

export interface Outcome {
  readonly exitCode: number;
  /** The JSON log lines, as `kproxy` would print them on stderr. */
  readonly log: readonly Record<string, unknown>[];
}

function capture(verbosity = 0): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger(verbosity, {
    write: (s: string) => {
      for (const l of s.split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
    },
  });
  return { log, lines };
}

function reportProblems(log: Logger, problems: readonly Problem[]): void {
  for (const p of problems)
    log.warn({ kind: p.kind, object: p.object, path: p.path || undefined }, `skipped: ${formatProblem(p)}`);
}

/** The exec for a namespace; undefined: this process's own namespace. */
export function execIn(ns: string | undefined): Exec {
  return ns === undefined ? execProgram : inNetns(ns);
}

/** `kproxy sync --proxy-mode ipvs FLAGS` with `objects` as the manifests, in namespace `ns`. */
export async function ipvsSync(
  ns: string | undefined,
  objects: readonly object[],
  flags: readonly string[],
): Promise<Outcome> {
  const { log, lines } = capture();
  const exec = execIn(ns);
  let config: ReturnType<typeof loadProxyConfig>['config'];
  try {
    config = loadProxyConfig({
      argv: ['--proxy-mode', 'ipvs', ...flags],
      hostname: hostname(),
      readFile: () => {
        throw new Error('no --config in tests');
      },
      commandFlags: ['manifests'],
    }).config;
  } catch (err) {
    if (err instanceof ConfigError) return { exitCode: 2, log: [{ msg: err.message }] };
    throw err;
  }
  const parsed = parseManifestText(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }), 'cluster.json');
  const { snapshot, problems } = buildSnapshot(parsed.objects, config.nodeName);
  reportProblems(log, [...parsed.problems, ...problems]);
  const states = nodeStates(snapshot, config);
  const backend = ipvsMode.createBackend({ config, exec, log });
  const families = states.map(familyStateOf);
  try {
    const report = await backend.sync({ families, full: true, changed: new Set() });
    reportProblems(log, report.problems);
    if (!(await backend.matches(families))) {
      log.error('the kernel does not hold the desired rules after the sync (someone else changed them?)');
      return { exitCode: 1, log: lines };
    }
    let conntrackDeleted = 0;
    for (const state of states) conntrackDeleted += (await cleanupStaleConntrack(exec, { state })).deleted;
    log.info(
      { mode: 'ipvs', changes: report.changes, ...report.detail, conntrackDeleted },
      report.changes === 0 ? 'kernel already up to date' : 'rules applied',
    );
    return { exitCode: 0, log: lines };
  } catch (err) {
    if (err instanceof KernelToolError) {
      log.error({ code: err.code }, err.message);
      return { exitCode: 1, log: lines };
    }
    throw err;
  }
}

/** `kproxy cleanup --proxy-mode ipvs FLAGS` in namespace `ns`. */
export async function ipvsCleanup(ns: string | undefined, flags: readonly string[] = []): Promise<Outcome> {
  const { log, lines } = capture();
  const { config } = loadProxyConfig({
    argv: ['--proxy-mode', 'ipvs', ...flags],
    hostname: hostname(),
    readFile: () => '',
    commandFlags: [],
  });
  const removed = await ipvsMode.createBackend({ config, exec: execIn(ns), log }).cleanup();
  log.info({ mode: 'ipvs', removed }, removed.length > 0 ? 'removed kproxy rules' : 'nothing to remove');
  return { exitCode: 0, log: lines };
}
