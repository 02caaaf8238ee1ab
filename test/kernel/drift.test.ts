/**
 * `kproxy diff` against the kernel: each mode's `describeDrift` says nothing when the kernel holds
 * the desired state, and names what someone changed (a deleted chain, a deleted set element, an
 * edited rule) — in throw-away network namespaces, nftables and iptables modes.
 */
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { IptablesProxyBackend } from '../../src/backends/iptables/backend.ts';
import { NftablesProxyBackend } from '../../src/backends/nftables/backend.ts';
import { loadProxyConfig } from '../../src/config/load.ts';
import { inNetns } from '../../src/kernel/exec.ts';
import { startSpawner } from '../../src/kernel/spawner.ts';
import { familyStateOf } from '../../src/proxy/backend.ts';
import { createLogger } from '../../src/util/log.ts';
import { withNetns } from '../support/netns.ts';
import { sampleStateV4 } from '../support/states.ts';

const log = createLogger(0, { write: () => true } as never);
const families = [familyStateOf(sampleStateV4())];
const request = { families, full: true, changed: new Set<string>() };
const run = (ns: string, cmd: string, args: string[]) => execa('ip', ['netns', 'exec', ns, cmd, ...args]);

describe('describeDrift', () => {
  for (const reader of ['nft', 'netlink'] as const) {
    it(`nftables mode (read through ${reader}): nothing after a sync; a deleted map element and a flushed chain are named, and a restart repairs them`, async () => {
      await withNetns(async (ns) => {
        // Over netlink, sets are read as digests and only the differing one is listed (ADR 0014).
        const spawner = reader === 'netlink' ? startSpawner(['ip', 'netns', 'exec', ns]) : undefined;
        try {
          const start = () =>
            new NftablesProxyBackend({ exec: inNetns(ns), ...(spawner ? { kernelCall: spawner.call } : {}) });
          const backend = start();
          expect(await backend.describeDrift(families)).toEqual(['table ip kproxy: missing from the kernel']);
          await backend.sync(request);
          expect(await backend.describeDrift(families)).toEqual([]);
          await run(ns, 'nft', ['delete', 'element', 'ip', 'kproxy', 'cluster-ips', '{ 10.96.0.5 }']);
          await run(ns, 'nft', ['flush', 'chain', 'ip', 'kproxy', 'masquerading']);
          const drift = await backend.describeDrift(families);
          expect(drift).toContain('table ip kproxy: set cluster-ips lacks 10.96.0.5');
          expect(drift.some((d) => /^table ip kproxy: chain masquerading has 0 rule\(s\), \d+ desired$/.test(d))).toBe(
            true,
          );
          // A restart's first sync reads everything back and repairs both.
          const restarted = start();
          await restarted.sync(request);
          expect(await restarted.describeDrift(families)).toEqual([]);
        } finally {
          spawner?.stop();
        }
      });
    });
  }

  it('iptables mode: nothing after a sync; a deleted rule and a stray chain are named', async () => {
    await withNetns(async (ns) => {
      const { config } = loadProxyConfig({
        argv: ['--proxy-mode=iptables', '--iptables-flavor=nft', '--hostname-override=node-a'],
        hostname: 'node-a',
        readFile: () => '',
      });
      const backend = new IptablesProxyBackend({ config, exec: inNetns(ns), log });
      await backend.sync(request);
      expect(await backend.describeDrift(families)).toEqual([]);
      await run(ns, 'iptables-nft', ['-t', 'nat', '-D', 'KUBE-MARK-MASQ', '1']);
      await run(ns, 'iptables-nft', ['-t', 'nat', '-N', 'KUBE-SVC-AAAAAAAAAAAAAAAA']);
      const drift = await backend.describeDrift(families);
      expect(drift).toContain('IPv4 nat KUBE-MARK-MASQ: lacks -j MARK --set-xmark 0x4000/0x4000');
      expect(drift).toContain('IPv4 nat KUBE-SVC-AAAAAAAAAAAAAAAA: chain not desired (stale)');
    });
  });
});
