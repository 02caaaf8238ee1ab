/**
 * @module backends/ipvs
 * IPVS mode (`--proxy-mode ipvs`): one IPVS virtual server per service frontend with masquerading
 * real servers, the service addresses on the dummy interface kube-ipvs0, and kproxy's helper table
 * `ip kproxy-ipvs` / `ip6 kproxy-ipvs` for what IPVS cannot do (docs/adr/0006-ipvs-mode.md).
 */
import type { ProxyModeDefinition } from '../../proxy/backend.ts';
import type { Problem } from '../../util/problems.ts';
import { IpvsProxyBackend } from './backend.ts';
import { dumpText } from './render/dump.ts';
import { dumpFacts, renderFamily } from './render/families.ts';

export const ipvsMode: ProxyModeDefinition = {
  mode: 'ipvs',
  dumpFormats: ['ipvsadm'],
  // Upstream's IPVS mode counts its failed syncs (iptables-restore) here; kproxy counts every failed sync.
  syncFailuresMetric: {
    name: 'sync_proxy_rules_iptables_restore_failures_total',
    help: 'Cumulative proxy iptables restore failures (IPVS mode: failed syncs)',
  },
  dump({ states, config, family }) {
    const problems: Problem[] = [];
    const facts = dumpFacts(states);
    const rendered = states
      .filter((s) => !family || s.family === family)
      .map((s) => {
        const r = renderFamily(s, config.ipvs.scheduler, facts);
        problems.push(...r.problems);
        return r;
      });
    return { text: dumpText(rendered), problems };
  },
  createBackend: (deps) => new IpvsProxyBackend(deps),
};
