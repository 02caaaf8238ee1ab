/**
 * @module cli/commands/upstream-actions
 * kube-proxy's do-one-thing-and-exit flags, given without a command:
 * `--write-config-to FILE` (the effective configuration, in the `--config` file's version),
 * `--init-only` (the node setup that needs full privileges: conntrack sysctls, oom_score_adj), and
 * `--cleanup` (remove the rules of every mode, as upstream does, so a mode switch leaves nothing).
 */
import { writeFileSync } from 'node:fs';
import type { Loaded } from '../../config/load.ts';
import type { ProxyMode } from '../../config/proxy-config.ts';
import { effectiveConfigYaml } from '../../config/write-config.ts';
import { execProgram } from '../../kernel/exec.ts';
import { procFiles, setUpNode } from '../../kernel/node-setup.ts';
import { loadProxyMode } from '../../proxy/modes.ts';
import type { Logger } from '../../util/log.ts';

export async function runUpstreamAction(loaded: Loaded, log: Logger): Promise<number> {
  if (loaded.writeConfigTo !== undefined) return writeConfig(loaded, loaded.writeConfigTo, log);
  if (loaded.initOnly) {
    const results = setUpNode(loaded.config, procFiles, log);
    const failed = results.filter((r) => r.outcome === 'failed').length;
    log.info({ steps: results.length, failed }, 'node setup done (--init-only); exiting');
    return 0;
  }
  return cleanupEveryMode(loaded, log);
}

function writeConfig(loaded: Loaded, path: string, log: Logger): number {
  const r = effectiveConfigYaml(loaded, loaded.configVersion);
  if ('error' in r) {
    log.error({ file: path }, `--write-config-to: ${r.error}`);
    return 2;
  }
  try {
    writeFileSync(path, r.text);
  } catch (err) {
    log.error({ file: path }, `--write-config-to: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
  log.info({ file: path, version: loaded.configVersion }, 'Wrote configuration');
  return 0;
}

/** Every mode's rules; the configured mode's failure fails the run, another's (its tool missing) is logged. */
async function cleanupEveryMode(loaded: Loaded, log: Logger): Promise<number> {
  const modes: ProxyMode[] = ['nftables', 'iptables', 'ipvs'];
  let code = 0;
  for (const mode of modes) {
    try {
      const definition = await loadProxyMode(mode);
      const config = { ...loaded.config, mode };
      const removed = await definition.createBackend({ config, exec: execProgram, log }).cleanup();
      log.info({ mode, removed }, removed.length > 0 ? 'removed kproxy rules' : 'nothing to remove');
    } catch (err) {
      log[mode === loaded.config.mode ? 'error' : 'warn'](
        { mode },
        `cleanup of ${mode} mode failed: ${err instanceof Error ? err.message : String(err)}`,
      );
      if (mode === loaded.config.mode) code = 1;
    }
  }
  return code;
}
