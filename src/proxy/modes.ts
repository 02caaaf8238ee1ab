/**
 * @module proxy/modes
 * The registry of proxy modes: one line per mode. Each mode's folder is loaded only when chosen,
 * so a process pays for the mode it runs and no other.
 */
import type { ProxyMode } from '../config/proxy-config.ts';
import type { ProxyModeDefinition } from './backend.ts';

const MODES: Record<ProxyMode, () => Promise<ProxyModeDefinition>> = {
  nftables: async () => (await import('../backends/nftables/index.ts')).nftablesMode,
  iptables: async () => (await import('../backends/iptables/index.ts')).iptablesMode,
  ipvs: async () => (await import('../backends/ipvs/index.ts')).ipvsMode,
};

export function loadProxyMode(mode: ProxyMode): Promise<ProxyModeDefinition> {
  return MODES[mode]();
}
