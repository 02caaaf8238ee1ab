/**
 * @module bench/scenarios/modes
 * Cold sync per proxy mode, whole process, the way users run it: the synthetic cluster as one
 * `cluster.json` List (this Node included, so NodePorts, health-check ports and local endpoints
 * are real), then `ip netns exec NS bin/kproxy sync --proxy-mode M --manifests DIR` in a fresh
 * network namespace — wall time, CPU (kproxy and the tools it ran) and kproxy's peak RSS. Then the
 * same command again: it must log "kernel already up to date" (the kernel holds the rules; this
 * is also what a restart costs), and the kernel's rules are counted. The `cold-sync` scenario
 * explains where nftables time goes; this one compares the modes.
 */
import { execFileSync } from 'node:child_process';
import { sizeLabel, type ClusterSize } from '../cluster-gen.ts';
import { count, ratio, secs } from '../format.ts';
import { kproxySync, writeManifests, type KproxySyncRun } from '../kproxy-cli.ts';
import { withNetns } from '../netns.ts';
import type { BenchMode } from '../pipeline.ts';
import type { BenchContext, Scenario, ScenarioResult, Table } from '../scenario.ts';

export interface ModesRow {
  readonly size: ClusterSize;
  readonly mode: BenchMode;
  /** iptables mode: the flavor kproxy chose (nft or legacy). */
  readonly flavor?: string;
  readonly manifestBytes: number;
  /** Absent when the measurement failed (`failed`). */
  readonly cold?: KproxySyncRun;
  /** The second `kproxy sync` (absent when the first timed out). */
  readonly restart?: KproxySyncRun;
  /** The second run found nothing to write. */
  readonly verified: boolean;
  /** Rules in the kernel afterwards (nftables: rules of both kproxy tables; iptables: `-A` lines of both families). */
  readonly kernelRules?: number;
  /** The error that ended this size and mode (kproxy failed, say out of memory); the others still run. */
  readonly failed?: string;
}

export interface ModesData {
  readonly rows: readonly ModesRow[];
}

/**
 * When the `modes` scenario already saw `kproxy sync` in this mode killed at its time limit at a
 * size no larger than `size` (both dimensions), the text saying so: later scenarios skip what
 * cannot finish rather than wait out the same limit again.
 */
export function knownTimeout(ctx: BenchContext, mode: BenchMode, size: ClusterSize): string | undefined {
  const data = ctx.results.get('modes')?.data as ModesData | undefined;
  const hit = data?.rows.find(
    (r) =>
      r.mode === mode &&
      r.cold?.timedOut === true &&
      r.size.services <= size.services &&
      r.size.endpointsPerService <= size.endpointsPerService,
  );
  return hit
    ? `kproxy sync --proxy-mode ${mode} at ${sizeLabel(hit.size)} did not finish within ${secs(hit.cold?.process.wallS)} s (modes scenario)`
    : undefined;
}

function inNs(ns: string, argv: readonly string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, ...argv], {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
}

function kernelRules(ns: string, mode: BenchMode, flavor: string | undefined): number {
  if (mode === 'nftables') {
    // With -a every rule ends in "# handle N"; so do table, chain and set headers, which open a block.
    return inNs(ns, ['nft', '-a', 'list', 'ruleset'])
      .split('\n')
      .filter((l) => /# handle \d+$/.test(l) && !l.includes('{')).length;
  }
  const f = flavor ?? 'nft';
  let n = 0;
  for (const tool of [`iptables-${f}-save`, `ip6tables-${f}-save`])
    n += inNs(ns, [tool])
      .split('\n')
      .filter((l) => l.startsWith('-A ')).length;
  return n;
}

/** Backend part of a run (kproxy's own log: sync + matches + conntrack), seconds. */
const syncS = (r: KproxySyncRun | undefined) => (r?.log ? r.log.ms / 1000 : NaN);
const wallS = (r: KproxySyncRun | undefined) => r?.process.wallS ?? NaN;
const mib = (kib: number | null | undefined) => (kib === null || kib === undefined ? '-' : (kib / 1024).toFixed(0));

async function measure(ctx: BenchContext, size: ClusterSize, mode: BenchMode): Promise<ModesRow> {
  const label = sizeLabel(size);
  const manifests = writeManifests(ctx.workDir, size, ctx.options.shape);
  const options = {
    workDir: ctx.workDir,
    timeoutMs: ctx.options.kproxyTimeoutMs,
    iptablesFlavor: ctx.options.iptablesFlavor,
  };
  return withNetns(`m${label}${mode.slice(0, 3)}`, async (ns) => {
    ctx.log(`modes ${label} ${mode}: kproxy sync into a fresh namespace`);
    const cold = await kproxySync(ns, mode, manifests, options);
    const flavor = cold.log?.flavor;
    if (cold.timedOut) {
      ctx.log(`modes ${label} ${mode}: killed after ${secs(cold.process.wallS)} s (timeout)`);
      return { size, mode, ...(flavor ? { flavor } : {}), manifestBytes: manifests.bytes, cold, verified: false };
    }
    if (cold.upToDate) throw new Error(`modes ${label} ${mode}: the first sync into a fresh namespace wrote nothing`);
    ctx.log(`modes ${label} ${mode}: ${secs(cold.process.wallS)} s (sync ${secs(syncS(cold))} s); again`);
    const restart = await kproxySync(ns, mode, manifests, options);
    const verified = !restart.timedOut && restart.upToDate;
    const rules = kernelRules(ns, mode, flavor);
    ctx.log(
      `modes ${label} ${mode}: second run ${secs(restart.process.wallS)} s, ${verified ? 'kernel already up to date' : 'NOT up to date'}; ${count(rules)} rules`,
    );
    if (!verified) throw new Error(`modes ${label} ${mode}: a second kproxy sync still had changes to write`);
    return {
      size,
      mode,
      ...(flavor ? { flavor } : {}),
      manifestBytes: manifests.bytes,
      cold,
      restart,
      verified,
      kernelRules: rules,
    };
  });
}

export const modes: Scenario = {
  name: 'modes',
  description: 'cold sync per proxy mode: the real `kproxy sync --proxy-mode M` in a fresh netns, then again (restart)',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const rows: ModesRow[] = [];
    for (const size of ctx.options.sizes)
      for (const mode of ctx.options.modes) {
        try {
          rows.push(await measure(ctx, size, mode));
        } catch (err) {
          const failed = err instanceof Error ? err.message : String(err);
          ctx.log(`modes ${sizeLabel(size)} ${mode}: failed: ${failed}`);
          rows.push({ size, mode, manifestBytes: NaN, verified: false, failed });
        }
      }
    const modeLabel = (r: ModesRow) => (r.flavor ? `${r.mode} (${r.flavor})` : r.mode);
    const lowerBound = (r: KproxySyncRun | undefined, text: string) => (r?.timedOut ? `>${text}` : text);
    const tables: Table[] = [
      {
        columns: [
          'size',
          'mode',
          'cold wall s',
          'sync s',
          'before sync s',
          'user s',
          'sys s',
          'kproxy RSS MiB',
          'max RSS MiB',
          'changes',
          'kernel rules',
        ],
        rows: rows.map((r) => [
          sizeLabel(r.size),
          modeLabel(r),
          r.failed ? 'failed' : lowerBound(r.cold, secs(wallS(r.cold))),
          secs(syncS(r.cold)),
          secs(wallS(r.cold) - syncS(r.cold)),
          secs(r.cold?.process.userS),
          secs(r.cold?.process.sysS),
          mib(r.cold?.kproxyRssKiB),
          mib(r.cold?.process.maxRssKiB),
          r.cold?.log ? count(r.cold.log.changes) : '-',
          r.kernelRules !== undefined ? count(r.kernelRules) : '-',
        ]),
      },
      {
        columns: ['size', 'mode', 'restart wall s', 'sync s', 'user s', 'sys s', 'kproxy RSS MiB', 'up to date'],
        rows: rows.map((r) => [
          sizeLabel(r.size),
          modeLabel(r),
          r.restart ? lowerBound(r.restart, secs(wallS(r.restart))) : '-',
          secs(syncS(r.restart)),
          secs(r.restart?.process.userS),
          secs(r.restart?.process.sysS),
          mib(r.restart?.kproxyRssKiB),
          r.verified ? 'yes' : 'NO',
        ]),
      },
    ];
    const pairs = ctx.options.sizes.flatMap((size) => {
      const of = (m: BenchMode) => rows.find((r) => r.size === size && r.mode === m);
      const n = of('nftables');
      const i = of('iptables');
      return n && i ? [{ size, n, i }] : [];
    });
    if (pairs.length > 0) {
      tables.push({
        columns: [
          'size',
          'iptables ÷ nftables: cold wall',
          'cold sync',
          'restart wall',
          'restart sync',
          'kproxy RSS',
          'kernel rules',
        ],
        rows: pairs.map(({ size, n, i }) => [
          sizeLabel(size),
          lowerBound(i.cold, ratio(wallS(i.cold) / wallS(n.cold))),
          ratio(syncS(i.cold) / syncS(n.cold)),
          ratio(wallS(i.restart) / wallS(n.restart)),
          ratio(syncS(i.restart) / syncS(n.restart)),
          ratio((i.cold?.kproxyRssKiB ?? NaN) / (n.cold?.kproxyRssKiB ?? NaN)),
          ratio((i.kernelRules ?? NaN) / (n.kernelRules ?? NaN)),
        ]),
      });
    }
    const manifestSizes = [
      ...new Map(rows.filter((r) => !r.failed).map((r) => [sizeLabel(r.size), r.manifestBytes])).entries(),
    ]
      .map(([l, b]) => `${(b / 2 ** 20).toFixed(1)} MiB at ${l}`)
      .join(', ');
    return {
      title: 'cold sync per proxy mode: `kproxy sync --proxy-mode M --manifests DIR`, whole process, fresh netns',
      tables,
      notes: [
        `cold wall = the whole \`ip netns exec NS bin/kproxy sync …\` process (Node start, reading and parsing cluster.json — ${manifestSizes} —, model, render, the kernel tools, the read-back check); sync = what kproxy logs as the sync's ms (backend sync + the matches read-back + conntrack clean-up); before sync = wall - sync (start, read and parse the manifests, normalize, model).`,
        'user/sys = CPU of kproxy and every tool it ran (nft, iptables-restore/-save; GNU time, rusage of the process tree); kproxy RSS = peak RSS of the Node process alone (rss-probe.ts); max RSS = the largest process of the tree (kproxy or a tool).',
        'restart = the same command again on the loaded kernel: it must write nothing ("kernel already up to date") — the check that the kernel holds the rules, and what a restart costs.',
        'kernel rules: nftables = rules in kproxy\'s two tables (`nft -a list ruleset`); iptables = `-A` lines of iptables-save and ip6tables-save. A ">" marks a run killed at the time limit (a lower bound).',
        ...rows
          .filter((r) => r.failed)
          .map((r) => `${sizeLabel(r.size)} ${r.mode} failed: ${r.failed?.split('\n').slice(0, 4).join(' / ')}`),
      ],
      data: { rows } satisfies ModesData,
    };
  },
};
