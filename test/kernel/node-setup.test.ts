/**
 * `kproxy --init-only` for real, in a network namespace of its own: the per-namespace conntrack
 * sysctls and route_localnet are set there, nf_conntrack_max (global: read-only outside the host
 * namespace on this kernel) is refused and logged without failing, and nothing outside the
 * namespace changes. oom_score_adj is the kproxy process's own.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PATHS } from '../../src/kernel/node-setup.ts';
import type { LogLine } from '../support/daemon-harness.ts';

const KPROXY = fileURLToPath(new URL('../../bin/kproxy', import.meta.url));
const NS = `k11setup${process.pid}`;

const inNs = async (...args: string[]): Promise<string> =>
  (await execa('ip', ['netns', 'exec', NS, ...args])).stdout.trim();
const sysctl = (path: string): Promise<string> => inNs('cat', path);

beforeAll(async () => {
  await execa('ip', ['netns', 'add', NS]);
});

afterAll(async () => {
  await execa('ip', ['netns', 'del', NS], { reject: false });
});

describe('kproxy --init-only in a network namespace', () => {
  it('sets the per-namespace sysctls, reports the global one it may not set, exits 0', async () => {
    const hostMax = readFileSync(PATHS.conntrackMax, 'utf8').trim();
    const r = await execa(
      'ip',
      [
        'netns',
        'exec',
        NS,
        KPROXY,
        '--init-only',
        '--proxy-mode=iptables',
        '--conntrack-tcp-timeout-established=3h',
        '--conntrack-tcp-timeout-close-wait=90s',
        '--conntrack-udp-timeout=20s',
        '--conntrack-udp-timeout-stream=150s',
        '--conntrack-tcp-be-liberal',
        '--conntrack-max-per-core=1000000',
        // Raising the score needs no privilege (lowering needs CAP_SYS_RESOURCE, which a test may lack).
        '--oom-score-adj=500',
      ],
      { reject: false },
    );
    const lines = r.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as LogLine);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await sysctl(PATHS.tcpEstablished)).toBe('10800');
    expect(await sysctl(PATHS.tcpCloseWait)).toBe('90');
    expect(await sysctl(PATHS.udpTimeout)).toBe('20');
    expect(await sysctl(PATHS.udpStreamTimeout)).toBe('150');
    expect(await sysctl(PATHS.tcpBeLiberal)).toBe('1');
    expect(await sysctl(PATHS.routeLocalnet)).toBe('1');
    // The global limit: refused here, logged with the reason, and the host's value untouched.
    const refused = lines.find((l) => l.msg.startsWith(`cannot set ${PATHS.conntrackMax}`));
    expect(refused?.msg, r.stderr).toMatch(/outside the host network namespace/);
    expect(readFileSync(PATHS.conntrackMax, 'utf8').trim()).toBe(hostMax);
    expect(lines.some((l) => l.msg === `set ${PATHS.oomScoreAdj} to 500 (oomScoreAdj)`)).toBe(true);
    expect(lines.at(-1)?.msg).toBe('node setup done (--init-only); exiting');
  });
});
