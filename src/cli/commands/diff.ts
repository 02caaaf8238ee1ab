/**
 * @module cli/commands/diff
 * `kproxy diff`: what differs, and why.
 *  - without `--against`: the kernel against the desired state (drift), per the mode's own
 *    comparison (`ProxyBackend.describeDrift`); reads the kernel, writes nothing;
 *  - `--manifests DIR --against DIR2`: the desired state before (DIR) against after (DIR2), each
 *    difference attributed to the object fields that caused it (src/explain/state-diff.ts).
 * Exit 0: no differences; 3: differences found; 1: failure; 2: usage.
 */
import type { Loaded } from '../../config/load.ts';
import { diffDesired, stateDiffText } from '../../explain/state-diff.ts';
import { execProgram } from '../../kernel/exec.ts';
import { runKernelCall } from '../../kernel/kernel-calls.ts';
import { familyStateOf, type ProxyModeDefinition } from '../../proxy/backend.ts';
import { nodeStates } from '../../proxy/desired.ts';
import type { Logger } from '../../util/log.ts';
import { clusterSnapshot } from './cluster-input.ts';

export const DIFFERENCES_EXIT_CODE = 3;

export async function diff(
  loaded: Loaded,
  mode: ProxyModeDefinition,
  log: Logger,
  out: NodeJS.WritableStream,
): Promise<number> {
  const o = loaded.commandOptions;
  const output = o.output ?? 'text';
  if (output !== 'text' && output !== 'json') {
    process.stderr.write(`kproxy diff: --output: must be text or json, got ${JSON.stringify(output)}\n`);
    return 2;
  }
  if (o.against !== undefined) {
    if (!loaded.manifests) {
      process.stderr.write('kproxy diff: --against DIR2 compares with --manifests DIR: give both\n');
      return 2;
    }
    const before = await clusterSnapshot(loaded, log, loaded.manifests);
    const after = await clusterSnapshot(loaded, log, o.against);
    if (!before || !after) return 1;
    const d = diffDesired(
      { snapshot: before, states: nodeStates(before, loaded.config) },
      { snapshot: after, states: nodeStates(after, loaded.config) },
    );
    out.write(output === 'json' ? `${JSON.stringify(d, null, 2)}\n` : stateDiffText(d));
    const same = d.ports.length === 0 && d.contexts.length === 0;
    return same ? 0 : DIFFERENCES_EXIT_CODE;
  }
  const snapshot = await clusterSnapshot(loaded, log, loaded.manifests);
  if (!snapshot) return 1;
  const backend = mode.createBackend({ config: loaded.config, exec: execProgram, log, kernelCall: runKernelCall });
  const drift = await backend.describeDrift(nodeStates(snapshot, loaded.config).map(familyStateOf));
  if (output === 'json') out.write(`${JSON.stringify({ mode: mode.mode, drift }, null, 2)}\n`);
  else
    out.write(
      drift.length === 0 ? `The kernel holds exactly the desired ${mode.mode} rules.\n` : `${drift.join('\n')}\n`,
    );
  return drift.length === 0 ? 0 : DIFFERENCES_EXIT_CODE;
}
