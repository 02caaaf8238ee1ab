import { describe, expect, it } from 'vitest';
import { parseGoDuration } from '../../src/config/duration.ts';
import { ConfigError, loadProxyConfig, parseBindAddress, type LoadInputs, type Loaded } from '../../src/config/load.ts';

const HEADER = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';

/** Upstream's defaults for what kproxy does besides rules (node setup, bind failures). */
const UPSTREAM_DEFAULTS = {
  nodeSetup: {
    skip: [],
    oomScoreAdj: -999,
    conntrack: {
      maxPerCore: 32768,
      min: 131072,
      tcpEstablishedTimeoutSeconds: 86400,
      tcpCloseWaitTimeoutSeconds: 3600,
      tcpBeLiberal: false,
      udpTimeoutSeconds: 0,
      udpStreamTimeoutSeconds: 0,
    },
  },
  bindAddressHardFail: false,
};

function load(
  argv: string[],
  opts: { file?: string; hostname?: string; commandFlags?: LoadInputs['commandFlags'] } = {},
): Loaded {
  return loadProxyConfig({
    argv,
    hostname: opts.hostname ?? 'Node-1',
    readFile: (path) => {
      if (opts.file === undefined || path !== '/etc/kp.yaml') throw new Error(`ENOENT: no such file ${path}`);
      return opts.file;
    },
    ...(opts.commandFlags ? { commandFlags: opts.commandFlags } : {}),
  });
}

function withFile(body: string, argv: string[] = []): Loaded {
  return load(['--config', '/etc/kp.yaml', ...argv], { file: HEADER + body });
}

/** The problems of the ConfigError thrown by `fn`. */
function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

describe('defaults', () => {
  it('produces upstream defaults with no flags and no file', () => {
    const r = load([]);
    expect(r.config).toEqual({
      mode: 'nftables',
      nodeName: 'node-1',
      clusterCIDRs: [],
      detectLocal: { mode: 'ClusterCIDR' },
      nodePortAddresses: { kind: 'primary' },
      masqueradeAll: false,
      masqueradeBit: 14,
      syncPeriodMs: 30_000,
      minSyncPeriodMs: 1_000,
      healthzBindAddress: '0.0.0.0:10256',
      metricsBindAddress: '127.0.0.1:10249',
      verbosity: 0,
      iptables: { localhostNodePorts: true, flavor: 'auto' },
      ipvs: {
        scheduler: 'rr',
        excludeCIDRs: [],
        strictARP: false,
        tcpTimeoutSeconds: 0,
        tcpFinTimeoutSeconds: 0,
        udpTimeoutSeconds: 0,
      },
      ...UPSTREAM_DEFAULTS,
      loggingFormat: 'json',
    });
    expect(r.warnings).toEqual([]);
    expect(r.manifests).toBeUndefined();
    expect(r.format).toBeUndefined();
    expect(r.kubeconfig).toBeUndefined();
  });

  it('a minimal file gives the same defaults', () => {
    expect(withFile('').config).toEqual(load([]).config);
  });

  it('trims and lower-cases the host name', () => {
    expect(load([], { hostname: '  My-Host.Example.COM \n' }).config.nodeName).toBe('my-host.example.com');
  });
});

describe('flags', () => {
  it('parses each flag', () => {
    const r = load([
      '--manifests',
      'dir',
      '--format',
      'json',
      '--kubeconfig',
      '/k',
      '--proxy-mode',
      'nft',
      '--hostname-override',
      'Worker-2',
      '--cluster-cidr',
      '10.244.0.0/16',
      '--detect-local-mode',
      'BridgeInterface',
      '--pod-bridge-interface',
      'cbr0',
      '--masquerade-all',
      '--nodeport-addresses',
      '10.0.0.0/8, fd00::/64',
      '--healthz-bind-address',
      '[::]:9000',
      '--metrics-bind-address',
      '0.0.0.0:9001',
      '--iptables-sync-period',
      '1m',
      '--iptables-min-sync-period',
      '500ms',
      '-v',
      '4',
    ]);
    expect(r.manifests).toBe('dir');
    expect(r.format).toBe('json');
    expect(r.kubeconfig).toBe('/k');
    expect(r.config).toEqual({
      mode: 'nftables',
      nodeName: 'worker-2',
      clusterCIDRs: [{ family: 'ipv4', address: '10.244.0.0', prefixLength: 16 }],
      detectLocal: { mode: 'BridgeInterface', bridgeInterface: 'cbr0' },
      nodePortAddresses: {
        kind: 'cidrs',
        cidrs: [
          { family: 'ipv4', address: '10.0.0.0', prefixLength: 8 },
          { family: 'ipv6', address: 'fd00::', prefixLength: 64 },
        ],
      },
      masqueradeAll: true,
      masqueradeBit: 14,
      syncPeriodMs: 60_000,
      minSyncPeriodMs: 500,
      healthzBindAddress: '[::]:9000',
      metricsBindAddress: '0.0.0.0:9001',
      verbosity: 4,
      iptables: { localhostNodePorts: true, flavor: 'auto' },
      ipvs: {
        scheduler: 'rr',
        excludeCIDRs: [],
        strictARP: false,
        tcpTimeoutSeconds: 0,
        tcpFinTimeoutSeconds: 0,
        udpTimeoutSeconds: 0,
      },
      ...UPSTREAM_DEFAULTS,
      loggingFormat: 'json',
    });
  });

  it('accepts --flag=value and --flag value alike', () => {
    const a = load([
      '--proxy-mode=nftables',
      '--cluster-cidr=10.0.0.0/8',
      '--v=3',
      '--detect-local-mode=InterfaceNamePrefix',
      '--pod-interface-name-prefix=veth',
    ]);
    const b = load([
      '--proxy-mode',
      'nftables',
      '--cluster-cidr',
      '10.0.0.0/8',
      '--v',
      '3',
      '--detect-local-mode',
      'InterfaceNamePrefix',
      '--pod-interface-name-prefix',
      'veth',
    ]);
    expect(a.config).toEqual(b.config);
    expect(a.config.verbosity).toBe(3);
    expect(a.config.detectLocal).toEqual({ mode: 'InterfaceNamePrefix', interfaceNamePrefix: 'veth' });
  });

  it('accepts -v4, -v 4 and --v 4', () => {
    expect(load(['-v4']).config.verbosity).toBe(4);
    expect(load(['-v', '4']).config.verbosity).toBe(4);
    expect(load(['--v', '10']).config.verbosity).toBe(10);
  });

  it('accepts boolean --masquerade-all forms', () => {
    expect(load(['--masquerade-all']).config.masqueradeAll).toBe(true);
    expect(load(['--masquerade-all=true']).config.masqueradeAll).toBe(true);
    expect(load(['--masquerade-all=false']).config.masqueradeAll).toBe(false);
    expect(load(['--masquerade-all=1']).config.masqueradeAll).toBe(true);
  });

  it('last occurrence of a flag wins', () => {
    expect(load(['-v', '2', '--v=5']).config.verbosity).toBe(5);
  });

  it('maps proxy modes', () => {
    expect(load(['--proxy-mode', 'nft']).config.mode).toBe('nftables');
    expect(load(['--proxy-mode', 'nftables']).config.mode).toBe('nftables');
    expect(load(['--proxy-mode=']).config.mode).toBe('nftables');
  });

  it('nodeport-addresses keywords', () => {
    expect(load(['--nodeport-addresses', 'primary']).config.nodePortAddresses).toEqual({ kind: 'primary' });
    expect(load(['--nodeport-addresses', 'all']).config.nodePortAddresses).toEqual({ kind: 'all' });
    expect(load(['--nodeport-addresses=']).config.nodePortAddresses).toEqual({ kind: 'primary' });
  });

  it('empty --metrics-bind-address / --healthz-bind-address disable the servers', () => {
    const r = load(['--metrics-bind-address=', '--healthz-bind-address', '']);
    expect(r.config.metricsBindAddress).toBe('');
    expect(r.config.healthzBindAddress).toBe('');
  });

  it('appends the default port to a bare IP and canonicalises', () => {
    const r = load(['--metrics-bind-address', '::1', '--healthz-bind-address', '10.0.0.1']);
    expect(r.config.metricsBindAddress).toBe('[::1]:10249');
    expect(r.config.healthzBindAddress).toBe('10.0.0.1:10256');
    expect(parseBindAddress('[2001:DB8::0001]:80', 1)).toBe('[2001:db8::1]:80');
  });

  it('dual-stack --cluster-cidr keeps order and canonicalises', () => {
    expect(load(['--cluster-cidr', 'fd00:10::/56,10.244.1.7/16']).config.clusterCIDRs).toEqual([
      { family: 'ipv6', address: 'fd00:10::', prefixLength: 56 },
      { family: 'ipv4', address: '10.244.0.0', prefixLength: 16 },
    ]);
  });

  it('restricts command flags when the CLI says so', () => {
    expect(load(['--manifests', 'd'], { commandFlags: ['manifests'] }).manifests).toBe('d');
    expect(problems(() => load(['--format', 'nft'], { commandFlags: ['manifests'] }))).toEqual([
      '--format: flag not accepted by this command',
    ]);
    expect(load(['--format', 'nft'], { commandFlags: ['format'] }).format).toBe('nft');
  });
});

describe('flag errors', () => {
  it('rejects unknown flags, stray arguments and missing values, reporting all', () => {
    // The word right after an unknown flag is taken as its value ("x"), so it is not reported again.
    expect(
      problems(() => load(['--bogus', 'x', 'stray', '-z', '--masquerade-all', 'false', '--cluster-cidr'])),
    ).toEqual([
      'unknown flag --bogus',
      'unexpected argument "stray"',
      'unknown flag -z',
      'unexpected argument "false"',
      '--cluster-cidr: flag needs an argument',
    ]);
  });

  it('does not swallow the argument after an unknown --flag=value', () => {
    expect(problems(() => load(['--bogus=1', 'x']))).toEqual(['unknown flag --bogus', 'unexpected argument "x"']);
  });

  it('iptables mode: its own defaults (NodePorts on every local address) and flags', () => {
    const r = load(['--proxy-mode', 'iptables']);
    expect(r.config.mode).toBe('iptables');
    expect(r.config.nodePortAddresses).toEqual({ kind: 'all' });
    const f = load([
      '--proxy-mode=iptables',
      '--iptables-localhost-nodeports=false',
      '--iptables-masquerade-bit',
      '12',
      '--iptables-flavor',
      'legacy',
    ]);
    expect(f.config.iptables).toEqual({ localhostNodePorts: false, flavor: 'legacy' });
    expect(f.config.masqueradeBit).toBe(12);
    expect(problems(() => load(['--iptables-flavor', 'xt', '--iptables-masquerade-bit', '32']))).toEqual([
      '--iptables-masquerade-bit: must be an integer 0..31, got "32"',
      '--iptables-flavor: must be one of auto, nft, legacy, got "xt"',
    ]);
  });

  it('ipvs is accepted, with upstream defaults: rr, NodePorts on every local address, the iptables section for masquerading', () => {
    const r = load(['--proxy-mode=ipvs']);
    expect(r.config.mode).toBe('ipvs');
    expect(r.config.nodePortAddresses).toEqual({ kind: 'all' });
    expect(r.config.ipvs).toEqual({
      scheduler: 'rr',
      excludeCIDRs: [],
      strictARP: false,
      tcpTimeoutSeconds: 0,
      tcpFinTimeoutSeconds: 0,
      udpTimeoutSeconds: 0,
    });
    const f = withFile(
      'mode: ipvs\niptables: { masqueradeAll: true, masqueradeBit: 12 }\nnftables: { masqueradeBit: 13 }\n',
    );
    expect(f.config.masqueradeAll).toBe(true);
    expect(f.config.masqueradeBit).toBe(12);
  });

  it('ipvs: the ipvs section and the --ipvs-* flags (flags win), the ipvs section for sync periods', () => {
    const file =
      'mode: ipvs\nipvs:\n  scheduler: wlc\n  strictARP: true\n  excludeCIDRs: [10.0.0.0/8, "fd00::/8"]\n' +
      '  syncPeriod: 45s\n  minSyncPeriod: 2s\n  tcpTimeout: 900s\n  tcpFinTimeout: 1m\n  udpTimeout: 1.5s\n' +
      'iptables: { syncPeriod: 10s }\nnftables: { syncPeriod: 20s }\n';
    const f = withFile(file);
    expect(f.config.ipvs).toEqual({
      scheduler: 'wlc',
      excludeCIDRs: [
        { family: 'ipv4', address: '10.0.0.0', prefixLength: 8 },
        { family: 'ipv6', address: 'fd00::', prefixLength: 8 },
      ],
      strictARP: true,
      tcpTimeoutSeconds: 900,
      tcpFinTimeoutSeconds: 60,
      udpTimeoutSeconds: 1,
    });
    expect(f.config.syncPeriodMs).toBe(45_000);
    expect(f.config.minSyncPeriodMs).toBe(2_000);
    const g = withFile(file, [
      '--ipvs-scheduler=sh',
      '--ipvs-strict-arp=false',
      '--ipvs-exclude-cidrs=192.0.2.0/24',
      '--ipvs-sync-period=1m',
      '--ipvs-min-sync-period=3s',
      '--ipvs-tcp-timeout=0',
      '--ipvs-tcpfin-timeout=5s',
      '--ipvs-udp-timeout=10s',
    ]);
    expect(g.config.ipvs).toEqual({
      scheduler: 'sh',
      excludeCIDRs: [{ family: 'ipv4', address: '192.0.2.0', prefixLength: 24 }],
      strictARP: false,
      tcpTimeoutSeconds: 0,
      tcpFinTimeoutSeconds: 5,
      udpTimeoutSeconds: 10,
    });
    expect(g.config.syncPeriodMs).toBe(60_000);
    expect(g.config.minSyncPeriodMs).toBe(3_000);
  });

  it('ipvs: bad values are problems naming the flag or field; other modes ignore the ipvs section', () => {
    expect(
      problems(() =>
        load([
          '--proxy-mode=ipvs',
          '--ipvs-scheduler=fancy',
          '--ipvs-exclude-cidrs=10.0.0.0/8,nope',
          '--ipvs-tcp-timeout=-5s',
          '--ipvs-udp-timeout=soon',
          '--ipvs-sync-period=0s',
        ]),
      ),
    ).toEqual([
      '--ipvs-sync-period: must be greater than 0, got 0ms',
      '--ipvs-scheduler: unknown IPVS scheduler "fancy" (one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos)',
      '--ipvs-exclude-cidrs: invalid CIDR "nope"',
      "--ipvs-tcp-timeout: must be 0 (keep the kernel's) or up to 2147483s, got -5s",
      '--ipvs-udp-timeout: invalid duration "soon" (examples: 900s, 15m, 0 keeps the kernel\'s)',
    ]);
    expect(problems(() => withFile('mode: ipvs\nipvs: { scheduler: "rr; ipvsadm -C" }\n'))).toEqual([
      'ipvs.scheduler: unknown IPVS scheduler "rr; ipvsadm -C" (one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos)',
    ]);
    const other = withFile('mode: nftables\nipvs: { scheduler: nonsense, excludeCIDRs: [x] }\n');
    expect(other.config.ipvs.scheduler).toBe('rr');
    expect(other.config.ipvs.excludeCIDRs).toEqual([]);
  });

  it('rejects other modes', () => {
    const p = problems(() => load(['--proxy-mode', 'userspace']));
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/^--proxy-mode: invalid proxy mode "userspace"/);
  });

  it('validates each flag value', () => {
    const p = problems(() =>
      load([
        '--masquerade-all=maybe',
        '--cluster-cidr',
        '10.0.0.1',
        '--detect-local-mode',
        'Bogus',
        '--nodeport-addresses',
        'primary,10.0.0.0/8',
        '--healthz-bind-address',
        'localhost:1',
        '--metrics-bind-address',
        '127.0.0.1:70000',
        '--iptables-sync-period',
        '30',
        '--iptables-min-sync-period',
        '1x',
        '-v',
        '11',
        '--ip-family',
        'ipv5',
        '--manifests',
        '',
      ]),
    );
    expect(p).toEqual([
      '--masquerade-all: invalid boolean "maybe" (use --masquerade-all or --masquerade-all=true|false)',
      '--cluster-cidr: invalid CIDR "10.0.0.1"',
      '--detect-local-mode: invalid detect-local mode "Bogus" (valid: ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix, None)',
      '--nodeport-addresses: "primary" must be the only entry (it cannot be combined with other entries)',
      '--iptables-sync-period: invalid duration "30" (examples: 30s, 1m, 500ms, 1h2m)',
      '--iptables-min-sync-period: invalid duration "1x" (examples: 30s, 1m, 500ms, 1h2m)',
      '--healthz-bind-address: must be IP:port (e.g. 0.0.0.0:10256 or [::]:10256) or a bare IP, got "localhost:1"',
      '--metrics-bind-address: must be IP:port (e.g. 127.0.0.1:10249 or [::]:10249) or a bare IP, got "127.0.0.1:70000"',
      '--v: must be an integer 0..10, got "11"',
      '--manifests: must name a directory',
      '--ip-family: must be ipv4 or ipv6, got "ipv5"',
    ]);
  });

  it('sync period relations', () => {
    expect(problems(() => load(['--iptables-sync-period', '0s']))).toEqual([
      '--iptables-sync-period: must be greater than 0, got 0ms',
    ]);
    expect(problems(() => load(['--iptables-min-sync-period', '-1s']))).toEqual([
      '--iptables-min-sync-period: must be greater than or equal to 0, got -1s',
    ]);
    expect(problems(() => load(['--iptables-sync-period', '1s', '--iptables-min-sync-period', '2s']))).toEqual([
      '--iptables-sync-period: must be greater than or equal to --iptables-min-sync-period (1s < 2s)',
    ]);
    expect(load(['--iptables-min-sync-period', '0']).config.minSyncPeriodMs).toBe(0);
  });

  it('rejects invalid node names, naming their source', () => {
    expect(problems(() => load(['--hostname-override', 'bad_name']))).toEqual([
      `--hostname-override: node name "bad_name" is not a valid DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253 characters)`,
    ]);
    expect(problems(() => load([], { hostname: 'host_1' }))[0]).toMatch(
      /^host name \(set --hostname-override\): node name "host_1"/,
    );
    expect(problems(() => load(['--hostname-override', '   ']))).toEqual(['--hostname-override: node name is empty']);
    expect(problems(() => load([], { hostname: 'a'.repeat(254) }))).toHaveLength(1);
    expect(load(['--hostname-override', ''], { hostname: 'h' }).config.nodeName).toBe('h');
  });

  it('cluster CIDR: at most one per family', () => {
    expect(problems(() => load(['--cluster-cidr', '10.0.0.0/8,10.1.0.0/16,fd00::/64']))).toEqual([
      '--cluster-cidr: at most one CIDR per IP family, got 2 IPv4 CIDRs (10.0.0.0/8, 10.1.0.0/16)',
    ]);
    expect(problems(() => load(['--cluster-cidr', 'fd00::/64,fd01::/64']))[0]).toContain('2 IPv6 CIDRs');
    expect(problems(() => load(['--cluster-cidr', '10.0.0.0/8,']))).toEqual(['--cluster-cidr: invalid CIDR ""']);
  });
});

describe('interface names', () => {
  const bad = ['eth"0', "br'0", 'br 0', 'a'.repeat(16), '$(x)', 'br;0', 'br0\n', '.', '..', 'br{0}', 'é'];
  for (const name of bad) {
    it(`rejects bridge ${JSON.stringify(name)}`, () => {
      expect(problems(() => load(['--detect-local-mode', 'BridgeInterface', '--pod-bridge-interface', name]))).toEqual([
        `--pod-bridge-interface: invalid bridge interface ${JSON.stringify(name)} (1 to 15 characters of A-Z a-z 0-9 _ . -)`,
      ]);
    });
    it(`rejects prefix ${JSON.stringify(name)} from the file`, () => {
      const p = problems(() =>
        withFile(
          `detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: ${JSON.stringify(name)}\n`,
        ),
      );
      expect(p).toHaveLength(1);
      expect(p[0]).toMatch(/^detectLocal\.interfaceNamePrefix: invalid interface name prefix/);
    });
  }

  it('accepts 15 characters and the allowed punctuation', () => {
    const name = 'a_b.c-d'.padEnd(15, 'x');
    expect(load(['--detect-local-mode=BridgeInterface', `--pod-bridge-interface=${name}`]).config.detectLocal).toEqual({
      mode: 'BridgeInterface',
      bridgeInterface: name,
    });
  });

  it('requires the name for its mode only', () => {
    expect(problems(() => load(['--detect-local-mode', 'BridgeInterface']))).toEqual([
      'detectLocal.bridgeInterface (--pod-bridge-interface): required when detectLocalMode is BridgeInterface',
    ]);
    expect(problems(() => withFile('detectLocalMode: InterfaceNamePrefix\n'))).toEqual([
      'detectLocal.interfaceNamePrefix (--pod-interface-name-prefix): required when detectLocalMode is InterfaceNamePrefix',
    ]);
    // Not the chosen mode: not used, so not validated.
    expect(load(['--pod-bridge-interface', 'bad name']).config.detectLocal).toEqual({ mode: 'ClusterCIDR' });
  });

  it('maps the other modes', () => {
    expect(load(['--detect-local-mode', 'NodeCIDR']).config.detectLocal).toEqual({ mode: 'NodeCIDR' });
    expect(load(['--detect-local-mode', 'None']).config.detectLocal).toEqual({ mode: 'None' });
    expect(withFile('detectLocalMode: ""\n').config.detectLocal).toEqual({ mode: 'ClusterCIDR' });
  });
});

describe('config file', () => {
  const FULL = `
mode: nftables
hostnameOverride: File-Node
bindAddress: 0.0.0.0
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 0.0.0.0:10249
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
detectLocalMode: InterfaceNamePrefix
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: veth
nodePortAddresses: [192.168.0.0/16]
iptables:
  masqueradeAll: false
  masqueradeBit: 14
  localhostNodePorts: true
  syncPeriod: 30s
  minSyncPeriod: 1s
nftables:
  masqueradeAll: true
  masqueradeBit: 15
  syncPeriod: 1h2m
  minSyncPeriod: 1.5s
ipvs:
  scheduler: rr
  strictARP: false
  excludeCIDRs: null
  syncPeriod: 30s
  minSyncPeriod: 0s
  tcpTimeout: 0s
  tcpFinTimeout: 0s
  udpTimeout: 0s
conntrack:
  maxPerCore: 32768
  min: 131072
  tcpEstablishedTimeout: 24h0m0s
  tcpCloseWaitTimeout: 1h0m0s
  tcpBeLiberal: false
  udpTimeout: 0s
  udpStreamTimeout: 0s
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 5
  burst: 10
  contentType: application/vnd.kubernetes.protobuf
  acceptContentTypes: ""
configSyncPeriod: 15m0s
oomScoreAdj: -999
featureGates:
  SomeGate: true
logging:
  format: text
  flushFrequency: 5s
  verbosity: 2
  options:
    json:
      infoBufferSize: "0"
portRange: ""
winkernel:
  enableDSR: false
  networkName: ""
showHiddenMetricsForVersion: ""
enableProfiling: false
bindAddressHardFail: false
`;

  it('reads a full upstream-style file', () => {
    const r = withFile(FULL);
    expect(r.warnings).toEqual([
      'feature gate SomeGate=true: kproxy has no feature gates; it behaves as kube-proxy with every gate at its default',
    ]);
    expect(r.kubeconfig).toBe('/var/lib/kube-proxy/kubeconfig.conf');
    expect(r.configFile).toBe('/etc/kp.yaml');
    expect(r.config).toEqual({
      mode: 'nftables',
      nodeName: 'file-node',
      clusterCIDRs: [
        { family: 'ipv4', address: '10.244.0.0', prefixLength: 16 },
        { family: 'ipv6', address: 'fd00:10:244::', prefixLength: 56 },
      ],
      detectLocal: { mode: 'InterfaceNamePrefix', interfaceNamePrefix: 'veth' },
      nodePortAddresses: { kind: 'cidrs', cidrs: [{ family: 'ipv4', address: '192.168.0.0', prefixLength: 16 }] },
      masqueradeAll: true,
      masqueradeBit: 15,
      syncPeriodMs: 3_720_000,
      minSyncPeriodMs: 1_500,
      healthzBindAddress: '0.0.0.0:10256',
      metricsBindAddress: '0.0.0.0:10249',
      verbosity: 2,
      iptables: { localhostNodePorts: true, flavor: 'auto' },
      ipvs: {
        scheduler: 'rr',
        excludeCIDRs: [],
        strictARP: false,
        tcpTimeoutSeconds: 0,
        tcpFinTimeoutSeconds: 0,
        udpTimeoutSeconds: 0,
      },
      ...UPSTREAM_DEFAULTS,
      loggingFormat: 'text',
    });
  });

  it('reads JSON too', () => {
    const json = JSON.stringify({
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      mode: 'nft',
      nodePortAddresses: ['all'],
      iptables: { masqueradeAll: true },
    });
    const r = load(['--config=/etc/kp.yaml'], { file: json });
    expect(r.config.nodePortAddresses).toEqual({ kind: 'all' });
    expect(r.config.masqueradeAll).toBe(true);
  });

  it('explicit flags win over the file, the file over defaults', () => {
    const r = withFile(FULL, [
      '--hostname-override',
      'flag-node',
      '--cluster-cidr',
      '10.0.0.0/8',
      '--detect-local-mode',
      'NodeCIDR',
      '--masquerade-all=false',
      '--nodeport-addresses',
      'primary',
      '--metrics-bind-address',
      '',
      '--iptables-sync-period',
      '10s',
      '-v',
      '0',
      '--kubeconfig',
      '/flag/kubeconfig',
    ]);
    expect(r.kubeconfig).toBe('/flag/kubeconfig');
    expect(r.config).toMatchObject({
      nodeName: 'flag-node',
      clusterCIDRs: [{ family: 'ipv4', address: '10.0.0.0', prefixLength: 8 }],
      detectLocal: { mode: 'NodeCIDR' },
      masqueradeAll: false,
      nodePortAddresses: { kind: 'primary' },
      metricsBindAddress: '',
      syncPeriodMs: 10_000,
      minSyncPeriodMs: 1_500, // not overridden: still from the file
      masqueradeBit: 15,
      verbosity: 0,
    });
  });

  it('the bridge name can come from the flag while the mode comes from the file', () => {
    const r = withFile('detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cbr0}\n', [
      '--pod-bridge-interface',
      'br1',
    ]);
    expect(r.config.detectLocal).toEqual({ mode: 'BridgeInterface', bridgeInterface: 'br1' });
  });

  it('falls back from nftables.* to iptables.* and treats zero durations as unset', () => {
    const r = withFile(
      'iptables:\n  syncPeriod: 45s\n  minSyncPeriod: 2s\n  masqueradeBit: 10\nnftables:\n  syncPeriod: 0s\n',
    );
    expect(r.config.syncPeriodMs).toBe(45_000);
    expect(r.config.minSyncPeriodMs).toBe(2_000);
    expect(r.config.masqueradeBit).toBe(10);
  });

  it('empty bind addresses in the file mean the defaults; bare IPs get the default port', () => {
    expect(withFile('healthzBindAddress: ""\nmetricsBindAddress: ""\n').config).toMatchObject({
      healthzBindAddress: '0.0.0.0:10256',
      metricsBindAddress: '127.0.0.1:10249',
    });
    expect(withFile('metricsBindAddress: "::"\n').config.metricsBindAddress).toBe('[::]:10249');
  });

  it('null leaves a field unset', () => {
    expect(withFile('nftables:\n  masqueradeBit: null\nmode: null\nclusterCIDR: ~\n').config).toEqual(load([]).config);
  });

  it('warns about unknown fields with their full path', () => {
    const r = withFile(
      'nftables:\n  masqueradeAl: true\nfoo: 1\nclientConnection:\n  kubeConfig: /x\ndetectLocal:\n  bridge: x\n',
    );
    expect(r.warnings).toEqual([
      'unknown field "nftables.masqueradeAl"',
      'unknown field "foo"',
      'unknown field "clientConnection.kubeConfig"',
      'unknown field "detectLocal.bridge"',
    ]);
    expect(r.config.masqueradeAll).toBe(false);
  });

  it('reports every invalid value with its field path', () => {
    const p = problems(() =>
      withFile(`
mode: userspace
hostnameOverride: "Bad Name"
bindAddress: nope
healthzBindAddress: 1.2.3.4:0
metricsBindAddress: "[1.2.3.4]:80"
clusterCIDR: 10.0.0.0/33
detectLocalMode: Local
nodePortAddresses: [all, 10.0.0.0/8]
iptables:
  masqueradeAll: "yes"
  masqueradeBit: -1
  syncPeriod: 30
  minSyncPeriod: 1 s
nftables:
  masqueradeBit: 40
  localhostNodePorts: true
ipvs:
  excludeCIDRs: [1, "10.0.0.0/8"]
conntrack:
  maxPerCore: 1.5
  min: "3"
  tcpBeLiberal: 0
clientConnection:
  qps: fast
  burst: 2147483648
featureGates:
  A: "true"
oomScoreAdj: -1001
configSyncPeriod: ""
logging:
  verbosity: 11
winkernel: []
detectLocal: "x"
`),
    );
    expect(p).toEqual([
      'iptables.masqueradeAll: expected a boolean (true or false), got string "yes"',
      'iptables.syncPeriod: expected a duration string such as "30s", "1m" or "500ms", got number 30',
      'iptables.minSyncPeriod: invalid duration "1 s" (examples: "30s", "1m", "500ms", "1h2m")',
      'ipvs.excludeCIDRs[0]: expected a string, got number 1',
      'conntrack.maxPerCore: expected an integer, got number 1.5',
      'conntrack.min: expected an integer, got string "3"',
      'conntrack.tcpBeLiberal: expected a boolean (true or false), got number 0',
      'clientConnection.qps: expected a number, got string "fast"',
      'clientConnection.burst: integer out of range -2147483648..2147483647, got 2147483648',
      'featureGates.A: expected a boolean (true or false), got string "true"',
      'configSyncPeriod: invalid duration "" (examples: "30s", "1m", "500ms", "1h2m")',
      'winkernel: expected a mapping, got a list',
      'detectLocal: expected a mapping, got string "x"',
      'mode: invalid proxy mode "userspace" (supported: nftables, alias nft, iptables and ipvs)',
      `hostnameOverride: node name "bad name" is not a valid DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253 characters)`,
      'clusterCIDR: invalid CIDR "10.0.0.0/33"',
      'detectLocalMode: invalid detect-local mode "Local" (valid: ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix, None)',
      'nodePortAddresses: "all" must be the only entry (it cannot be combined with other entries)',
      'nftables.masqueradeBit: must be an integer 0..31, got 40',
      'iptables.masqueradeBit: must be an integer 0..31, got -1',
      'healthzBindAddress: must be IP:port (e.g. 0.0.0.0:10256 or [::]:10256) or a bare IP, got "1.2.3.4:0"',
      'metricsBindAddress: must be IP:port (e.g. 127.0.0.1:10249 or [::]:10249) or a bare IP, got "[1.2.3.4]:80"',
      'logging.verbosity: must be an integer 0..10, got 11',
      'bindAddress: must be an IP address, got "nope"',
      'oomScoreAdj: must be within -1000..1000, got -1001',
    ]);
  });

  it('file mode iptables reads the iptables section first', () => {
    const r = withFile(
      'mode: iptables\niptables:\n  syncPeriod: 45s\n  masqueradeBit: 10\n  localhostNodePorts: false\nnftables:\n  syncPeriod: 20s\n  masqueradeBit: 12\n',
    );
    expect(r.config).toMatchObject({
      mode: 'iptables',
      syncPeriodMs: 45_000,
      masqueradeBit: 10,
      iptables: { localhostNodePorts: false },
    });
  });

  it('nodePortAddresses entries are checked one by one', () => {
    expect(problems(() => withFile('nodePortAddresses: ["10.0.0.0/8", "nope", "primary "]\n'))).toEqual([
      'nodePortAddresses: "primary" must be the only entry (it cannot be combined with other entries)',
    ]);
    expect(problems(() => withFile('nodePortAddresses: ["10.0.0.0/8", "nope", "1.2.3.4"]\n'))).toEqual([
      'nodePortAddresses[1]: invalid CIDR "nope" (expected CIDRs, or exactly one of "primary", "all")',
      'nodePortAddresses[2]: invalid CIDR "1.2.3.4" (expected CIDRs, or exactly one of "primary", "all")',
    ]);
    expect(withFile('nodePortAddresses: []\n').config.nodePortAddresses).toEqual({ kind: 'primary' });
    expect(withFile('nodePortAddresses: [primary]\n').config.nodePortAddresses).toEqual({ kind: 'primary' });
    expect(problems(() => withFile('nodePortAddresses: 10.0.0.0/8\n'))).toEqual([
      'nodePortAddresses: expected a list of strings, got string "10.0.0.0/8"',
    ]);
  });

  it('sync periods from the file are related', () => {
    expect(problems(() => withFile('nftables:\n  syncPeriod: 1s\n  minSyncPeriod: 5s\n'))).toEqual([
      'nftables.syncPeriod: must be greater than or equal to nftables.minSyncPeriod (1s < 5s)',
    ]);
    expect(problems(() => withFile('nftables:\n  syncPeriod: -5s\n'))).toEqual([
      'nftables.syncPeriod: must be greater than 0, got -5s',
    ]);
  });

  it('dual-stack clusterCIDR with two of one family is an error', () => {
    expect(problems(() => withFile('clusterCIDR: "fd00::/64,fd01::/64"\n'))).toEqual([
      'clusterCIDR: at most one CIDR per IP family, got 2 IPv6 CIDRs (fd00::/64, fd01::/64)',
    ]);
  });

  it('checks apiVersion and kind', () => {
    const f = (text: string): string[] => problems(() => load(['--config', '/etc/kp.yaml'], { file: text }));
    expect(f('apiVersion: kubeproxy.config.k8s.io/v1beta1\nkind: KubeProxyConfiguration\nmode: bogus\n')).toEqual([
      'apiVersion: must be "kubeproxy.config.k8s.io/v1alpha1" or "kubeproxy.config.k8s.io/v1alpha2", got string "kubeproxy.config.k8s.io/v1beta1"',
    ]);
    expect(f('apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n')).toEqual([
      'kind: must be "KubeProxyConfiguration", got string "KubeletConfiguration"',
    ]);
    expect(f('mode: nftables\n')).toEqual([
      'apiVersion: required, must be "kubeproxy.config.k8s.io/v1alpha1" or "kubeproxy.config.k8s.io/v1alpha2"',
      'kind: required, must be "KubeProxyConfiguration"',
    ]);
  });

  it('reports unreadable, empty and malformed files', () => {
    expect(problems(() => load(['--config', '/missing.yaml']))).toEqual([
      '--config: cannot read "/missing.yaml": ENOENT: no such file /missing.yaml',
    ]);
    expect(problems(() => load(['--config', '/etc/kp.yaml'], { file: '' }))).toEqual([
      'file is empty (expected a KubeProxyConfiguration)',
    ]);
    expect(problems(() => load(['--config', '/etc/kp.yaml'], { file: '- a\n- b\n' }))).toEqual([
      'expected a KubeProxyConfiguration mapping, got a list',
    ]);
    const p = problems(() => load(['--config', '/etc/kp.yaml'], { file: `${HEADER}mode: [\n` }));
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/^cannot parse: /);
    // A duplicate field is a warning in v1alpha1 (config-versions.test.ts: an error in v1alpha2).
    expect(withFile('mode: iptables\nmode: ipvs\n').warnings).toEqual(['mode: duplicate field']);
    expect(problems(() => load(['--config='], {}))).toEqual(['--config: must name a file']);
  });

  it('the error message names the file and lists every problem', () => {
    try {
      withFile('mode: ipvs\nipvs: { scheduler: fancy }\n', ['--v=x']);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      const err = e as ConfigError;
      expect(err.name).toBe('ConfigError');
      expect(err.message).toBe(
        'invalid configuration (config file "/etc/kp.yaml"):\n' +
          '  - ipvs.scheduler: unknown IPVS scheduler "fancy" (one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos)\n' +
          '  - --v: must be an integer 0..10, got "x"',
      );
    }
  });

  it('does not let __proto__ keys change anything', () => {
    const r = withFile('__proto__:\n  mode: iptables\n');
    expect(r.config.mode).toBe('nftables');
  });
});

describe('Go durations', () => {
  const cases: [string, number | undefined][] = [
    ['0', 0],
    ['30s', 30_000],
    ['1m', 60_000],
    ['500ms', 500],
    ['1h2m', 3_720_000],
    ['1h0m0s', 3_600_000],
    ['1.5s', 1_500],
    ['.5s', 500],
    ['2.s', 2_000],
    ['100us', 0.1],
    ['100\u00b5s', 0.1],
    ['1000000ns', 1],
    ['-2s', -2_000],
    ['+3s', 3_000],
    ['', undefined],
    ['30', undefined],
    ['1 s', undefined],
    ['s', undefined],
    ['.s', undefined],
    ['1d', undefined],
    ['1h-2m', undefined],
    ['1.2.3s', undefined],
    [' 1s', undefined],
    ['-', undefined],
  ];
  for (const [text, ms] of cases) {
    it(`${JSON.stringify(text)} → ${String(ms)}`, () => {
      const got = parseGoDuration(text);
      if (ms === undefined) expect(got).toBeUndefined();
      else expect(got).toBeCloseTo(ms, 9);
    });
  }
});
