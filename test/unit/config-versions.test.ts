/**
 * Both KubeProxyConfiguration versions as upstream reads them: upstream's own default files
 * (test/fixtures/kube-proxy-config, copied from kubernetes/kubernetes), strict decoding in
 * v1alpha2 and lenient in v1alpha1, field paths in messages, and `--write-config-to` round trips.
 */
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadProxyConfig, type Loaded } from '../../src/config/load.ts';
import { effectiveConfigYaml, formatGoDuration } from '../../src/config/write-config.ts';

const FIXTURES = new URL('../fixtures/kube-proxy-config/', import.meta.url);
const fixture = (name: string): string => readFileSync(new URL(name, FIXTURES), 'utf8');
const V2 = 'apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n';
const V1 = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';

function load(file: string, argv: string[] = []): Loaded {
  return loadProxyConfig({
    argv: ['--config', '/etc/kp.yaml', ...argv],
    hostname: 'node-1',
    readFile: () => file,
  });
}

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

const noFile = (): Loaded => loadProxyConfig({ argv: [], hostname: 'node-1', readFile: () => '' });

describe("upstream's default files", () => {
  it('v1alpha1: the same configuration as no file at all', () => {
    const r = load(fixture('v1alpha1-defaults.yaml'));
    expect(r.configVersion).toBe('v1alpha1');
    // The file says `format: text` (upstream's default); kproxy's default without a file is JSON.
    expect({ ...r.config, loggingFormat: 'json' }).toEqual(noFile().config);
    // ipvs.ipSet is gone from today's v1alpha1: lenient decoding warns.
    expect(r.warnings).toEqual(['unknown field "ipvs.ipSet"']);
  });

  it('v1alpha2: defaults as upstream sets them, differences from v1alpha1 included', () => {
    const r = load(fixture('v1alpha2-defaults.yaml'));
    expect(r.configVersion).toBe('v1alpha2');
    const c = r.config;
    expect(c.syncPeriodMs).toBe(30_000);
    expect(c.minSyncPeriodMs).toBe(1_000);
    expect(c.healthzBindAddress).toBe('0.0.0.0:10256');
    expect(c.metricsBindAddress).toBe('127.0.0.1:10249');
    expect(c.nodeSetup.conntrack).toEqual({
      maxPerCore: 32768,
      min: 131072,
      tcpEstablishedTimeoutSeconds: 86400,
      tcpCloseWaitTimeoutSeconds: 3600,
      tcpBeLiberal: false,
      udpTimeoutSeconds: 0,
      udpStreamTimeoutSeconds: 0,
    });
    expect(c.nodeSetup.oomScoreAdj).toBe(-999);
    // v1alpha2's default for localhost NodePorts is false (v1alpha1's is true).
    expect(c.iptables.localhostNodePorts).toBe(false);
    expect(load(V2).config.iptables.localhostNodePorts).toBe(false);
    expect(load(V1).config.iptables.localhostNodePorts).toBe(true);
    expect(r.featureGates).toEqual({ MultiCIDRServiceAllocator: false });
    expect(r.warnings).toEqual([
      'feature gate MultiCIDRServiceAllocator=false: kproxy has no feature gates; it behaves as kube-proxy with every gate at its default',
    ]);
  });
});

describe('v1alpha2 fields', () => {
  it('reads the moved fields', () => {
    const r = load(
      `${V2}mode: iptables
syncPeriod: 10s
minSyncPeriod: 2s
linux:
  masqueradeAll: true
  oomScoreAdj: -500
  conntrack:
    maxPerCore: 0
    tcpBeLiberal: true
    udpTimeout: 30s
detectLocal:
  clusterCIDRs: [10.244.0.0/16, fd00:244::/56]
healthzBindAddresses: [192.0.2.1/32]
healthzBindPort: 12345
metricsBindAddresses: [0.0.0.0/0]
ipvs:
  masqueradeBit: 3
iptables:
  masqueradeBit: 5
`,
    );
    const c = r.config;
    expect(c.mode).toBe('iptables');
    expect([c.syncPeriodMs, c.minSyncPeriodMs]).toEqual([10_000, 2_000]);
    expect(c.masqueradeAll).toBe(true);
    expect(c.masqueradeBit).toBe(5);
    expect(c.nodeSetup.oomScoreAdj).toBe(-500);
    expect(c.nodeSetup.conntrack).toMatchObject({ maxPerCore: 0, tcpBeLiberal: true, udpTimeoutSeconds: 30 });
    expect(c.clusterCIDRs.map((x) => x.address)).toEqual(['10.244.0.0', 'fd00:244::']);
    expect(c.healthzBindAddress).toBe('192.0.2.1:12345');
    expect(c.metricsBindAddress).toBe('0.0.0.0:10249');
  });

  it('messages name the v1alpha2 field path', () => {
    expect(
      problems(() =>
        load(`${V2}syncPeriod: 1s
minSyncPeriod: 5s
linux:
  oomScoreAdj: 2000
  conntrack:
    tcpEstablishedTimeout: -1s
detectLocal:
  clusterCIDRs: [10.0.0.0/33]
metricsBindAddresses: [10.0.0.0/8]
nftables:
  masqueradeBit: 40
`),
      ),
    ).toEqual([
      'metricsBindAddresses: kproxy serves metrics on one address: give 0.0.0.0/0 and/or ::/0 (every address), the loopback ranges (127.0.0.0/8, ::1/128), or one address (/32 or /128); got ["10.0.0.0/8"]',
      'detectLocal.clusterCIDRs: invalid CIDR "10.0.0.0/33"',
      'nftables.masqueradeBit: must be an integer 0..31, got 40',
      'syncPeriod: must be greater than or equal to minSyncPeriod (1s < 5s)',
      'linux.conntrack.tcpEstablishedTimeout: must be greater than or equal to 0, got -1s',
      'linux.oomScoreAdj: must be within -1000..1000, got 2000',
    ]);
  });

  it('strict: unknown and duplicate fields are errors', () => {
    expect(
      problems(() =>
        load(`${V2}syncPeriod: 1s\nsyncPeriod: 2s\nlinux:\n  masqueradeAl: true\nclusterCIDR: 10.0.0.0/8\n`),
      ),
    ).toEqual(['syncPeriod: duplicate field', 'unknown field "linux.masqueradeAl"', 'unknown field "clusterCIDR"']);
  });

  it("upstream's checks of the settings kproxy does not use", () => {
    expect(problems(() => load(`${V2}configSyncPeriod: -1s\nclientConnection:\n  burst: -1\n`))).toEqual([
      'configSyncPeriod: must be greater than 0, got -1s',
      'clientConnection.burst: must be greater than or equal to 0, got -1',
    ]);
  });

  it('logging.vmodule is refused when given, accepted empty', () => {
    expect(problems(() => load(`${V2}logging:\n  vmodule:\n  - filePattern: proxier\n    verbosity: 4\n`))).toEqual([
      'logging.vmodule: not supported: kproxy logs at one verbosity (-v)',
    ]);
    expect(load(`${V2}logging:\n  vmodule: []\n`).warnings).toEqual([]);
  });

  it('refuses what kproxy cannot do, by name', () => {
    expect(
      problems(() => load(`${V2}nodeIPOverride: [192.0.2.1]\nenableProfiling: true\nconfigHardFail: false\n`)),
    ).toEqual([
      "nodeIPOverride: not supported: kproxy takes the node's IPs from its Node object (leave it unset)",
      'enableProfiling: not supported: kproxy has no /debug/pprof (profile with node --cpu-prof)',
      'configHardFail: not supported: an invalid configuration always stops kproxy at start (and is refused on reload, keeping the running one)',
    ]);
  });
});

describe('v1alpha1 leniency', () => {
  it('unknown and duplicate fields are warnings; the last duplicate wins', () => {
    const r = load(`${V1}mode: iptables\nmode: ipvs\nconntrack:\n  maxPerCor: 1\n`);
    expect(r.config.mode).toBe('ipvs');
    expect(r.warnings).toEqual(['mode: duplicate field', 'unknown field "conntrack.maxPerCor"']);
  });

  it('an apiVersion of neither version is an error', () => {
    expect(problems(() => load('apiVersion: kubeproxy.config.k8s.io/v1\nkind: KubeProxyConfiguration\n'))).toEqual([
      'apiVersion: must be "kubeproxy.config.k8s.io/v1alpha1" or "kubeproxy.config.k8s.io/v1alpha2", got string "kubeproxy.config.k8s.io/v1"',
    ]);
  });
});

describe('upstream flags', () => {
  const flags = (argv: string[]): Loaded =>
    loadProxyConfig({
      argv,
      hostname: 'node-1',
      readFile: () => '',
      commandFlags: ['cleanup', 'init-only', 'write-config-to'],
    });

  it('conntrack, oom-score-adj, hard fail, logging format, deprecated ports', () => {
    const r = flags([
      '--conntrack-max-per-core=0',
      '--conntrack-min=5',
      '--conntrack-tcp-timeout-established=2h',
      '--conntrack-tcp-timeout-close-wait=30s',
      '--conntrack-tcp-be-liberal',
      '--conntrack-udp-timeout=1m',
      '--conntrack-udp-timeout-stream=3m',
      '--oom-score-adj=-100',
      '--bind-address-hard-fail',
      '--logging-format=text',
      '--healthz-port=0',
      '--metrics-port=9999',
      '--init-only',
    ]);
    expect(r.config.nodeSetup).toEqual({
      skip: [],
      oomScoreAdj: -100,
      conntrack: {
        maxPerCore: 0,
        min: 5,
        tcpEstablishedTimeoutSeconds: 7200,
        tcpCloseWaitTimeoutSeconds: 30,
        tcpBeLiberal: true,
        udpTimeoutSeconds: 60,
        udpStreamTimeoutSeconds: 180,
      },
    });
    expect(r.config.bindAddressHardFail).toBe(true);
    expect(r.config.loggingFormat).toBe('text');
    expect(r.config.healthzBindAddress).toBe('');
    expect(r.config.metricsBindAddress).toBe('127.0.0.1:9999');
    expect(r.initOnly).toBe(true);
  });

  it('refuses, by name, what kproxy cannot honour', () => {
    expect(
      problems(() =>
        flags([
          '--profiling',
          '--bind-address=192.0.2.7',
          '--vmodule=proxier=4',
          '--logging-format=xml',
          '--oom-score-adj=-2000',
          '--feature-gates=Foo',
          '--skip-node-setup=conntrack,sysctl',
          '--cleanup',
          '--init-only',
          '--no-such-flag',
        ]),
      ),
    ).toEqual([
      'unknown flag --no-such-flag',
      '--profiling: not supported: kproxy has no /debug/pprof (profile with node --cpu-prof)',
      '--vmodule: not supported: kproxy logs at one verbosity (-v)',
      "--bind-address: not supported: overriding the node's primary IP (192.0.2.7); kproxy takes it from the Node object (leave 0.0.0.0)",
      '--skip-node-setup: unknown step "sysctl" (steps: oom-score-adj, conntrack, route-localnet)',
      '--oom-score-adj: must be an integer -1000..1000, got "-2000"',
      '--logging-format: must be text or json, got "xml"',
      '--feature-gates: each entry must be Name=true|false, got "Foo"',
      '--cleanup, --init-only and --write-config-to: give at most one',
    ]);
  });

  it('accepts what has no effect in kproxy, and says so', () => {
    const r = flags([
      '--bind-address=0.0.0.0',
      '--kube-api-qps=50',
      '--config-sync-period=1m',
      '--feature-gates=A=true',
    ]);
    expect(r.warnings).toEqual([
      "--config-sync-period: no effect: kproxy's watches deliver every change and need no periodic resync",
      '--kube-api-qps/--kube-api-burst: no effect: kproxy makes a handful of lists and watches, never throttled',
      'feature gate A=true: kproxy has no feature gates; it behaves as kube-proxy with every gate at its default',
    ]);
  });
});

describe('--write-config-to', () => {
  it('formats durations as Go does', () => {
    expect([0, 500, 1000, 90_000, 3_600_000, 86_400_000].map(formatGoDuration)).toEqual([
      '0s',
      '500ms',
      '1s',
      '1m30s',
      '1h0m0s',
      '24h0m0s',
    ]);
  });

  for (const version of ['v1alpha1', 'v1alpha2'] as const) {
    it(`${version}: the written file loads back to the same configuration`, () => {
      const header = version === 'v1alpha1' ? V1 : V2;
      const original = load(`${header}mode: iptables\nhostnameOverride: Node-X\nnodePortAddresses: [10.0.0.0/8]\n`, [
        '--masquerade-all',
        '--conntrack-udp-timeout=45s',
        '--iptables-min-sync-period=3s',
        '--cluster-cidr=10.244.0.0/16',
      ]);
      const written = effectiveConfigYaml(original, version);
      if (!('text' in written)) throw new Error(written.error);
      expect((parse(written.text) as { apiVersion: string }).apiVersion).toBe(`kubeproxy.config.k8s.io/${version}`);
      const reloaded = load(written.text);
      expect(reloaded.config).toEqual(original.config);
      expect(reloaded.warnings).toEqual([]);
    });
  }
});
