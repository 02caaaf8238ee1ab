/**
 * @module cli/commands/one-shot
 * `kproxy sync | dump | cleanup`: one pass of the pure pipeline (manifests → model → the mode's
 * render → diff) with the kernel at the edge; each command is a straight line.
 */
import type { Loaded } from '../../config/load.ts';
import { cleanupStaleConntrack } from '../../kernel/conntrack.ts';
import { execProgram, type Exec } from '../../kernel/exec.ts';
import { runKernelCall } from '../../kernel/kernel-calls.ts';
import { startSpawner } from '../../kernel/spawner.ts';
import type { NodeState } from '../../model/node-state.ts';
import { familyStateOf, type ProxyModeDefinition } from '../../proxy/backend.ts';
import { nodeStates } from '../../proxy/desired.ts';
import { readManifestDir } from '../../source/manifests.ts';
import { buildSnapshot } from '../../source/normalize.ts';
import type { Logger } from '../../util/log.ts';
import { formatProblem, type Problem } from '../../util/problems.ts';

async function desiredFromManifests(loaded: Loaded, log: Logger): Promise<NodeState[] | undefined> {
  if (!loaded.manifests) {
    log.error('--manifests DIR is required (reading from an API server is `kproxy run`)');
    return undefined;
  }
  let read: Awaited<ReturnType<typeof readManifestDir>>;
  try {
    read = await readManifestDir(loaded.manifests);
  } catch (err) {
    log.error({ dir: loaded.manifests }, err instanceof Error ? err.message : String(err));
    return undefined;
  }
  const { snapshot, problems } = buildSnapshot(read.objects, loaded.config.nodeName);
  reportProblems(log, [...read.problems, ...problems]);
  if (!snapshot.node) {
    log.warn(
      { node: loaded.config.nodeName },
      'no Node object for this node: no node IPs, zone or podCIDRs (NodePorts with nodePortAddresses "primary" answer nowhere)',
    );
  }
  return nodeStates(snapshot, loaded.config);
}

function reportProblems(log: Logger, problems: readonly Problem[]): void {
  for (const p of problems)
    log.warn({ kind: p.kind, object: p.object, path: p.path || undefined }, `skipped: ${formatProblem(p)}`);
}

export async function sync(loaded: Loaded, mode: ProxyModeDefinition, log: Logger): Promise<number> {
  // The kernel tools (~18 runs at 10k Services: reads, commits, checks) start from a small helper
  // begun now, while this process is small: forked later from a process holding the cluster they
  // cost ~10 ms each in page-table copies alone. The helper serves nft through libnftables.
  const spawner = startSpawner();
  try {
    return await syncWith(spawner.exec, loaded, mode, log);
  } finally {
    spawner.stop();
  }
}

async function syncWith(exec: Exec, loaded: Loaded, mode: ProxyModeDefinition, log: Logger): Promise<number> {
  const states = await desiredFromManifests(loaded, log);
  if (!states) return 1;
  const backend = mode.createBackend({ config: loaded.config, exec, log, kernelCall: runKernelCall });
  const families = states.map(familyStateOf);
  const started = performance.now();
  const report = await backend.sync({ families, full: true, changed: new Set() });
  reportProblems(log, report.problems);
  if (!(await backend.matches(families))) {
    log.error('the kernel does not hold the desired rules after the sync (someone else changed them?)');
    return 1;
  }
  // UDP clients keep sending into a black hole unless flows to the old state are forgotten.
  let conntrackDeleted = 0;
  for (const state of states) {
    const r = await cleanupStaleConntrack(exec, { state });
    conntrackDeleted += r.deleted;
    for (const e of r.errors) log.warn({ family: state.family }, `conntrack cleanup: ${e}`);
  }
  log.info(
    {
      mode: mode.mode,
      changes: report.changes,
      ...report.detail,
      servicePorts: states.map((s) => s.servicePorts.length),
      conntrackDeleted,
      ms: Math.round(performance.now() - started),
    },
    report.changes === 0 ? 'kernel already up to date' : 'rules applied',
  );
  return 0;
}

export async function dump(
  loaded: Loaded,
  mode: ProxyModeDefinition,
  log: Logger,
  out: NodeJS.WritableStream,
): Promise<number> {
  const format = loaded.format ?? mode.dumpFormats[0];
  if (!mode.dumpFormats.includes(format)) {
    log.error(`--format: ${mode.mode} mode prints ${mode.dumpFormats.join(' or ')}, not ${JSON.stringify(format)}`);
    return 2;
  }
  const states = await desiredFromManifests(loaded, log);
  if (!states) return 1;
  const { text, problems } = mode.dump({
    states,
    config: loaded.config,
    format,
    ...(loaded.ipFamily ? { family: loaded.ipFamily } : {}),
  });
  reportProblems(log, problems);
  out.write(text);
  return 0;
}

export async function cleanup(loaded: Loaded, mode: ProxyModeDefinition, log: Logger): Promise<number> {
  const removed = await mode.createBackend({ config: loaded.config, exec: execProgram, log }).cleanup();
  log.info({ mode: mode.mode, removed }, removed.length > 0 ? 'removed kproxy rules' : 'nothing to remove');
  return 0;
}
