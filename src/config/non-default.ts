/**
 * @module config/non-default
 * The settings of a configuration that differ from the defaults, for the start-up line: what an
 * operator changed, in one place, whichever way (flag or file) it came.
 */
import { isDeepStrictEqual } from 'node:util';
import { KUBE_PROXY_GROUP, KUBE_PROXY_KIND, type ConfigVersion } from './file.ts';
import { loadProxyConfig } from './load.ts';
import type { ProxyConfig } from './proxy-config.ts';

/**
 * Dotted paths and values (`nodeSetup.conntrack.maxPerCore: 0`) of every setting that differs from
 * the defaults of this mode, node and config version (defaults differ by mode and by version).
 */
export function nonDefaultSettings(config: ProxyConfig, version: ConfigVersion): Record<string, unknown> {
  const defaults = loadProxyConfig({
    argv: ['--config', 'defaults', '--proxy-mode', config.mode, '--hostname-override', config.nodeName],
    hostname: config.nodeName,
    readFile: () => `apiVersion: ${KUBE_PROXY_GROUP}/${version}\nkind: ${KUBE_PROXY_KIND}\n`,
  }).config;
  const out: Record<string, unknown> = {};
  const walk = (a: unknown, b: unknown, path: string): void => {
    if (isDeepStrictEqual(a, b)) return;
    if (isRecord(a) && isRecord(b) && !('kind' in a) && !('mode' in a && path !== '')) {
      for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) walk(a[k], b[k], path ? `${path}.${k}` : k);
      return;
    }
    out[path] = a;
  };
  walk(config, defaults, '');
  return out;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
