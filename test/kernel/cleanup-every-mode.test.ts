/**
 * `kproxy --cleanup` (kube-proxy's flag, no command) in a network namespace of its own: after
 * syncs in nftables and iptables modes, it removes kproxy's rules of every mode, exits 0, and
 * leaves what it does not own (iptables' own tables, the kubelet's KUBE-FIREWALL) in place.
 */
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const KPROXY = fileURLToPath(new URL('../../bin/kproxy', import.meta.url));
const EXAMPLES = fileURLToPath(new URL('../../examples', import.meta.url));
const NS = `k11cleanup${process.pid}`;

const inNs = (...args: string[]) => execa('ip', ['netns', 'exec', NS, ...args], { reject: false });

beforeAll(async () => {
  await execa('ip', ['netns', 'add', NS]);
  await inNs('ip', 'link', 'set', 'lo', 'up');
});

afterAll(async () => {
  await execa('ip', ['netns', 'del', NS], { reject: false });
});

describe('kproxy --cleanup', () => {
  it("removes kproxy's rules of every mode and nothing else", async () => {
    for (const mode of ['nftables', 'iptables']) {
      const r = await inNs(
        KPROXY,
        'sync',
        '--manifests',
        EXAMPLES,
        '--hostname-override',
        'demo-node',
        '--proxy-mode',
        mode,
      );
      expect(r.exitCode, r.stderr).toBe(0);
    }
    expect((await inNs('nft', 'list', 'tables')).stdout).toContain('table ip kproxy');
    expect((await inNs('iptables-save')).stdout).toContain('KUBE-SERVICES');

    const r = await inNs(KPROXY, '--cleanup');
    expect(r.exitCode, r.stderr).toBe(0);
    const removed = r.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { mode?: string; msg: string });
    expect(removed.map((l) => `${l.mode} ${l.msg}`)).toEqual([
      'nftables removed kproxy rules',
      'undefined iptables mode uses iptables-nft',
      'iptables removed kproxy rules',
      'ipvs nothing to remove',
    ]);
    const tables = (await inNs('nft', 'list', 'tables')).stdout;
    expect(tables).not.toContain('kproxy');
    expect(tables).toContain('table ip nat');
    // KUBE-FIREWALL (the localnet block) is shared with the kubelet: upstream's cleanup leaves it too.
    const left = (await inNs('iptables-save')).stdout.split('\n').filter((l) => /KUBE-(?!FIREWALL)/.test(l));
    expect(left).toEqual([]);
  });
});
