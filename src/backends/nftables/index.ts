/**
 * @module backends/nftables
 * nftables mode (`--proxy-mode nftables`, alias `nft`): kproxy's own `ip kproxy` / `ip6 kproxy`
 * tables, laid out for linear cost (docs/adr/0001), changed by minimal atomic transactions.
 */
import type { ProxyModeDefinition } from '../../proxy/backend.ts';
import type { Problem } from '../../util/problems.ts';
import { NftablesProxyBackend } from './backend.ts';
import { renderNftables } from './render/layout.ts';
import { createCommands, transactionJson, transactionText } from './render/ruleset.ts';
import type { Fragment } from './render/syntax.ts';

export const nftablesMode: ProxyModeDefinition = {
  mode: 'nftables',
  dumpFormats: ['nft', 'json'],
  syncFailuresMetric: {
    name: 'sync_proxy_rules_nftables_sync_failures_total',
    help: 'Cumulative proxy nftables sync failures',
  },
  dump({ states, format, family }) {
    const problems: Problem[] = [];
    const tx: Fragment[] = [];
    for (const state of states) {
      if (family && state.family !== family) continue;
      const rendered = renderNftables(state, format === 'json' ? 'ladders' : 'maps');
      problems.push(...rendered.problems);
      tx.push(...createCommands(rendered.ruleset));
    }
    const text = format === 'json' ? `${JSON.stringify(transactionJson(tx), null, 1)}\n` : transactionText(tx);
    return { text, problems };
  },
  createBackend: (deps) => new NftablesProxyBackend(deps),
};
