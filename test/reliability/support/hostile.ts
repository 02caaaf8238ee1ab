/**
 * fast-check generators of Kubernetes objects and kproxy config files, valid and malformed mixed,
 * for the hostile-input properties (test/reliability/hostile-input.test.ts).
 *
 * Every string a tenant controls is sometimes a plausible value and sometimes the marker `ZQXJ`
 * glued to shell, nft and iptables metacharacters (quotes, `;`, newlines, braces, `#`, `$(`, `-j`,
 * …). The marker is upper case and always travels with a metacharacter, so no field that passed
 * validation can ever hold it: wherever it shows up in rule text, restore input, an IPVS batch or an
 * argument vector (outside a quoted comment), a value went through unchecked.
 */
import fc from 'fast-check';

export const MARKER = 'ZQXJ';

const META = [
  '"',
  "'",
  ';',
  '\n',
  '\r\n',
  '\\',
  '{',
  '}',
  '#',
  '$(id)',
  '`id`',
  ' ',
  '\t',
  '\u0000',
  '|',
  '&&',
  '>',
  ' -j ACCEPT',
  '\nflush ruleset\n',
  ' --to-destination 6.6.6.6',
  '\nCOMMIT\n',
  '\n-A INPUT -j DROP\n',
  '%s',
  '\u2028',
  '*',
  ',',
  ':',
  '/',
  ' counter accept comment "x"',
];

/** The marker with metacharacters around it: never a valid value of any field. */
export const hostile: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom(...META), fc.constantFrom(...META), fc.string({ maxLength: 6 }))
  .map(([a, b, c]) => `${c}${a}${MARKER}${b}`);

const label = fc.stringMatching(/^[a-z]([-a-z0-9]{0,10}[a-z0-9])?$/);
const name = fc.oneof(
  { weight: 6, arbitrary: label },
  { weight: 1, arbitrary: hostile },
  { weight: 1, arbitrary: fc.constant('') },
);
const v4 = (a: number, b: number): fc.Arbitrary<string> =>
  fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 254 })).map(([c, d]) => `${a}.${b}.${c}.${d}`);
const v6 = fc.integer({ min: 1, max: 0xffff }).map((n) => `fd00:97::${n.toString(16)}`);
/** Addresses: valid ones outside the bystanders' ranges, odd spellings, garbage. */
const ip = (a: number, b: number): fc.Arbitrary<unknown> =>
  fc.oneof(
    { weight: 6, arbitrary: v4(a, b) },
    { weight: 2, arbitrary: v6 },
    { weight: 1, arbitrary: hostile },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        '010.1.1.1',
        '1.2.3.4/32',
        '::ffff:10.97.0.1',
        '256.1.1.1',
        '0.0.0.0',
        '::',
        'fe80::1%eth0',
        ' 10.97.0.1',
        7,
        null,
      ),
    },
  );
const port = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 1, max: 65535 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, -1, 65536, 1.5, '80', 'http', null) },
  { weight: 1, arbitrary: hostile },
);
const nodePort = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 31000, max: 31999 }) },
  { weight: 1, arbitrary: port },
);
const protocol = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom('TCP', 'UDP', 'SCTP') },
  { weight: 1, arbitrary: fc.constantFrom('tcp', 'ICMP', '', null) },
  { weight: 1, arbitrary: hostile },
);
const cidr = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(v4(203, 0), fc.integer({ min: 8, max: 32 })).map(([a, p]) => `${a}/${p}`) },
  { weight: 1, arbitrary: fc.constantFrom('0.0.0.0/0', '10.0.0.0/33', '1.2.3.4', '::/0', 'fd00::/200') },
  { weight: 1, arbitrary: hostile },
);
const maybe = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: 3, arbitrary: a }, { weight: 1, arbitrary: fc.constant(undefined) });
/** Present now and then (fields most objects do not set). */
const rare = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: 1, arbitrary: a }, { weight: 5, arbitrary: fc.constant(undefined) });
/** Mostly a valid value, sometimes a hostile one. */
const mostly = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | string> =>
  fc.oneof({ weight: 6, arbitrary: a }, { weight: 1, arbitrary: hostile });
const list = <T>(a: fc.Arbitrary<T>, max = 3): fc.Arbitrary<T[]> => fc.array(a, { maxLength: max });
const labelValue = fc.oneof(label, hostile, fc.constant('Zone-A_1.b'));

/** Drops undefined fields (as YAML or JSON would never carry them). */
function clean(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

const namespace = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('t1', 't2', 'tenant-x') },
  { weight: 1, arbitrary: name },
);

export const service: fc.Arbitrary<Record<string, unknown>> = fc
  .record({
    name,
    namespace,
    type: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('ClusterIP', 'NodePort', 'LoadBalancer') },
      { weight: 1, arbitrary: fc.constantFrom('ExternalName', 'Bogus', undefined) },
      { weight: 1, arbitrary: hostile },
    ),
    clusterIP: fc.oneof({ weight: 8, arbitrary: ip(10, 97) }, { weight: 1, arbitrary: fc.constant(undefined) }),
    extraIPs: fc.oneof({ weight: 5, arbitrary: fc.constant([]) }, { weight: 1, arbitrary: list(ip(10, 97), 1) }),
    ports: list(
      fc.record({
        name: maybe(mostly(label)),
        protocol: maybe(protocol),
        port,
        targetPort: maybe(fc.oneof(port, mostly(label))),
        nodePort: maybe(nodePort),
        appProtocol: rare(mostly(label)),
      }),
      4,
    ),
    externalIPs: rare(list(ip(203, 0), 3)),
    lbSourceRanges: rare(list(cidr, 3)),
    ingress: maybe(list(fc.record({ ip: ip(203, 0), ipMode: maybe(fc.constantFrom('VIP', 'Proxy', 'X')) }), 2)),
    affinity: rare(fc.constantFrom('ClientIP', 'None', 'Sticky')),
    affinityTimeout: rare(fc.oneof(fc.integer({ min: -5, max: 100_000 }), hostile)),
    etp: rare(mostly(fc.constantFrom('Local', 'Cluster'))),
    itp: rare(mostly(fc.constantFrom('Local', 'Cluster'))),
    hcnp: rare(nodePort),
    ipFamilies: rare(list(fc.constantFrom('IPv4', 'IPv6', 'IPv5'), 2)),
    scheduler: rare(mostly(fc.constantFrom('rr', 'sh', 'mh'))),
    proxyName: rare(rare(fc.oneof(label, hostile))),
    trafficDistribution: rare(mostly(fc.constantFrom('PreferClose', 'PreferSameNode', 'PreferSameZone'))),
  })
  .map((s) =>
    clean({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: clean({
        name: s.name,
        namespace: s.namespace,
        annotations: s.scheduler !== undefined ? { 'kproxy.io/ipvs-scheduler': s.scheduler } : undefined,
        labels: s.proxyName !== undefined ? { 'service.kubernetes.io/service-proxy-name': s.proxyName } : undefined,
      }),
      spec: clean({
        type: s.type,
        clusterIP: s.clusterIP,
        clusterIPs: s.clusterIP === undefined ? undefined : [s.clusterIP, ...s.extraIPs],
        ipFamilies: s.ipFamilies,
        ports: s.ports.map((p) => clean(p)),
        externalIPs: s.externalIPs,
        loadBalancerSourceRanges: s.lbSourceRanges,
        sessionAffinity: s.affinity,
        sessionAffinityConfig:
          s.affinityTimeout !== undefined ? { clientIP: { timeoutSeconds: s.affinityTimeout } } : undefined,
        externalTrafficPolicy: s.etp,
        internalTrafficPolicy: s.itp,
        healthCheckNodePort: s.hcnp,
        trafficDistribution: s.trafficDistribution,
      }),
      status: s.ingress !== undefined ? { loadBalancer: { ingress: s.ingress.map((i) => clean(i)) } } : undefined,
    }),
  );

export const endpointSlice = (serviceNames: fc.Arbitrary<unknown>): fc.Arbitrary<Record<string, unknown>> =>
  fc
    .record({
      name,
      namespace,
      service: serviceNames,
      addressType: fc.oneof(
        { weight: 6, arbitrary: fc.constantFrom('IPv4', 'IPv6') },
        { weight: 1, arbitrary: fc.constantFrom('FQDN', 'IPv5') },
        { weight: 1, arbitrary: hostile },
      ),
      ports: list(fc.record({ name: maybe(mostly(label)), protocol: maybe(protocol), port: maybe(port) }), 3),
      endpoints: list(
        fc.record({
          addresses: list(ip(10, 244), 2),
          ready: maybe(fc.oneof(fc.boolean(), fc.constant('yes'))),
          serving: maybe(fc.boolean()),
          terminating: maybe(fc.boolean()),
          nodeName: maybe(mostly(fc.constantFrom('node-a', 'node-b'))),
          zone: maybe(labelValue),
          hintZones: maybe(list(labelValue, 2)),
          hintNodes: maybe(list(fc.oneof(fc.constant('node-a'), hostile), 2)),
          hostname: rare(mostly(label)),
        }),
        6,
      ),
    })
    .map((e) =>
      clean({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: clean({ name: e.name, namespace: e.namespace, labels: { 'kubernetes.io/service-name': e.service } }),
        addressType: e.addressType,
        ports: e.ports.map((p) => clean(p)),
        endpoints: e.endpoints.map((x) =>
          clean({
            addresses: x.addresses,
            conditions: clean({ ready: x.ready, serving: x.serving, terminating: x.terminating }),
            nodeName: x.nodeName,
            zone: x.zone,
            hostname: x.hostname,
            hints:
              x.hintZones || x.hintNodes
                ? clean({
                    forZones: x.hintZones?.map((z) => ({ name: z })),
                    forNodes: x.hintNodes?.map((n) => ({ name: n })),
                  })
                : undefined,
          }),
        ),
      }),
    );

export const node = (nodeName: string): fc.Arbitrary<Record<string, unknown>> =>
  fc
    .record({
      labels: fc.dictionary(
        fc.oneof(fc.constantFrom('topology.kubernetes.io/zone', 'kubernetes.io/hostname'), hostile),
        labelValue,
        {
          maxKeys: 3,
        },
      ),
      podCIDRs: list(fc.oneof(fc.constantFrom('10.244.0.0/24', 'fd00:244::/64'), cidr), 3),
      addresses: list(
        fc.record({ type: fc.constantFrom('InternalIP', 'ExternalIP', 'Hostname', 'Evil'), address: ip(192, 0) }),
        4,
      ),
      taint: maybe(fc.oneof(fc.constant('ToBeDeletedByClusterAutoscaler'), hostile)),
    })
    .map((n) =>
      clean({
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: nodeName, labels: n.labels },
        spec: clean({ podCIDRs: n.podCIDRs, taints: n.taint ? [{ key: n.taint, effect: 'NoSchedule' }] : undefined }),
        status: { addresses: n.addresses },
      }),
    );

export const serviceCIDR: fc.Arbitrary<Record<string, unknown>> = fc
  .record({ name, cidrs: list(fc.oneof(fc.constantFrom('10.97.0.0/16', 'fd00:97::/108'), cidr), 2) })
  .map((c) => ({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'ServiceCIDR',
    metadata: { name: c.name },
    spec: { cidrs: c.cidrs },
  }));

/** Anything at all where an object should be (not an object, a list, a wrong kind). */
export const junk: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant(null),
  fc.constant({ apiVersion: 'v1', kind: 'Service' }),
  fc.constant({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'x' }, spec: 'nope' }),
  fc.constant({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'x', namespace: 't1' },
    endpoints: 7,
  }),
  hostile.map((h) => ({ apiVersion: 'v1', kind: h })),
  fc.jsonValue({ maxDepth: 3 }),
);

/** A mix of objects of every kind (Services named so that some slices find them). */
export const objects = (nodeName: string, max: number): fc.Arbitrary<unknown[]> =>
  fc.array(
    fc.oneof(
      { weight: 8, arbitrary: service },
      { weight: 8, arbitrary: endpointSlice(fc.oneof(label, hostile, fc.constant(undefined))) },
      { weight: 1, arbitrary: node(nodeName) },
      { weight: 1, arbitrary: serviceCIDR },
      { weight: 1, arbitrary: junk },
    ),
    { minLength: 6, maxLength: max, size: 'max' },
  );

/** A KubeProxyConfiguration file's text (YAML or JSON), every field sometimes hostile. */
export const configFile: fc.Arbitrary<string> = fc
  .record({
    mode: rare(mostly(fc.constantFrom('nftables', 'iptables', 'ipvs'))),
    clusterCIDR: maybe(fc.oneof(fc.constant('10.244.0.0/16'), cidr)),
    hostnameOverride: rare(mostly(label)),
    detectLocalMode: maybe(
      fc.oneof(fc.constantFrom('ClusterCIDR', 'NodeCIDR', 'BridgeInterface', 'InterfaceNamePrefix', 'None'), hostile),
    ),
    bridgeInterface: rare(mostly(fc.constantFrom('cbr0', 'br-1'))),
    interfaceNamePrefix: rare(mostly(fc.constantFrom('veth', 'cali'))),
    nodePortAddresses: maybe(list(fc.oneof(fc.constantFrom('primary', '192.0.2.0/24', '0.0.0.0/0'), cidr, hostile), 3)),
    masqueradeBit: rare(mostly(fc.integer({ min: -2, max: 40 }))),
    masqueradeAll: rare(mostly(fc.boolean())),
    syncPeriod: rare(mostly(fc.constantFrom('30s', '1m', '0s', '-1s'))),
    scheduler: rare(mostly(fc.constantFrom('rr', 'wrr'))),
    excludeCIDRs: maybe(list(fc.oneof(cidr, hostile), 2)),
    metricsBindAddress: rare(mostly(fc.constantFrom('127.0.0.1:10249', '0.0.0.0:0'))),
    json: fc.boolean(),
  })
  .map((c) => {
    const doc = clean({
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      mode: c.mode,
      clusterCIDR: c.clusterCIDR,
      hostnameOverride: c.hostnameOverride,
      detectLocalMode: c.detectLocalMode,
      detectLocal:
        c.bridgeInterface !== undefined || c.interfaceNamePrefix !== undefined
          ? clean({ bridgeInterface: c.bridgeInterface, interfaceNamePrefix: c.interfaceNamePrefix })
          : undefined,
      nodePortAddresses: c.nodePortAddresses,
      metricsBindAddress: c.metricsBindAddress,
      nftables: clean({ masqueradeBit: c.masqueradeBit, masqueradeAll: c.masqueradeAll, syncPeriod: c.syncPeriod }),
      iptables: clean({ masqueradeBit: c.masqueradeBit }),
      ipvs: clean({ scheduler: c.scheduler, excludeCIDRs: c.excludeCIDRs }),
    });
    return c.json ? JSON.stringify(doc) : toYaml(doc);
  });

/** Minimal YAML writer: every scalar as a JSON string (valid YAML), so hostile text stays data. */
function toYaml(v: unknown, indent = ''): string {
  if (Array.isArray(v))
    return v.length === 0 ? '[]' : v.map((x) => `\n${indent}- ${toYaml(x, `${indent}  `).trimStart()}`).join('');
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>);
    if (entries.length === 0) return '{}';
    return entries.map(([k, x]) => `\n${indent}${JSON.stringify(k)}: ${toYaml(x, `${indent}  `)}`).join('');
  }
  return JSON.stringify(v);
}
