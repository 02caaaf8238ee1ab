import { describe, it, expect } from 'vitest';
import {
  buildSnapshot,
  isDns1035Label,
  isDns1123Label,
  isDns1123Subdomain,
  isIanaSvcName,
  isLabelValue,
  quote,
} from '../../src/source/normalize.ts';
import type { Problem } from '../../src/util/problems.ts';

type Obj = Record<string, unknown>;

const NODE = 'node-a';

function svc(spec: Obj = {}, meta: Obj = {}, extra: Obj = {}): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'shop', ...meta },
    spec: { clusterIP: '10.96.0.10', ports: [{ port: 80 }], ...spec },
    ...extra,
  };
}

function slice(body: Obj = {}, meta: Obj = {}): Obj {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-abc12', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' }, ...meta },
    addressType: 'IPv4',
    ports: [{ name: '', port: 8080 }],
    endpoints: [{ addresses: ['10.0.1.5'] }],
    ...body,
  };
}

function node(name: string, body: Obj = {}, meta: Obj = {}): Obj {
  return { apiVersion: 'v1', kind: 'Node', metadata: { name, ...meta }, ...body };
}

function build(...objects: unknown[]) {
  return buildSnapshot(objects, NODE);
}

/** Every problem must be one safe line. */
function expectSafe(problems: readonly Problem[]): void {
  for (const p of problems) {
    for (const text of [p.object, p.path, p.message]) {
      expect(text).toMatch(/^[\x20-\x7e]*$/);
    }
  }
}

function oneService(...objects: unknown[]) {
  const { snapshot, problems } = build(...objects);
  expect(problems).toEqual([]);
  expect(snapshot.services).toHaveLength(1);
  return snapshot.services[0]!;
}

/** The object was skipped with exactly one problem at `path`; returns the problem. */
function skipped(object: unknown, path: string): Problem {
  const { snapshot, problems } = build(object);
  expect(snapshot.services).toEqual([]);
  expect(snapshot.endpointSlices).toEqual([]);
  expect(snapshot.node).toBeUndefined();
  expect(snapshot.serviceCIDRs).toEqual([]);
  expect(problems).toHaveLength(1);
  expect(problems[0]!.path).toBe(path);
  expectSafe(problems);
  return problems[0]!;
}

describe('validators', () => {
  it('DNS-1123 labels and subdomains', () => {
    expect(isDns1123Label('kube-system')).toBe(true);
    expect(isDns1123Label('0abc')).toBe(true);
    expect(isDns1123Label('a'.repeat(63))).toBe(true);
    expect(isDns1123Label('a'.repeat(64))).toBe(false);
    for (const bad of ['', '-a', 'a-', 'A', 'a.b', 'a_b', 'a\n', 'é']) expect(isDns1123Label(bad)).toBe(false);
    expect(isDns1123Subdomain('web-abc12.x.y')).toBe(true);
    expect(isDns1123Subdomain(`${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`)).toBe(true);
    expect(isDns1123Subdomain('a'.repeat(254))).toBe(false);
    for (const bad of ['', '.a', 'a.', 'a..b', 'A.b', 'a.-b']) expect(isDns1123Subdomain(bad)).toBe(false);
  });

  it('DNS-1035 labels start with a letter', () => {
    expect(isDns1035Label('web')).toBe(true);
    expect(isDns1035Label('1web')).toBe(false);
    expect(isDns1035Label('web-')).toBe(false);
  });

  it('IANA service names', () => {
    for (const good of ['http', 'h2c', 'a-b', 'a'.repeat(15)]) expect(isIanaSvcName(good)).toBe(true);
    for (const bad of ['', '80', 'a'.repeat(16), '-a', 'a-', 'a--b', 'HTTP', 'a_b', 'a.b'])
      expect(isIanaSvcName(bad)).toBe(false);
  });

  it('label values', () => {
    for (const good of ['', 'us-east-1a', 'Zone_1.b']) expect(isLabelValue(good)).toBe(true);
    for (const bad of ['-a', 'a-', 'a b', 'a'.repeat(64), 'a/b']) expect(isLabelValue(bad)).toBe(false);
  });

  it('quote is one printable-ASCII line, truncated', () => {
    expect(quote('a"b\nc')).toBe('"a\\"b\\nc"');
    expect(quote('é\u2028')).toBe('"\\u00e9\\u2028"');
    expect(quote(undefined)).toBe('undefined');
    expect(quote('x'.repeat(500))).toHaveLength(83);
    const cyclic: Obj = {};
    cyclic['self'] = cyclic;
    expect(quote(cyclic)).toBe('<unprintable object>');
  });
});

describe('Service', () => {
  it('reads a minimal ClusterIP Service with defaults', () => {
    expect(oneService(svc())).toEqual({
      namespace: 'shop',
      name: 'web',
      type: 'ClusterIP',
      clusterIPs: [{ family: 'ipv4', text: '10.96.0.10' }],
      ports: [{ name: '', protocol: 'TCP', port: 80 }],
      externalIPs: [],
      loadBalancerIPs: [],
      loadBalancerSourceRanges: [],
      externalTrafficPolicy: 'Cluster',
      internalTrafficPolicy: 'Cluster',
    });
  });

  it('reads a full LoadBalancer Service', () => {
    const s = oneService(
      svc(
        {
          type: 'LoadBalancer',
          ports: [
            { name: 'http', port: 80, nodePort: 30080 },
            { name: 'dns', protocol: 'UDP', port: 53, nodePort: 30053 },
            { name: 'sig', protocol: 'SCTP', port: 9000 },
          ],
          externalIPs: ['192.0.2.10', '2001:db8::10'],
          loadBalancerSourceRanges: [' 203.0.113.0/25', '198.51.100.7/24 '],
          externalTrafficPolicy: 'Local',
          internalTrafficPolicy: 'Local',
          healthCheckNodePort: 32000,
          sessionAffinity: 'ClientIP',
          sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } },
        },
        {},
        {
          status: {
            loadBalancer: {
              ingress: [
                { ip: '198.51.100.1' },
                { ip: '198.51.100.2', ipMode: 'VIP' },
                { ip: '198.51.100.3', ipMode: 'Proxy' },
                { hostname: 'lb.example.com' },
              ],
            },
          },
        },
      ),
    );
    expect(s.type).toBe('LoadBalancer');
    expect(s.ports).toEqual([
      { name: 'http', protocol: 'TCP', port: 80, nodePort: 30080 },
      { name: 'dns', protocol: 'UDP', port: 53, nodePort: 30053 },
      { name: 'sig', protocol: 'SCTP', port: 9000 },
    ]);
    expect(s.externalIPs.map((i) => i.text)).toEqual(['192.0.2.10', '2001:db8::10']);
    expect(s.loadBalancerIPs.map((i) => i.text)).toEqual(['198.51.100.1', '198.51.100.2']);
    expect(s.loadBalancerSourceRanges).toEqual([
      { family: 'ipv4', address: '203.0.113.0', prefixLength: 25 },
      { family: 'ipv4', address: '198.51.100.0', prefixLength: 24 },
    ]);
    expect(s.externalTrafficPolicy).toBe('Local');
    expect(s.internalTrafficPolicy).toBe('Local');
    expect(s.healthCheckNodePort).toBe(32000);
    expect(s.sessionAffinityTimeoutSeconds).toBe(600);
  });

  it('reads dual-stack ClusterIPs, preferring clusterIPs over clusterIP, in canonical form', () => {
    const s = oneService(svc({ clusterIP: '10.96.0.99', clusterIPs: ['10.96.0.10', '2001:DB8:0::0:A'] }));
    expect(s.clusterIPs).toEqual([
      { family: 'ipv4', text: '10.96.0.10' },
      { family: 'ipv6', text: '2001:db8::a' },
    ]);
    expect(oneService(svc({ clusterIP: 'fd00::1', clusterIPs: [] })).clusterIPs).toEqual([
      { family: 'ipv6', text: 'fd00::1' },
    ]);
  });

  it('defaults ClientIP affinity to 10800 s', () => {
    expect(oneService(svc({ sessionAffinity: 'ClientIP' })).sessionAffinityTimeoutSeconds).toBe(10800);
    expect(oneService(svc({ sessionAffinity: 'None' })).sessionAffinityTimeoutSeconds).toBeUndefined();
  });

  it('keeps nodePorts only for NodePort/LoadBalancer, healthCheckNodePort only for LoadBalancer + Local', () => {
    const cip = oneService(
      svc({ ports: [{ port: 80, nodePort: 30080 }], healthCheckNodePort: 32000, externalTrafficPolicy: 'Local' }),
    );
    expect(cip.ports[0]).toEqual({ name: '', protocol: 'TCP', port: 80 });
    expect(cip.healthCheckNodePort).toBeUndefined();
    const np = oneService(
      svc({
        type: 'NodePort',
        ports: [{ port: 80, nodePort: 30080 }],
        healthCheckNodePort: 32000,
        externalTrafficPolicy: 'Local',
      }),
    );
    expect(np.ports[0]?.nodePort).toBe(30080);
    expect(np.healthCheckNodePort).toBeUndefined();
    const lbCluster = oneService(svc({ type: 'LoadBalancer', healthCheckNodePort: 32000 }));
    expect(lbCluster.healthCheckNodePort).toBeUndefined();
    // nodePort 0 means "not allocated".
    expect(
      oneService(svc({ type: 'NodePort', ports: [{ port: 80, nodePort: 0 }] })).ports[0]?.nodePort,
    ).toBeUndefined();
  });

  describe('the IPVS scheduler annotation kproxy.io/ipvs-scheduler', () => {
    const annotated = (value: unknown) => svc({}, { annotations: { 'kproxy.io/ipvs-scheduler': value } });

    it('reads a known scheduler name onto the Service and each of its ports', () => {
      expect(oneService(annotated('wlc')).ipvsScheduler).toBe('wlc');
      expect(oneService(annotated('mh')).ipvsScheduler).toBe('mh');
      expect(oneService(svc()).ipvsScheduler).toBeUndefined();
      expect(oneService(annotated('')).ipvsScheduler).toBeUndefined();
      expect(oneService(svc({}, { annotations: 'not-a-map' })).ipvsScheduler).toBeUndefined();
    });

    it('an unknown or hostile value keeps the Service (default scheduler) with one problem naming the field', () => {
      for (const bad of ['WRR', 'fancy', 'rr; ipvsadm -C', 'rr\n-D -t 10.96.0.1:80', 7, ['rr']]) {
        const { snapshot, problems } = build(annotated(bad));
        expect(snapshot.services).toHaveLength(1);
        expect(snapshot.services[0]!.ipvsScheduler).toBeUndefined();
        expect(problems).toHaveLength(1);
        expect(problems[0]).toMatchObject({
          kind: 'Service',
          object: 'shop/web',
          path: 'metadata.annotations["kproxy.io/ipvs-scheduler"]',
        });
        expect(problems[0]!.message).toMatch(
          /is not an IPVS scheduler \(one of rr, wrr, .*\); the Service uses the default scheduler$/,
        );
        expectSafe(problems);
      }
    });
  });

  it('defaults a missing namespace to "default"', () => {
    expect(oneService(svc({}, { namespace: undefined })).namespace).toBe('default');
  });

  it("skips headless, ExternalName and other proxies' Services silently", () => {
    const { snapshot, problems } = build(
      svc({ clusterIP: 'None' }, { name: 'a' }),
      svc({ clusterIPs: ['None'] }, { name: 'b' }),
      svc({ type: 'ExternalName', externalName: 'example.com', clusterIP: undefined, ports: 'garbage' }, { name: 'c' }),
      svc({}, { name: 'd', labels: { 'service.kubernetes.io/service-proxy-name': 'other' } }),
      svc({}, { name: 'e', labels: { 'service.kubernetes.io/service-proxy-name': '' } }),
    );
    expect(snapshot.services).toEqual([]);
    expect(problems).toEqual([]);
  });

  describe('skips the whole Service with a problem', () => {
    const cases: Array<[string, Obj, string]> = [
      ['missing ClusterIP', svc({ clusterIP: undefined }), 'spec.clusterIP'],
      ['bad ClusterIP', svc({ clusterIP: '10.96.0.300' }), 'spec.clusterIP'],
      ['bad second ClusterIP', svc({ clusterIPs: ['10.96.0.1', 'nope'] }), 'spec.clusterIPs[1]'],
      ['two ClusterIPs of one family', svc({ clusterIPs: ['10.96.0.1', '10.96.0.2'] }), 'spec.clusterIPs'],
      ['three ClusterIPs', svc({ clusterIPs: ['10.96.0.1', 'fd00::1', '10.96.0.2'] }), 'spec.clusterIPs'],
      ['port 0', svc({ ports: [{ port: 0 }] }), 'spec.ports[0].port'],
      ['port 65536', svc({ ports: [{ port: 65536 }] }), 'spec.ports[0].port'],
      ['port as string', svc({ ports: [{ port: '80' }] }), 'spec.ports[0].port'],
      ['fractional port', svc({ ports: [{ port: 80.5 }] }), 'spec.ports[0].port'],
      ['missing port', svc({ ports: [{ name: 'http' }] }), 'spec.ports[0].port'],
      ['bad protocol', svc({ ports: [{ port: 80, protocol: 'ICMP' }] }), 'spec.ports[0].protocol'],
      ['lower-case protocol', svc({ ports: [{ port: 80, protocol: 'tcp' }] }), 'spec.ports[0].protocol'],
      ['bad nodePort', svc({ type: 'NodePort', ports: [{ port: 80, nodePort: 70000 }] }), 'spec.ports[0].nodePort'],
      ['unnamed port among two', svc({ ports: [{ name: 'a', port: 80 }, { port: 81 }] }), 'spec.ports[1].name'],
      ['bad port name', svc({ ports: [{ name: 'HTTP', port: 80 }] }), 'spec.ports[0].name'],
      ['16-char port name', svc({ ports: [{ name: 'a'.repeat(16), port: 80 }] }), 'spec.ports[0].name'],
      [
        'duplicate port name',
        svc({
          ports: [
            { name: 'a', port: 80 },
            { name: 'a', port: 81 },
          ],
        }),
        'spec.ports[1].name',
      ],
      [
        'duplicate port number and protocol',
        svc({
          ports: [
            { name: 'a', port: 80 },
            { name: 'b', port: 80 },
          ],
        }),
        'spec.ports[1].port',
      ],
      ['ports not a list', svc({ ports: { port: 80 } }), 'spec.ports'],
      ['bad type', svc({ type: 'Magic' }), 'spec.type'],
      ['legacy externalTrafficPolicy', svc({ externalTrafficPolicy: 'Global' }), 'spec.externalTrafficPolicy'],
      ['bad internalTrafficPolicy', svc({ internalTrafficPolicy: 'local' }), 'spec.internalTrafficPolicy'],
      ['bad sessionAffinity', svc({ sessionAffinity: 'Cookie' }), 'spec.sessionAffinity'],
      [
        'timeout 0',
        svc({ sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } } }),
        'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
      ],
      [
        'timeout 86401',
        svc({ sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 86401 } } }),
        'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
      ],
      [
        'bad healthCheckNodePort',
        svc({ type: 'LoadBalancer', externalTrafficPolicy: 'Local', healthCheckNodePort: -1 }),
        'spec.healthCheckNodePort',
      ],
      [
        'bad source range',
        svc({ loadBalancerSourceRanges: ['203.0.113.0/24', '203.0.113.0/33'] }),
        'spec.loadBalancerSourceRanges[1]',
      ],
      [
        'bare address as source range',
        svc({ loadBalancerSourceRanges: ['203.0.113.7'] }),
        'spec.loadBalancerSourceRanges[0]',
      ],
      ['spec missing', { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' } }, 'spec'],
      ['labels not an object', svc({}, { labels: ['x'] }), 'metadata.labels'],
      ['metadata missing', { apiVersion: 'v1', kind: 'Service', spec: {} }, 'metadata'],
      ['name missing', svc({}, { name: undefined }), 'metadata.name'],
      ['name with a leading digit', svc({}, { name: '1web' }), 'metadata.name'],
      ['upper-case name', svc({}, { name: 'Web' }), 'metadata.name'],
      ['64-char name', svc({}, { name: 'a'.repeat(64) }), 'metadata.name'],
      ['namespace with a dot', svc({}, { namespace: 'a.b' }), 'metadata.namespace'],
      ['namespace not a string', svc({}, { namespace: 7 }), 'metadata.namespace'],
    ];
    for (const [what, object, path] of cases) {
      it(what, () => {
        const p = skipped(object, path);
        expect(p.kind).toBe('Service');
      });
    }
  });

  it('explains a bad source range and names the Service, with no notes about dropped elements', () => {
    const p = skipped(
      svc({ externalIPs: ['bogus'], loadBalancerSourceRanges: ['not a cidr'] }),
      'spec.loadBalancerSourceRanges[0]',
    );
    expect(p.object).toBe('shop/web');
    expect(p.message).toContain('"not a cidr"');
    expect(p.message).toContain('skipped');
  });

  it('rejects names that would break rule text', () => {
    const hostile = [
      'web"; flush ruleset; "',
      'web;drop',
      'web\nadd rule',
      '$(reboot)',
      '`id`',
      'wéb',
      'web\u202e',
      'web\u0000',
      "web'",
      'web svc',
      'web{}',
      '../etc',
    ];
    for (const name of hostile) {
      for (const [object, path] of [
        [svc({}, { name }), 'metadata.name'],
        [svc({}, { namespace: name }), 'metadata.namespace'],
        [slice({}, { name }), 'metadata.name'],
        [svc({ ports: [{ name, port: 80 }] }), 'spec.ports[0].name'],
        [
          slice({}, { labels: { 'kubernetes.io/service-name': name } }),
          'metadata.labels["kubernetes.io/service-name"]',
        ],
      ] as const) {
        const p = skipped(object, path);
        expect(p.message).not.toContain('\n');
      }
    }
  });

  it('problem messages quote the value safely and truncate it', () => {
    const p = skipped(svc({}, { name: `x"\n${'y'.repeat(300)}` }), 'metadata.name');
    expect(p.message).toContain('"x\\"\\nyyy');
    expect(p.message.length).toBeLessThan(200);
    expect(p.object).toMatch(/^shop\/"x\\"\\ny+\.\.\.$/);
  });

  it('drops one bad externalIP or LB ingress IP and keeps the rest', () => {
    const { snapshot, problems } = build(
      svc(
        {
          type: 'LoadBalancer',
          externalIPs: [
            '192.0.2.1',
            'bogus',
            7,
            '127.0.0.1',
            '0.0.0.0',
            '169.254.169.254',
            '::ffff:10.0.0.1',
            '192.0.2.2',
          ],
        },
        {},
        {
          status: { loadBalancer: { ingress: [{ ip: '198.51.100.1' }, { ip: '198.51.100.999' }, 'x', { ip: '::1' }] } },
        },
      ),
    );
    expect(snapshot.services[0]?.externalIPs.map((i) => i.text)).toEqual(['192.0.2.1', '192.0.2.2']);
    expect(snapshot.services[0]?.loadBalancerIPs.map((i) => i.text)).toEqual(['198.51.100.1']);
    expect(problems.map((p) => p.path)).toEqual([
      'spec.externalIPs[1]',
      'spec.externalIPs[2]',
      'spec.externalIPs[3]',
      'spec.externalIPs[4]',
      'spec.externalIPs[5]',
      'spec.externalIPs[6]',
      'status.loadBalancer.ingress[1].ip',
      'status.loadBalancer.ingress[2]',
      'status.loadBalancer.ingress[3].ip',
    ]);
    expectSafe(problems);
  });

  describe('rejects oversized lists naming the limit', () => {
    const big = <T>(n: number, f: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => f(i));
    const cases: Array<[string, Obj, string, number]> = [
      ['ports', svc({ ports: big(10_000, (i) => ({ name: `p${i}`, port: (i % 60000) + 1 })) }), 'spec.ports', 100],
      ['externalIPs', svc({ externalIPs: big(10_000, () => '192.0.2.1') }), 'spec.externalIPs', 100],
      [
        'source ranges',
        svc({ loadBalancerSourceRanges: big(10_000, () => '10.0.0.0/8') }),
        'spec.loadBalancerSourceRanges',
        1000,
      ],
      [
        'LB ingress',
        svc({}, {}, { status: { loadBalancer: { ingress: big(10_000, () => ({ ip: '198.51.100.1' })) } } }),
        'status.loadBalancer.ingress',
        100,
      ],
    ];
    for (const [what, object, path, limit] of cases) {
      it(what, () => {
        const p = skipped(object, path);
        expect(p.message).toContain('10000');
        expect(p.message).toContain(`limit of ${limit}`);
      });
    }
    it('accepts exactly the limit', () => {
      expect(
        oneService(svc({ loadBalancerSourceRanges: big(1000, () => '10.0.0.0/8') })).loadBalancerSourceRanges,
      ).toHaveLength(1000);
    });
  });
});

describe('EndpointSlice', () => {
  it('reads an IPv4 slice with defaults and all optional fields', () => {
    const { snapshot, problems } = build(
      slice(
        {
          ports: [
            { name: 'http', port: 8080, protocol: 'TCP' },
            { name: 'dns', port: 53, protocol: 'UDP' },
          ],
          endpoints: [
            {
              addresses: ['10.0.1.5', '10.0.1.6'],
              nodeName: 'node-a',
              zone: 'zone-1',
              hints: { forZones: [{ name: 'zone-1' }], forNodes: [{ name: 'node-a' }] },
            },
            { addresses: ['10.0.1.7'], conditions: { ready: false, serving: true, terminating: true } },
          ],
        },
        { annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': '2024-05-01T10:20:30Z' } },
      ),
    );
    expect(problems).toEqual([]);
    expect(snapshot.endpointSlices).toEqual([
      {
        namespace: 'shop',
        name: 'web-abc12',
        serviceName: 'web',
        addressType: 'IPv4',
        ports: [
          { name: 'http', protocol: 'TCP', port: 8080 },
          { name: 'dns', protocol: 'UDP', port: 53 },
        ],
        endpoints: [
          {
            address: { family: 'ipv4', text: '10.0.1.5' },
            conditions: { ready: true, serving: true, terminating: false },
            nodeName: 'node-a',
            zone: 'zone-1',
            hints: { forZones: ['zone-1'], forNodes: ['node-a'] },
          },
          {
            address: { family: 'ipv4', text: '10.0.1.7' },
            conditions: { ready: false, serving: true, terminating: true },
          },
        ],
        triggerTime: new Date('2024-05-01T10:20:30Z'),
      },
    ]);
  });

  it('reads an IPv6 slice', () => {
    const { snapshot, problems } = build(slice({ addressType: 'IPv6', endpoints: [{ addresses: ['FD00:0::5'] }] }));
    expect(problems).toEqual([]);
    expect(snapshot.endpointSlices[0]?.endpoints[0]?.address).toEqual({ family: 'ipv6', text: 'fd00::5' });
  });

  it('defaults conditions as the API documents (nil ready/serving → true, nil terminating → false)', () => {
    const { snapshot } = build(
      slice({
        endpoints: [
          { addresses: ['10.0.1.1'], conditions: {} },
          { addresses: ['10.0.1.2'], conditions: { ready: false } },
          { addresses: ['10.0.1.3'], conditions: { serving: false, terminating: true } },
        ],
      }),
    );
    expect(snapshot.endpointSlices[0]?.endpoints.map((e) => e.conditions)).toEqual([
      { ready: true, serving: true, terminating: false },
      { ready: false, serving: true, terminating: false },
      { ready: true, serving: false, terminating: true },
    ]);
  });

  it('ignores FQDN slices silently', () => {
    expect(build(slice({ addressType: 'FQDN', endpoints: [{ addresses: ['example.com'] }] }))).toEqual({
      snapshot: { services: [], endpointSlices: [], serviceCIDRs: [] },
      problems: [],
    });
  });

  describe('skips the whole slice with a problem', () => {
    const many = (n: number) => Array.from({ length: n }, () => ({ addresses: ['10.0.0.1'] }));
    const cases: Array<[string, Obj, string]> = [
      ['bad addressType', slice({ addressType: 'IPv5' }), 'addressType'],
      ['missing addressType', slice({ addressType: undefined }), 'addressType'],
      ['missing service-name label', slice({}, { labels: {} }), 'metadata.labels["kubernetes.io/service-name"]'],
      ['no labels', slice({}, { labels: undefined }), 'metadata.labels["kubernetes.io/service-name"]'],
      ['bad name', slice({}, { name: 'Web_1' }), 'metadata.name'],
      ['10,000 endpoints', slice({ endpoints: many(10_000) }), 'endpoints'],
      [
        '101 ports',
        slice({ ports: Array.from({ length: 101 }, (_, i) => ({ name: `p${i}`, port: 1000 + i })) }),
        'ports',
      ],
      ['endpoints not a list', slice({ endpoints: 'x' }), 'endpoints'],
    ];
    for (const [what, object, path] of cases) {
      it(what, () => {
        expect(skipped(object, path).kind).toBe('EndpointSlice');
      });
    }
    it('names the limits', () => {
      expect(skipped(slice({ endpoints: many(10_000) }), 'endpoints').message).toContain('limit of 1000');
      expect(build(slice({ endpoints: many(1000) })).problems).toEqual([]);
    });
  });

  it('drops bad endpoints and ports, keeping the rest', () => {
    const { snapshot, problems } = build(
      slice({
        ports: [
          { name: 'a', port: 80 },
          { name: 'nonum' },
          { name: 'b', port: 0 },
          { name: 'BAD', port: 81 },
          { name: 'a', port: 82 },
          { name: 'c', port: 83, protocol: 'ICMP' },
          { name: 'd', port: 84, protocol: 'SCTP' },
        ],
        endpoints: [
          { addresses: ['10.0.0.1'] },
          { addresses: ['fd00::1'] },
          { addresses: ['10.0.0.999'] },
          { addresses: [] },
          {},
          { addresses: ['127.0.0.1'] },
          { addresses: ['10.0.0.2'], conditions: { ready: 'yes' } },
          { addresses: ['10.0.0.3'], nodeName: 'Node A' },
          { addresses: ['10.0.0.4'], zone: 'zone 1' },
          'not-an-object',
          { addresses: ['10.0.0.5', 'garbage-ignored'] },
        ],
      }),
    );
    const s = snapshot.endpointSlices[0]!;
    expect(s.ports).toEqual([
      { name: 'a', protocol: 'TCP', port: 80 },
      { name: 'd', protocol: 'SCTP', port: 84 },
    ]);
    expect(s.endpoints.map((e) => e.address.text)).toEqual(['10.0.0.1', '10.0.0.5']);
    expect(problems.map((p) => p.path)).toEqual([
      'ports[2].port',
      'ports[3].name',
      'ports[4].name',
      'ports[5].protocol',
      'endpoints[1].addresses[0]',
      'endpoints[2].addresses[0]',
      'endpoints[3].addresses',
      'endpoints[4].addresses',
      'endpoints[5].addresses[0]',
      'endpoints[6].conditions.ready',
      'endpoints[7].nodeName',
      'endpoints[8].zone',
      'endpoints[9]',
    ]);
    expect(problems[4]?.message).toContain('IPv4');
    expect(problems.every((p) => p.kind === 'EndpointSlice' && p.object === 'shop/web-abc12')).toBe(true);
    expectSafe(problems);
  });

  it('drops bad hints but keeps the endpoint', () => {
    const { snapshot, problems } = build(
      slice({
        endpoints: [
          { addresses: ['10.0.0.1'], hints: { forZones: [{ name: 'ok' }, { name: 'bad zone' }] } },
          { addresses: ['10.0.0.2'], hints: { forNodes: Array.from({ length: 9 }, () => ({ name: 'n' })) } },
          { addresses: ['10.0.0.3'], hints: { forZones: [] } },
        ],
      }),
    );
    expect(snapshot.endpointSlices[0]?.endpoints.map((e) => e.hints)).toEqual([undefined, undefined, undefined]);
    expect(problems.map((p) => p.path)).toEqual(['endpoints[0].hints.forZones[1].name', 'endpoints[1].hints.forNodes']);
  });

  it('ignores a malformed trigger time', () => {
    for (const t of ['yesterday', '2024-05-01 10:20:30', 12345, '2024-13-45T99:99:99Z']) {
      const { snapshot, problems } = build(
        slice({}, { annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': t } }),
      );
      expect(problems).toEqual([]);
      expect(snapshot.endpointSlices[0]?.triggerTime).toBeUndefined();
    }
    const ok = build(
      slice(
        {},
        { annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': '2024-05-01T10:20:30.123+02:00' } },
      ),
    );
    expect(ok.snapshot.endpointSlices[0]?.triggerTime?.toISOString()).toBe('2024-05-01T08:20:30.123Z');
  });
});

describe('Node', () => {
  it('reads only this node, InternalIPs first', () => {
    const { snapshot, problems } = build(
      node('other', { status: { addresses: 'garbage' } }),
      node('other-2', { spec: { podCIDRs: ['nope'] } }, { labels: 7 }),
      node(
        NODE,
        {
          spec: { podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'] },
          status: {
            addresses: [
              { type: 'ExternalIP', address: '203.0.113.5' },
              { type: 'Hostname', address: 'node-a' },
              { type: 'InternalIP', address: '192.168.1.5' },
              { type: 'InternalIP', address: 'fd00::5' },
              { type: 'InternalIP', address: 'bogus' },
            ],
          },
        },
        { labels: { 'topology.kubernetes.io/zone': 'zone-1', weird: 7 } },
      ),
    );
    expect(snapshot.node).toEqual({
      name: NODE,
      labels: { 'topology.kubernetes.io/zone': 'zone-1' },
      addresses: [
        { family: 'ipv4', text: '192.168.1.5' },
        { family: 'ipv6', text: 'fd00::5' },
        { family: 'ipv4', text: '203.0.113.5' },
      ],
      podCIDRs: [
        { family: 'ipv4', address: '10.244.1.0', prefixLength: 24 },
        { family: 'ipv6', address: 'fd00:10:244:1::', prefixLength: 64 },
      ],
      beingRemoved: false,
    });
    expect(problems.map((p) => [p.kind, p.object, p.path])).toEqual([['Node', NODE, 'status.addresses[4].address']]);
  });

  it('falls back to spec.podCIDR and drops a bad pod CIDR', () => {
    expect(build(node(NODE, { spec: { podCIDR: '10.244.2.0/24' } })).snapshot.node?.podCIDRs).toEqual([
      { family: 'ipv4', address: '10.244.2.0', prefixLength: 24 },
    ]);
    const bad = build(node(NODE, { spec: { podCIDRs: ['10.244.2.0/33'] } }));
    expect(bad.snapshot.node?.podCIDRs).toEqual([]);
    expect(bad.problems.map((p) => p.path)).toEqual(['spec.podCIDRs[0]']);
  });

  it('is absent until seen', () => {
    expect(build(node('other')).snapshot.node).toBeUndefined();
  });

  it('does not let a __proto__ label reach the prototype', () => {
    const raw: unknown = JSON.parse(
      `{"apiVersion":"v1","kind":"Node","metadata":{"name":"${NODE}","labels":{"__proto__":"x","a":"b"}}}`,
    );
    const { snapshot } = build(raw);
    expect(Object.getPrototypeOf(snapshot.node?.labels)).toBe(Object.prototype);
    expect(Object.keys(snapshot.node?.labels ?? {})).toEqual(['__proto__', 'a']);
  });

  it('ignores fields inherited through the prototype', () => {
    const meta = Object.create({ name: NODE }) as Obj;
    expect(skipped({ apiVersion: 'v1', kind: 'Node', metadata: meta }, 'metadata.name').kind).toBe('Node');
  });
});

describe('ServiceCIDR', () => {
  it('reads v1 and v1beta1, dropping bad CIDRs', () => {
    const { snapshot, problems } = build(
      {
        apiVersion: 'networking.k8s.io/v1beta1',
        kind: 'ServiceCIDR',
        metadata: { name: 'kubernetes' },
        spec: { cidrs: ['10.96.0.0/12', 'fd00:96::/112'] },
      },
      {
        apiVersion: 'networking.k8s.io/v1',
        kind: 'ServiceCIDR',
        metadata: { name: 'extra' },
        spec: { cidrs: ['10.100.0.1/16', 'x'] },
      },
    );
    expect(snapshot.serviceCIDRs).toEqual([
      { name: 'extra', cidrs: [{ family: 'ipv4', address: '10.100.0.0', prefixLength: 16 }] },
      {
        name: 'kubernetes',
        cidrs: [
          { family: 'ipv4', address: '10.96.0.0', prefixLength: 12 },
          { family: 'ipv6', address: 'fd00:96::', prefixLength: 112 },
        ],
      },
    ]);
    expect(problems.map((p) => [p.kind, p.object, p.path])).toEqual([['ServiceCIDR', 'extra', 'spec.cidrs[1]']]);
  });
});

describe('objects in general', () => {
  it('reports non-objects and objects without kind or apiVersion', () => {
    const { problems } = build(
      null,
      'str',
      [1],
      { kind: 'Service' },
      { apiVersion: 'v1' },
      { apiVersion: 'v1', kind: 5 },
    );
    expect(problems.map((p) => [p.object, p.path])).toEqual([
      ['objects[0]', ''],
      ['objects[1]', ''],
      ['objects[2]', ''],
      ['objects[3]', 'apiVersion'],
      ['objects[4]', 'kind'],
      ['objects[5]', 'kind'],
    ]);
  });

  it('ignores other kinds and versions silently', () => {
    const { snapshot, problems } = build(
      { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } },
      { apiVersion: 'v1', kind: 'Endpoints', metadata: { name: 'x' } },
      { ...slice(), apiVersion: 'discovery.k8s.io/v1beta1' },
      { ...svc(), apiVersion: 'v2' },
    );
    expect(snapshot.services).toEqual([]);
    expect(snapshot.endpointSlices).toEqual([]);
    expect(problems).toEqual([]);
  });

  it('lets the last duplicate win and reports it', () => {
    const { snapshot, problems } = build(
      svc({ clusterIP: '10.96.0.1' }),
      svc({ clusterIP: '10.96.0.2' }),
      slice(),
      slice(),
    );
    expect(snapshot.services.map((s) => s.clusterIPs[0]?.text)).toEqual(['10.96.0.2']);
    expect(snapshot.endpointSlices).toHaveLength(1);
    expect(problems.map((p) => [p.kind, p.object, p.message])).toEqual([
      ['Service', 'shop/web', 'duplicate object; the later one wins'],
      ['EndpointSlice', 'shop/web-abc12', 'duplicate object; the later one wins'],
    ]);
  });

  it('a later skipped duplicate removes the earlier copy', () => {
    const { snapshot } = build(svc(), svc({ clusterIP: 'None' }));
    expect(snapshot.services).toEqual([]);
  });

  it('sorts services and slices by namespace, then name', () => {
    const { snapshot } = build(
      svc({}, { namespace: 'b', name: 'a' }),
      svc({}, { namespace: 'a', name: 'z' }),
      svc({}, { namespace: 'a', name: 'b' }),
      slice({}, { namespace: 'z', name: 's1' }),
      slice({}, { namespace: 'a', name: 's2' }),
      slice({}, { namespace: 'a', name: 's1' }),
    );
    expect(snapshot.services.map((s) => `${s.namespace}/${s.name}`)).toEqual(['a/b', 'a/z', 'b/a']);
    expect(snapshot.endpointSlices.map((s) => `${s.namespace}/${s.name}`)).toEqual(['a/s1', 'a/s2', 'z/s1']);
  });

  it('survives arbitrary shapes without throwing', () => {
    const shapes: unknown[] = [0, true, 'x', [], {}, null, [null], { a: [] }];
    for (const a of shapes) {
      for (const b of shapes) {
        const objects = [
          svc({ ports: a, clusterIPs: b }),
          svc({ externalIPs: a, loadBalancerSourceRanges: b }, {}, { status: a }),
          slice({ endpoints: a, ports: b }),
          slice({ endpoints: [{ addresses: a, conditions: b, hints: a }] }),
          node(NODE, { status: { addresses: a }, spec: b }),
          { apiVersion: 'v1', kind: 'Service', metadata: a, spec: b },
        ];
        expect(() => build(...objects)).not.toThrow();
        expectSafe(build(...objects).problems);
      }
    }
  });
});

describe('node eligibility', () => {
  const nodeWith = (extra: Record<string, unknown>) => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'n1', ...(extra['metadata'] as object) },
    spec: extra['spec'] ?? {},
  });
  it('a Node being deleted or tainted ToBeDeletedByClusterAutoscaler is being removed', () => {
    expect(buildSnapshot([nodeWith({})], 'n1').snapshot.node?.beingRemoved).toBe(false);
    expect(
      buildSnapshot([nodeWith({ metadata: { deletionTimestamp: '2026-11-22T00:00:00Z' } })], 'n1').snapshot.node
        ?.beingRemoved,
    ).toBe(true);
    const tainted = nodeWith({ spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', effect: 'NoSchedule' }] } });
    expect(buildSnapshot([tainted], 'n1').snapshot.node?.beingRemoved).toBe(true);
  });
});
