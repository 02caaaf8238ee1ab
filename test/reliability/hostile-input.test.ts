/**
 * Issue 10, item 5 — hostile input, property-based (fast-check). Generated Services,
 * EndpointSlices, Nodes, ServiceCIDRs and config files, valid and malformed mixed (support/hostile.ts),
 * go through the whole pure pipeline (normalize → snapshot → node states) and every renderer:
 * nftables text and JSON, iptables-restore input, the IPVS dump (ipvsadm batch, ip batch, helper
 * table), and the nftables and iptables backends' real sync against a recording fake kernel (their
 * stdin and every argument vector). Properties:
 *
 * - nothing throws (every malformed object is a problem, never an exception);
 * - the marker `ZQXJ` (always generated next to a shell/nft/iptables metacharacter) never appears
 *   outside a quoted comment: nft text and the IPVS dump with `comment "…"` removed, restore input
 *   with `--comment "…"` removed, nft JSON anywhere but a `comment` value, argv at all;
 * - Services not involved keep exactly their rules: four bystander Services (namespace `0keep`,
 *   which sorts first, so they win any frontend conflict) render the same lines with and without
 *   the generated objects beside them.
 *
 * `npm run reliability` runs ten times as many cases. A seed that finds a bug becomes a unit test
 * (none has so far: every generated case passed once the checks read set elements and comments right).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { loadProxyConfig } from '../../src/config/load.ts';
import type { ProxyConfig, ProxyMode } from '../../src/config/proxy-config.ts';
import type { Exec } from '../../src/kernel/exec.ts';
import { familyStateOf, type ProxyModeDefinition } from '../../src/proxy/backend.ts';
import { nodeStates } from '../../src/proxy/desired.ts';
import { loadProxyMode } from '../../src/proxy/modes.ts';
import { buildSnapshot } from '../../src/source/normalize.ts';
import { MARKER, configFile, objects } from './support/hostile.ts';
import { FULL, report } from './support/env.ts';

const NODE = 'node-a';
const SCALE = FULL ? 10 : 1;
const silent = pino({ level: 'silent' });

const BYSTANDERS: unknown[] = [
  {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: NODE, labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
    spec: { podCIDRs: ['10.244.0.0/24', 'fd00:244::/64'] },
    status: {
      addresses: [
        { type: 'InternalIP', address: '192.0.2.1' },
        { type: 'InternalIP', address: '2001:db8::1' },
      ],
    },
  },
  {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'ServiceCIDR',
    metadata: { name: 'kubernetes' },
    spec: { cidrs: ['10.96.0.0/16'] },
  },
  svc('web', '10.96.0.1', { ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }] }),
  slice('web', ['10.244.0.11', '10.244.1.12'], 'http', 'TCP', 8080),
  svc('np', '10.96.0.2', {
    type: 'NodePort',
    externalTrafficPolicy: 'Local',
    ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30001 }],
  }),
  slice('np', ['10.244.0.21'], 'http', 'TCP', 8080),
  svc(
    'lb',
    '10.96.0.3',
    {
      type: 'LoadBalancer',
      sessionAffinity: 'ClientIP',
      loadBalancerSourceRanges: ['192.0.2.0/24'],
      ports: [{ name: 'https', protocol: 'TCP', port: 443, targetPort: 8443, nodePort: 30002 }],
    },
    { loadBalancer: { ingress: [{ ip: '198.51.100.1' }] } },
  ),
  slice('lb', ['10.244.0.31', '10.244.2.32'], 'https', 'TCP', 8443),
  svc('dns', '10.96.0.4', { ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353 }] }),
  slice('dns', ['10.244.0.41'], 'dns', 'UDP', 5353),
];

function svc(name: string, ip: string, spec: Record<string, unknown>, status?: unknown): unknown {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: '0keep' },
    spec: { type: 'ClusterIP', clusterIP: ip, clusterIPs: [ip], ...spec },
    ...(status ? { status } : {}),
  };
}

function slice(service: string, ips: string[], portName: string, protocol: string, port: number): unknown {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${service}-1`, namespace: '0keep', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ name: portName, protocol, port }],
    endpoints: ips.map((a, i) => ({
      addresses: [a],
      conditions: { ready: true },
      nodeName: i === 0 ? NODE : 'node-b',
    })),
  };
}

/** Lines that are about the bystanders (set elements without their separating comma) (their names, addresses, node ports, or chains named after them). */
const BYSTANDER_ADDRESSES = /(?<![\d.])(10\.96\.0\.[1-4]|198\.51\.100\.1)(?![\d])|:3000[12]\b| 3000[12]\b/;

function bystanderLines(text: string): string[] {
  // A one-element set is written on one line, a larger one an element per line: one form for both.
  const lines = text.split('\n').flatMap((l) => {
    const one = /^add element \S+ \S+ \S+ \{ (.*) \}$/.exec(l);
    return one ? (one[1] as string).split(', ') : [l];
  });
  const chains = new Set<string>();
  for (const l of lines) {
    if (!l.includes('0keep/')) continue;
    for (const m of l.matchAll(/KUBE-(?:SVC|SVL|SEP|EXT|FW)-[A-Z0-9]{16}|\b[a-z]+-[0-9a-f]{8}-0keep\/[^\s;,}"]+/g))
      chains.add(m[0]);
  }
  return lines
    .filter((l) => l.includes('0keep/') || BYSTANDER_ADDRESSES.test(l) || [...chains].some((c) => l.includes(c)))
    .map((l) => l.trim().replace(/,$/, ''))
    .sort();
}

function bystanderEntries(json: string): string[] {
  const doc = JSON.parse(json) as { nftables: Record<string, Record<string, Record<string, unknown>>>[] };
  // A set's elements are one entry: one line per element, as in the text format.
  const lines = doc.nftables.flatMap((e) => {
    const el = e['add']?.['element'];
    if (!el || !Array.isArray(el['elem'])) return [JSON.stringify(e)];
    return (el['elem'] as unknown[]).map((x) => `element ${String(el['name'])} ${JSON.stringify(x)}`);
  });
  return bystanderLines(lines.join('\n'));
}

/** Where the marker may not be: everything but quoted comments (nft and iptables syntax). */
function markerOutsideComments(text: string): string | undefined {
  const stripped = text
    .replace(/--comment (?:"(?:[^"\\\n]|\\.)*"|[^\s"]+)/g, '--comment _')
    .replace(/\bcomment "[^"\n]*"/g, 'comment _');
  const i = stripped.indexOf(MARKER);
  return i < 0 ? undefined : stripped.slice(Math.max(0, i - 120), i + 40);
}

function markerInJson(json: string): string | undefined {
  const walk = (v: unknown, key: string): string | undefined => {
    if (typeof v === 'string') return v.includes(MARKER) && key !== 'comment' ? `${key}: ${v}` : undefined;
    if (Array.isArray(v)) {
      for (const x of v) {
        const hit = walk(x, key);
        if (hit) return hit;
      }
      return undefined;
    }
    if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k.includes(MARKER)) return `key ${k}`;
        const hit = walk(x, k);
        if (hit) return hit;
      }
    }
    return undefined;
  };
  return walk(JSON.parse(json), '');
}

const MODES: ProxyMode[] = ['nftables', 'iptables', 'ipvs'];
const loaded = new Map<ProxyMode, { def: ProxyModeDefinition; config: ProxyConfig }>();
async function mode(m: ProxyMode): Promise<{ def: ProxyModeDefinition; config: ProxyConfig }> {
  let x = loaded.get(m);
  if (!x) {
    const { config } = loadProxyConfig({
      argv: [`--proxy-mode=${m}`, `--hostname-override=${NODE}`, '--cluster-cidr=10.244.0.0/16,fd00:244::/56'],
      hostname: NODE,
      readFile: () => '',
      commandFlags: ['manifests'],
    });
    x = { def: await loadProxyMode(m), config };
    loaded.set(m, x);
  }
  return x;
}

interface Dumps {
  readonly [format: string]: string;
}

async function dumpAll(objs: readonly unknown[], config?: ProxyConfig, only?: ProxyMode): Promise<Dumps> {
  const out: Record<string, string> = {};
  for (const m of only ? [only] : MODES) {
    const { def, config: base } = await mode(m);
    const cfg = config ?? base;
    const { snapshot } = buildSnapshot([...objs], cfg.nodeName);
    const states = nodeStates(snapshot, cfg);
    for (const format of def.dumpFormats) out[`${m}/${format}`] = def.dump({ states, config: cfg, format }).text;
  }
  return out;
}

function checkMarker(d: Dumps): void {
  for (const [what, text] of Object.entries(d)) {
    const hit = what.endsWith('/json') ? markerInJson(text) : markerOutsideComments(text);
    if (hit !== undefined) throw new Error(`${what}: generated text outside a comment: …${JSON.stringify(hit)}…`);
  }
}

const counts = { objects: 0, configs: 0, runs: 0, validServices: 0, validSlices: 0, configsAccepted: 0 };

describe('hostile input through every renderer (property-based)', () => {
  it(
    'mixed objects, the Node itself hostile too: no crash, no generated text outside a comment',
    async () => {
      await fc.assert(
        fc.asyncProperty(objects(NODE, 40), async (objs) => {
          counts.objects += objs.length;
          counts.runs++;
          const { snapshot } = buildSnapshot(objs, NODE);
          counts.validServices += snapshot.services.length;
          counts.validSlices += snapshot.endpointSlices.length;
          checkMarker(await dumpAll([...BYSTANDERS, ...objs]));
        }),
        { numRuns: 200 * SCALE },
      );
    },
    120_000 * SCALE,
  );

  it(
    'Services not involved keep exactly their rules, in every renderer',
    async () => {
      const base = await dumpAll(BYSTANDERS);
      const expected = Object.fromEntries(
        Object.entries(base).map(([k, t]) => [k, k.endsWith('/json') ? bystanderEntries(t) : bystanderLines(t)]),
      );
      for (const [k, lines] of Object.entries(expected))
        expect(lines.length, `${k} has bystander lines`).toBeGreaterThan(5);
      await fc.assert(
        fc.asyncProperty(objects('node-b', 40), async (objs) => {
          counts.objects += objs.length;
          counts.runs++;
          const mixed = await dumpAll([...BYSTANDERS, ...objs]);
          checkMarker(mixed);
          for (const [k, t] of Object.entries(mixed)) {
            const got = k.endsWith('/json') ? bystanderEntries(t) : bystanderLines(t);
            expect(got, k).toEqual(expected[k]);
          }
        }),
        { numRuns: 150 * SCALE },
      );
    },
    120_000 * SCALE,
  );

  it(
    "the backends' real syncs: stdin and argv of every kernel tool run carry no generated text",
    async () => {
      const calls: { file: string; args: readonly string[]; stdin?: string }[] = [];
      const fake: Exec = async (file, args, stdin) => {
        calls.push({ file, args, ...(stdin !== undefined ? { stdin } : {}) });
        if (file === 'nft' && args.includes('list'))
          return { exitCode: 1, stdout: '', stderr: 'Error: No such file or directory' };
        if (file === 'sysctl') return { exitCode: 0, stdout: '0\n', stderr: '' };
        return { exitCode: 0, stdout: '', stderr: '' };
      };
      await fc.assert(
        fc.asyncProperty(objects(NODE, 30), async (objs) => {
          counts.objects += objs.length;
          counts.runs++;
          for (const m of ['nftables', 'iptables'] as const) {
            const { def, config } = await mode(m);
            const { snapshot } = buildSnapshot([...BYSTANDERS, ...objs], config.nodeName);
            const families = nodeStates(snapshot, config).map(familyStateOf);
            calls.length = 0;
            const backend = def.createBackend({ config, exec: fake, log: silent });
            await backend.sync({ families, full: true, changed: new Set() });
            for (const c of calls) {
              const argv = [c.file, ...c.args].join(' ');
              if (argv.includes(MARKER)) throw new Error(`${m}: argv carries generated text: ${argv}`);
              const hit = c.stdin === undefined ? undefined : markerOutsideComments(c.stdin);
              if (hit !== undefined) throw new Error(`${m}: ${c.file} stdin: …${JSON.stringify(hit)}…`);
            }
            expect(calls.some((c) => c.stdin !== undefined && c.stdin.length > 0)).toBe(true);
          }
        }),
        { numRuns: 100 * SCALE },
      );
    },
    120_000 * SCALE,
  );

  it(
    'config files: a clean error or a config whose rules carry no generated text',
    async () => {
      await fc.assert(
        fc.asyncProperty(configFile, async (text) => {
          counts.configs++;
          let config: ProxyConfig;
          try {
            config = loadProxyConfig({
              argv: ['--config', '/c.conf'],
              hostname: NODE,
              readFile: () => text,
              commandFlags: ['manifests'],
            }).config;
          } catch (err) {
            // Only the loader's own error, naming the field: never a TypeError from deep inside.
            expect((err as Error).name, String(err)).toBe('ConfigError');
            return;
          }
          counts.configsAccepted++;
          checkMarker(await dumpAll(BYSTANDERS, { ...config, nodeName: NODE }, config.mode));
        }),
        { numRuns: 2000 * SCALE },
      );
    },
    120_000 * SCALE,
  );

  it('the checks themselves catch generated text outside a comment', () => {
    expect(markerOutsideComments(`add rule ip kproxy x comment "a${MARKER};"`)).toBeUndefined();
    expect(markerOutsideComments(`add rule ip kproxy x comment "a" ${MARKER};"`)).toBeDefined();
    expect(markerOutsideComments(`-A KUBE-SVC-X -m comment --comment "a\\" ${MARKER}" -j ACCEPT`)).toBeUndefined();
    expect(markerOutsideComments(`-A KUBE-SVC-X -m comment --comment x${MARKER} -j ACCEPT`)).toBeUndefined();
    expect(markerOutsideComments(`iifname "${MARKER}*" accept`)).toBeDefined();
    expect(markerInJson(JSON.stringify({ rule: { comment: MARKER, expr: [] } }))).toBeUndefined();
    expect(markerInJson(JSON.stringify({ rule: { chain: MARKER } }))).toBeDefined();
  });

  it('covered at least 10,000 generated objects and config files', () => {
    const total = counts.objects + counts.configs;
    report({
      test: 'hostile-input',
      mode: 'any',
      load: `${counts.objects} generated objects in ${counts.runs} clusters (${counts.validServices} Services and ${counts.validSlices} EndpointSlices valid) + ${counts.configs} config files (${counts.configsAccepted} accepted)`,
      faults: 'malformed and hostile values (metacharacters, markers, out-of-range numbers, wrong types, junk objects)',
      result: `0 crashes, 0 generated strings outside a quoted comment in nft text/JSON, restore input, IPVS dump, backend stdin and argv; bystander Services' rules unchanged in every renderer`,
      pass: true,
      data: counts,
    });
    expect(total).toBeGreaterThanOrEqual(10_000);
  });
});
