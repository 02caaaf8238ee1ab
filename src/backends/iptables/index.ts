/**
 * @module backends/iptables
 * iptables mode (`--proxy-mode iptables`): upstream's chains and names (KUBE-SERVICES, KUBE-SVC-…,
 * KUBE-SEP-…) in the `nat` and `filter` tables, written with `iptables-restore --noflush` /
 * `ip6tables-restore --noflush` in the flavor the host uses (iptables-nft or iptables-legacy).
 */
import type { ProxyModeDefinition } from '../../proxy/backend.ts';
import type { Problem } from '../../util/problems.ts';
import { IptablesProxyBackend } from './backend.ts';
import { dumpText } from './render/restore.ts';
import { renderIptables } from './render/ruleset.ts';
import { loadTemplate } from './render/skeleton.ts';

// The template is read and validated when the mode loads, so a broken one stops kproxy at start.
loadTemplate();

export const iptablesMode: ProxyModeDefinition = {
  mode: 'iptables',
  dumpFormats: ['restore'],
  syncFailuresMetric: {
    name: 'sync_proxy_rules_iptables_restore_failures_total',
    help: 'Cumulative proxy iptables restore failures',
  },
  dump({ states, config, family }) {
    const problems: Problem[] = [];
    const rulesets = states
      .filter((state) => !family || state.family === family)
      .map((state) => {
        // A dump reads nothing from the kernel: it shows the rules for nf_conntrack_tcp_be_liberal=0, the default.
        const rendered = renderIptables(state, {
          localhostNodePorts: config.iptables.localhostNodePorts,
          dropInvalid: true,
        });
        problems.push(...rendered.problems);
        return rendered.ruleset;
      });
    return { text: dumpText(rulesets), problems };
  },
  createBackend: (deps) => new IptablesProxyBackend(deps),
};
