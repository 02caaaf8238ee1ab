/**
 * @module daemon/config-reload
 * Config file reload without a restart (docs/adr/0009). The file is watched through its directory:
 * a ConfigMap update never writes the file, it swaps the `..data` symlink the file points through
 * (a rename in the directory), and editors replace files by rename too. Any event in the directory
 * re-reads the file; only a change of its text counts.
 *
 * `reloadPlan` sorts the changed settings: those fixed at start (the mode, the node's name, the
 * bind addresses, where the cluster is read from, the log format) need a restart, and while any of
 * them differs the new file is not applied at all; the rest are applied live.
 */
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { Loaded } from '../config/load.ts';
import type { ProxyConfig } from '../config/proxy-config.ts';
import type { Logger } from '../util/log.ts';

/** Settings only a restart applies: what the process bound, opened or named itself by at start. */
const RESTART_FIELDS = [
  'mode',
  'nodeName',
  'healthzBindAddress',
  'metricsBindAddress',
  'bindAddressHardFail',
  'loggingFormat',
] as const satisfies readonly (keyof ProxyConfig)[];

export interface ReloadPlan {
  /** Paths of changed settings that need a restart (`kubeconfig`, `mode`, ...). */
  readonly restartNeeded: string[];
  /** Top-level settings that changed and are applied live. */
  readonly live: string[];
}

export function reloadPlan(running: Loaded, next: Loaded): ReloadPlan {
  const restartNeeded: string[] = RESTART_FIELDS.filter((f) => !isDeepStrictEqual(running.config[f], next.config[f]));
  for (const f of ['kubeconfig', 'master', 'manifests'] as const)
    if (running[f] !== next[f]) restartNeeded.push(f === 'kubeconfig' ? 'clientConnection.kubeconfig' : f);
  if (running.config.iptables.flavor !== next.config.iptables.flavor) restartNeeded.push('iptables flavor');
  // (A changed iptables flavor is already a restart; the iptables section's other field is live.)
  const live = (Object.keys(next.config) as (keyof ProxyConfig)[]).filter(
    (f) => !(RESTART_FIELDS as readonly string[]).includes(f) && !isDeepStrictEqual(running.config[f], next.config[f]),
  );
  return { restartNeeded, live };
}

/**
 * Calls `onChange` with the file's new text after it changed (debounced: a ConfigMap swap is a
 * burst of events). Unreadable moments (mid-swap) are skipped; the next event reads again.
 * Returns the stop function.
 */
export function watchConfigFile(
  path: string,
  onChange: (text: string) => void,
  log: Logger,
  debounceMs = 200,
): () => void {
  let last = readText(path);
  let timer: NodeJS.Timeout | undefined;
  const check = (): void => {
    timer = undefined;
    const text = readText(path);
    if (text === undefined || text === last) return;
    last = text;
    onChange(text);
  };
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dirname(path), { persistent: false }, () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(check, debounceMs);
    });
    watcher.on('error', (err) => log.warn({ file: path, err: err.message }, 'config file watch failed; reload is off'));
  } catch (err) {
    log.warn({ file: path, err: (err as Error).message }, 'cannot watch the config file; reload is off');
  }
  log.debug({ file: path, dir: dirname(path), name: basename(path) }, 'watching the config file');
  return () => {
    if (timer) clearTimeout(timer);
    watcher?.close();
  };
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}
