/**
 * The node setup's decisions against a fake /proc and /sys (test/kernel/node-setup.test.ts runs it
 * for real in a network namespace): what is written, what is left, what a refusal logs.
 */
import { describe, expect, it } from 'vitest';
import { loadProxyConfig } from '../../src/config/load.ts';
import type { ProxyConfig } from '../../src/config/proxy-config.ts';
import { conntrackMax, type NodeFiles, PATHS, setUpNode } from '../../src/kernel/node-setup.ts';
import { captureLog } from '../support/daemon-harness.ts';

function config(argv: string[] = []): ProxyConfig {
  return loadProxyConfig({ argv, hostname: 'node-1', readFile: () => '' }).config;
}

/** A kernel as a map of files; `readOnly` ones refuse writes as a non-init namespace does. */
function fakeFiles(
  initial: Record<string, string>,
  readOnly: readonly string[] = [],
  cpus = 4,
): NodeFiles & { files: Map<string, string> } {
  const files = new Map(Object.entries(initial));
  return {
    files,
    read: (path) => files.get(path),
    write(path, value) {
      if (readOnly.includes(path)) throw new Error(`EACCES: permission denied, open '${path}'`);
      files.set(path, value);
    },
    cpus: () => cpus,
  };
}

const KERNEL_DEFAULTS = {
  [PATHS.oomScoreAdj]: '0',
  [PATHS.conntrackMax]: '65536',
  [PATHS.conntrackHashsize]: '16384',
  [PATHS.tcpEstablished]: '432000',
  [PATHS.tcpCloseWait]: '60',
  [PATHS.tcpBeLiberal]: '0',
  [PATHS.udpTimeout]: '30',
  [PATHS.udpStreamTimeout]: '120',
  [PATHS.routeLocalnet]: '0',
  [PATHS.bridgeCallIptables]: '1',
};

describe('node setup', () => {
  it("nf_conntrack_max is upstream's max(maxPerCore × CPUs, min)", () => {
    expect(conntrackMax(32768, 131072, 2)).toBe(131072);
    expect(conntrackMax(32768, 131072, 8)).toBe(262144);
    expect(conntrackMax(0, 131072, 8)).toBe(0);
  });

  it('upstream defaults in nftables mode: oom_score_adj, conntrack max + hash size, TCP timeouts', () => {
    const fs = fakeFiles(KERNEL_DEFAULTS);
    const log = captureLog('info');
    const results = setUpNode(config(), fs, log.log);
    expect(Object.fromEntries(fs.files)).toEqual({
      ...KERNEL_DEFAULTS,
      [PATHS.oomScoreAdj]: '-999',
      [PATHS.conntrackMax]: '131072',
      [PATHS.conntrackHashsize]: '32768',
      [PATHS.tcpEstablished]: '86400',
      [PATHS.tcpCloseWait]: '3600',
    });
    expect(results.map((r) => r.outcome)).toEqual(['set', 'set', 'set', 'set', 'set']);
    expect(log.lines.map((l) => l.msg)).toContain(
      `set ${PATHS.conntrackMax} to 131072 (conntrack.maxPerCore 32768 × 4 CPUs, min 131072)`,
    );
  });

  it('leaves what is already so, and every zero (maxPerCore 0 ignores min)', () => {
    const fs = fakeFiles({ ...KERNEL_DEFAULTS, [PATHS.tcpEstablished]: '86400' });
    const results = setUpNode(
      config(['--conntrack-max-per-core=0', '--conntrack-tcp-timeout-close-wait=0', '--oom-score-adj=0']),
      fs,
      captureLog('info').log,
    );
    expect(results).toEqual([
      { path: PATHS.oomScoreAdj, outcome: 'unchanged', want: 0, was: '0' },
      { path: PATHS.tcpEstablished, outcome: 'unchanged', want: 86400, was: '86400' },
    ]);
  });

  it('UDP timeouts, tcpBeLiberal; iptables mode: route_localnet and the br_netfilter warning', () => {
    const fs = fakeFiles({ ...KERNEL_DEFAULTS, [PATHS.bridgeCallIptables]: '0' });
    const log = captureLog('info');
    setUpNode(
      config([
        '--proxy-mode=iptables',
        '--conntrack-udp-timeout=10s',
        '--conntrack-udp-timeout-stream=5m',
        '--conntrack-tcp-be-liberal',
      ]),
      fs,
      log.log,
    );
    expect(fs.files.get(PATHS.udpTimeout)).toBe('10');
    expect(fs.files.get(PATHS.udpStreamTimeout)).toBe('300');
    expect(fs.files.get(PATHS.tcpBeLiberal)).toBe('1');
    expect(fs.files.get(PATHS.routeLocalnet)).toBe('1');
    expect(log.lines.some((l) => l.msg.startsWith('Missing br-netfilter module'))).toBe(true);
    // No localhost NodePorts, no route_localnet.
    const quiet = fakeFiles(KERNEL_DEFAULTS);
    setUpNode(config(['--proxy-mode=iptables', '--iptables-localhost-nodeports=false']), quiet, captureLog().log);
    expect(quiet.files.get(PATHS.routeLocalnet)).toBe('0');
  });

  it('a refused write is a warning that says why, and the rest goes on', () => {
    const fs = fakeFiles(KERNEL_DEFAULTS, [PATHS.conntrackMax]);
    const log = captureLog('info');
    const results = setUpNode(config(), fs, log.log);
    expect(results.find((r) => r.path === PATHS.conntrackMax)?.outcome).toBe('failed');
    // Without a new max, the hash table is left alone; the timeouts are still set.
    expect(fs.files.get(PATHS.conntrackHashsize)).toBe('16384');
    expect(fs.files.get(PATHS.tcpEstablished)).toBe('86400');
    const warning = log.lines.find((l) => l.level === 40);
    expect(warning?.msg).toMatch(
      /cannot set .*nf_conntrack_max to 131072 .*EACCES.*it stays 65536 \(outside the host network namespace/,
    );
  });

  it('a missing module is a warning, not a crash; --skip-node-setup leaves whole steps', () => {
    const log = captureLog('info');
    const results = setUpNode(config(['--skip-node-setup=oom-score-adj']), fakeFiles({}), log.log);
    expect(results.map((r) => r.outcome)).toEqual(['skipped', 'failed', 'failed', 'failed']);
    expect(log.lines.filter((l) => l.level === 40).map((l) => l.msg)[0]).toMatch(
      /does not exist \(is the nf_conntrack module loaded\?\)/,
    );
    const none = setUpNode(config(['--skip-node-setup=oom-score-adj,conntrack']), fakeFiles({}), captureLog().log);
    expect(none.map((r) => r.outcome)).toEqual(['skipped', 'skipped']);
  });
});
