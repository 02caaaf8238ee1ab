/**
 * Host side of the IPVS VM (scripts/ipvs-vm/run.sh): boot a Debian kernel that has IPVS under QEMU,
 * run a shell command (or a batch of vitest files) inside it, and get back the exit status, the
 * output and whatever the command wrote to its results directory.
 *
 * Inside the VM the host's / is visible read-only and the repository is mounted read-write at its
 * host path, so the command runs the same checkout with the same node_modules. Booting costs ~6 s
 * and every Node process start 10–30 s under emulation (see scripts/ipvs-vm/README.md): batch
 * everything that needs the VM into one call.
 *
 *   const r = await runInIpvsVm('sh scripts/ipvs-vm/in-vm-smoke.sh');
 *   const v = await runVitestInIpvsVm(['test/flows/packet-flows.test.ts'], { testNamePattern: 'ipvs' });
 *   expect(v.failure).toBeUndefined(); expect(v.report?.numFailedTests).toBe(0);
 *
 * Nothing here skips: when QEMU or the kernel cannot be had, `failure` says why (and
 * `assertVmRan` throws it), so a test that needs the VM fails loudly.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
export const RUNNER = join(REPO_ROOT, 'scripts/ipvs-vm/run.sh');
/** Node's compile cache, kept in the shared repository (git-ignored) so it survives the VM. */
export const COMPILE_CACHE = join(REPO_ROOT, '.cache/node-compile-cache');
/** The project's pinned Node 24 (the one that strips TypeScript). */
export const NODE = join(REPO_ROOT, 'node_modules/node/bin/node');

/** The runner's own exit codes (scripts/ipvs-vm/run.sh); a command's exit status otherwise. */
export const RUNNER_EXIT = {
  qemuUnavailable: 120,
  kernelUnavailable: 121,
  timeout: 124,
  vmFailure: 125,
} as const;

export interface IpvsVmOptions {
  /** Environment variables for the command inside the VM (exported before it runs). */
  env?: Readonly<Record<string, string>>;
  /** Host-side limit for the VM run, in seconds (IPVSVM_TIMEOUT). Default 900. */
  timeoutSeconds?: number;
  /** Guest RAM in MiB. Default: the runner's (2048). */
  memMiB?: number;
  /**
   * 9p cache mode of the repository inside the VM. 'loose' (default): page cache and cached
   * attributes — Node opens ~1,500 files per kproxy start, and 'mmap' (every read and lookup goes to
   * the host) made each start ~30 s slower. Changes the host makes while the VM runs may go unseen.
   */
  shareCache?: 'loose' | 'mmap';
  /** Called with each chunk of the command's output as it arrives (e.g. process.stderr.write). */
  onOutput?: (chunk: string) => void;
  /** Extra environment for the runner itself (IPVSVM_* knobs). */
  runnerEnv?: Readonly<Record<string, string>>;
}

export interface IpvsVmResult {
  /** The command's exit status inside the VM; a RUNNER_EXIT code when `failure` is set. */
  exitCode: number;
  /** The command's stdout and stderr, merged, as they came out of the VM's serial port. */
  output: string;
  /** The runner's own messages (setup, timing line, FATAL line). */
  runnerLog: string;
  /** Set when the VM could not run the command to its end (no QEMU, no kernel, timeout, boot failure). */
  failure?: { code: number; message: string };
  /** Host path of this run's results directory (inside the repository, shared with the VM). */
  resultsDir: string;
  /** Host wall time of the whole call, seconds. */
  wallSeconds: number;
}

let runCounter = 0;

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** True inside the IPVS VM (the runner exports IPVSVM_GUEST=1 to the command). */
export function insideIpvsVm(): boolean {
  return process.env['IPVSVM_GUEST'] === '1';
}

/**
 * Runs `command` (a /bin/sh script) inside the IPVS VM, with the repository root as its working
 * directory. The script sees IPVSVM_RESULTS: a fresh directory under .cache/ipvs-vm/runs/ that the
 * host reads back (resultsDir). Only one VM runs at a time on a machine; a second call waits.
 */
export function runInIpvsVm(command: string, opts: IpvsVmOptions = {}): Promise<IpvsVmResult> {
  if (insideIpvsVm()) {
    return Promise.reject(new Error('runInIpvsVm: already inside the IPVS VM (no nested VMs); run this on the host'));
  }
  const started = Date.now();
  const runs = join(REPO_ROOT, '.cache/ipvs-vm/runs');
  pruneOldRuns(runs, started);
  const resultsDir = join(runs, `${started}-${process.pid}-${runCounter++}`);
  mkdirSync(resultsDir, { recursive: true });
  mkdirSync(COMPILE_CACHE, { recursive: true });
  const env: Record<string, string> = { IPVSVM_RESULTS: resultsDir, ...opts.env };
  const lines = ['set -u'];
  for (const [k, v] of Object.entries(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`runInIpvsVm: bad environment variable name ${k}`);
    lines.push(`export ${k}=${shellQuote(v)}`);
  }
  lines.push(`cd ${shellQuote(REPO_ROOT)}`, command, '');
  const script = lines.join('\n');

  return new Promise((resolve, reject) => {
    const child = spawn(RUNNER, ['-'], {
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        IPVSVM_SHARE: REPO_ROOT,
        IPVSVM_TIMEOUT: String(opts.timeoutSeconds ?? 900),
        IPVSVM_SHARE_CACHE: opts.shareCache ?? 'loose',
        ...(opts.memMiB !== undefined ? { IPVSVM_MEM: String(opts.memMiB) } : {}),
        ...opts.runnerEnv,
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    let runnerLog = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      output += d;
      opts.onOutput?.(d);
    });
    child.stderr.on('data', (d: string) => {
      runnerLog += d;
    });
    child.on('error', (e) => reject(new Error(`runInIpvsVm: cannot start ${RUNNER}: ${e.message}`)));
    child.on('close', (code, signal) => {
      const exitCode = code ?? 128;
      const fatal = /^ipvs-vm: FATAL\((\d+)\): (.*)$/m.exec(runnerLog);
      const result: IpvsVmResult = {
        exitCode,
        output,
        runnerLog,
        resultsDir,
        wallSeconds: (Date.now() - started) / 1000,
      };
      if (fatal) result.failure = { code: Number(fatal[1]), message: fatal[2]! };
      else if (signal) result.failure = { code: exitCode, message: `the runner was killed by ${signal}` };
      else if (!/^ipvs-vm: wall /m.test(runnerLog)) {
        // The runner prints its timing line once the VM has run; without it, it failed before.
        const last = runnerLog.trim().split('\n').at(-1) ?? '';
        result.failure = { code: exitCode, message: `the runner failed before the VM ran: ${last}` };
      }
      resolve(result);
    });
    child.stdin.on('error', () => {});
    child.stdin.end(script);
  });
}

/** Results directories of runs more than a day old go (they are only read right after their run). */
function pruneOldRuns(runs: string, now: number): void {
  if (!existsSync(runs)) return;
  for (const name of readdirSync(runs)) {
    const path = join(runs, name);
    try {
      if (now - statSync(path).mtimeMs > 86_400_000) rmSync(path, { recursive: true, force: true });
    } catch {
      /* raced with another process: fine */
    }
  }
}

/** Throws with the runner's message when the VM did not run the command to its end. */
export function assertVmRan(r: IpvsVmResult): void {
  if (r.failure) {
    throw new Error(
      `the IPVS VM could not run the command (exit ${r.failure.code}): ${r.failure.message}\n` +
        `--- runner log ---\n${r.runnerLog.slice(-4000)}\n--- output ---\n${r.output.slice(-4000)}`,
    );
  }
}

/** Runs a host command to its end; rejects with its output unless it exits 0. */
function runHost(cmd: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}\n${out}`)),
    );
  });
}

/**
 * Bundles kproxy (src/cli/main.ts and everything it imports) into one ES module on the host with
 * rolldown (Vite's bundler, in node_modules) and writes a launcher next to it that runs it the way
 * bin/kproxy runs the sources (same Node, same Node flags). Returns the launcher's path.
 *
 * Why: under emulation a kproxy start spends most of its time loading ~1,500 module files (60–90 s
 * measured on a busy 2-core host); the single-file bundle starts in ~12 s. Same code, same
 * behaviour (`kproxy dump` output is byte-identical), built fresh from the working tree (~5 s).
 */
export async function buildKproxyBundle(): Promise<string> {
  const dir = join(REPO_ROOT, '.cache/ipvs-vm');
  mkdirSync(dir, { recursive: true });
  const bundle = join(dir, 'kproxy.bundle.mjs');
  const launcher = join(dir, 'kproxy');
  const rolldown = join(REPO_ROOT, 'node_modules/rolldown/bin/cli.mjs');
  if (!existsSync(rolldown)) throw new Error(`buildKproxyBundle: ${rolldown} is missing (npm ci?)`);
  // One file: the CLI's lazily imported commands are inlined (rolldown splits them into chunks otherwise).
  await runHost(NODE, [
    rolldown,
    'src/cli/main.ts',
    '--platform',
    'node',
    '--format',
    'esm',
    '--no-codeSplitting',
    '--file',
    bundle,
  ]);
  // bin/kproxy itself, running the bundle with the host's node: the same V8 and malloc settings per
  // command (docs/adr/0013), so both run the same way.
  const bin = readFileSync(join(REPO_ROOT, 'bin/kproxy'), 'utf8');
  const nodeLine = 'node="$root/node_modules/node/bin/node"';
  const mainArg = '"$root/src/cli/main.ts"';
  if (!bin.includes(nodeLine) || !bin.includes(mainArg))
    throw new Error('buildKproxyBundle: bin/kproxy no longer has the node and main.ts lines it rewrites');
  writeFileSync(
    launcher,
    bin
      .replace(
        '#!/bin/sh\n',
        '#!/bin/sh\n# bin/kproxy, rewritten by test/ipvs-vm/run-in-vm.ts (buildKproxyBundle) to run the bundle\n',
      )
      .replace(nodeLine, `node=${shellQuote(NODE)}`)
      .replace(mainArg, shellQuote(bundle)),
  );
  chmodSync(launcher, 0o755);
  return launcher;
}

/** The parts of vitest's JSON report (--reporter=json) that callers use. */
export interface VitestReport {
  success: boolean;
  numTotalTests: number;
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  testResults: {
    name: string;
    status: string;
    message?: string;
    assertionResults: { fullName: string; status: string; duration?: number | null; failureMessages: string[] }[];
  }[];
}

export interface VitestInVmOptions extends IpvsVmOptions {
  /** vitest -t: run only tests whose full name matches. */
  testNamePattern?: string;
  /** Per-test and per-hook timeouts inside the VM, ms (only where a test gives none). Defaults 300 s / 600 s. */
  testTimeoutMs?: number;
  hookTimeoutMs?: number;
  /** Use Node's compile cache (.cache/node-compile-cache) for vitest and every process it starts. Default true. */
  compileCache?: boolean;
  /** More vitest CLI arguments. */
  vitestArgs?: readonly string[];
  /**
   * Which kproxy the tests run. 'bundle' (default): buildKproxyBundle()'s launcher is bind-mounted
   * over bin/kproxy inside the VM only (the host's file is untouched) and exported as KPROXY_BIN.
   * 'source': bin/kproxy as it is (each start 5–7x slower under emulation).
   */
  kproxy?: 'bundle' | 'source';
}

export interface VitestInVmResult extends IpvsVmResult {
  /** vitest's JSON report, written by the VM to the results directory; undefined if vitest wrote none. */
  report?: VitestReport;
}

/**
 * Runs the given test files with vitest INSIDE the IPVS VM, in one boot, with the project's Node
 * and config (test/ipvs-vm/vitest.vm.config.ts: the project's vitest.config.ts with VM-sized
 * timeouts, without test/ipvs-vm/ itself). KPROXY_IPVS_VM=1 is set for the tests, so a suite can
 * tell it runs on a kernel with IPVS.
 */
export async function runVitestInIpvsVm(
  files: readonly string[],
  opts: VitestInVmOptions = {},
): Promise<VitestInVmResult> {
  const args = [
    NODE,
    join(REPO_ROOT, 'node_modules/vitest/vitest.mjs'),
    'run',
    // Node loads the .ts config itself (type stripping) instead of Vite bundling it into node_modules/.vite-temp.
    '--configLoader',
    'native',
    '--config',
    join(REPO_ROOT, 'test/ipvs-vm/vitest.vm.config.ts'),
    '--reporter=default',
    '--reporter=json',
    '--outputFile.json="$IPVSVM_RESULTS/vitest.json"',
    `--testTimeout=${opts.testTimeoutMs ?? 300_000}`,
    `--hookTimeout=${opts.hookTimeoutMs ?? 600_000}`,
    ...(opts.testNamePattern !== undefined ? ['-t', shellQuote(opts.testNamePattern)] : []),
    ...(opts.vitestArgs ?? []).map(shellQuote),
    ...files.map(shellQuote),
  ];
  const env: Record<string, string> = { KPROXY_IPVS_VM: '1', CI: '1', ...opts.env };
  if (opts.compileCache ?? true) env['NODE_COMPILE_CACHE'] = COMPILE_CACHE;
  const lines: string[] = [];
  if ((opts.kproxy ?? 'bundle') === 'bundle') {
    const launcher = await buildKproxyBundle();
    const bin = join(REPO_ROOT, 'bin/kproxy');
    env['KPROXY_BIN'] = launcher;
    lines.push(
      `mount --bind ${shellQuote(launcher)} ${shellQuote(bin)} || { echo "ipvs-vm harness: cannot bind the kproxy bundle over bin/kproxy" >&2; exit 125; }`,
    );
  }
  lines.push(args.join(' '));
  const r = await runInIpvsVm(lines.join('\n'), { ...opts, env });
  const path = join(r.resultsDir, 'vitest.json');
  const out: VitestInVmResult = { ...r };
  if (existsSync(path)) out.report = JSON.parse(readFileSync(path, 'utf8')) as VitestReport;
  return out;
}

/** One line per failed test (file, name, first lines of the message), for assertion messages. */
export function describeFailures(report: VitestReport | undefined): string {
  if (report === undefined) return 'vitest wrote no report';
  const lines: string[] = [];
  for (const file of report.testResults) {
    if (file.status === 'failed' && file.message) lines.push(`${file.name}: ${file.message.split('\n')[0]}`);
    for (const a of file.assertionResults) {
      if (a.status === 'failed')
        lines.push(`${a.fullName}: ${(a.failureMessages[0] ?? '').split('\n').slice(0, 3).join(' ')}`);
    }
  }
  return lines.join('\n');
}
