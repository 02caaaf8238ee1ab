/**
 * deploy/ against the code: the ClusterRole grants exactly what kproxy uses (API_ACCESS), the
 * DaemonSet runs kproxy the way its config and health server expect, the ConfigMap's config loads
 * cleanly, the kustomization lists every manifest, and the Containerfile's Node is the pinned one.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { loadProxyConfig, type Loaded } from '../../src/config/load.ts';
import { API_ACCESS } from '../../src/source/api-source.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DEPLOY = `${ROOT}deploy/`;

// ---------------------------------------------------------------------------------------------
// The parts of the manifests the checks read.

interface Meta {
  name?: string;
  namespace?: string;
  labels?: Record<string, string>;
}
interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  verbs?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}
interface ClusterRole {
  kind: string;
  metadata: Meta;
  rules: PolicyRule[];
}
interface ClusterRoleBinding {
  kind: string;
  metadata: Meta;
  roleRef: { apiGroup: string; kind: string; name: string };
  subjects: { kind: string; name: string; namespace?: string }[];
}
interface ConfigMap {
  kind: string;
  metadata: Meta;
  data: Record<string, string>;
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; configMapKeyRef?: { name: string; key: string; optional?: boolean } };
}
interface Probe {
  httpGet?: { path: string; port: number | string; host?: string; scheme?: string };
  timeoutSeconds?: number;
  periodSeconds?: number;
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: {
    privileged?: boolean;
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    runAsUser?: number;
    capabilities?: { add?: string[]; drop?: string[] };
  };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean; subPath?: string }[];
}
interface Volume {
  name: string;
  configMap?: { name: string; items?: { key: string; path: string }[] };
  hostPath?: { path: string; type?: string };
  emptyDir?: Record<string, unknown>;
}
interface DaemonSet {
  kind: string;
  metadata: Meta;
  spec: {
    selector: { matchLabels: Record<string, string> };
    updateStrategy?: { type: string; rollingUpdate?: { maxUnavailable?: string | number } };
    template: {
      metadata: Meta;
      spec: {
        serviceAccountName?: string;
        hostNetwork?: boolean;
        priorityClassName?: string;
        nodeSelector?: Record<string, string>;
        tolerations?: Record<string, unknown>[];
        containers: Container[];
        volumes?: Volume[];
      };
    };
  };
}
interface Kustomization {
  kind: string;
  namespace?: string;
  resources: string[];
  images?: { name: string; newName?: string; newTag?: string }[];
}

/** The single YAML document in deploy/`file`. */
function manifest<T>(file: string): T {
  const docs = parseAllDocuments(readFileSync(DEPLOY + file, 'utf8'));
  if (!Array.isArray(docs)) throw new Error(`${file}: nothing parsed`);
  expect(docs.length, `${file}: one document`).toBe(1);
  const doc = docs[0]!;
  expect(doc.errors, `${file}: YAML errors`).toEqual([]);
  return doc.toJS() as T;
}

const role = manifest<ClusterRole>('clusterrole.yaml');
const binding = manifest<ClusterRoleBinding>('clusterrolebinding.yaml');
const serviceAccount = manifest<{ kind: string; metadata: Meta }>('serviceaccount.yaml');
const configMap = manifest<ConfigMap>('configmap.yaml');
const daemonSet = manifest<DaemonSet>('daemonset.yaml');
const kustomization = manifest<Kustomization>('kustomization.yaml');
const pod = daemonSet.spec.template.spec;
const container = pod.containers[0]!;
const packageJson = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as {
  version: string;
  dependencies: Record<string, string>;
};

// ---------------------------------------------------------------------------------------------
// What the kubelet would do with the DaemonSet.

const FAKE_NODE = 'worker-7.example';

/** The container's environment as the kubelet resolves it (fieldRefs and ConfigMap keys). */
function containerEnv(): Map<string, string> {
  const env = new Map<string, string>();
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env.set(e.name, e.value);
    else if (e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName') env.set(e.name, FAKE_NODE);
    else if (e.valueFrom?.configMapKeyRef !== undefined) {
      const ref = e.valueFrom.configMapKeyRef;
      expect(ref.name, `env ${e.name}: ConfigMap`).toBe(configMap.metadata.name);
      const v = configMap.data[ref.key];
      if (v === undefined) throw new Error(`env ${e.name}: ConfigMap has no key ${ref.key}`);
      env.set(e.name, v);
    } else throw new Error(`env ${e.name}: unsupported source`);
  }
  return env;
}

/** Kubernetes `$(VAR)` expansion of an argument. */
function expand(arg: string, env: Map<string, string>): string {
  return arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name: string) => env.get(name) ?? all);
}

/** Reads a file in the container: only ConfigMap volumes exist in this simulation. */
function readInContainer(path: string): string {
  for (const m of container.volumeMounts ?? []) {
    const prefix = m.mountPath.endsWith('/') ? m.mountPath : `${m.mountPath}/`;
    if (!path.startsWith(prefix) || m.subPath !== undefined) continue;
    const volume = pod.volumes?.find((v) => v.name === m.name);
    if (volume?.configMap === undefined) continue;
    expect(volume.configMap.name).toBe(configMap.metadata.name);
    const inside = path.slice(prefix.length);
    const items = volume.configMap.items;
    const key = items === undefined ? inside : items.find((i) => i.path === inside)?.key;
    const text = key === undefined ? undefined : configMap.data[key];
    if (text !== undefined) return text;
  }
  throw new Error(`ENOENT: ${path} is not in a ConfigMap volume`);
}

/** `kproxy run ...` exactly as the DaemonSet invokes it, loaded by the CLI's own config loader. */
function loadAsDaemon(): { loaded: Loaded; argv: string[]; filesRead: string[] } {
  const env = containerEnv();
  const args = (container.args ?? []).map((a) => expand(a, env));
  expect(container.command, 'the image entrypoint runs kproxy; args carry the subcommand').toBeUndefined();
  expect(args[0]).toBe('run');
  const filesRead: string[] = [];
  const loaded = loadProxyConfig({
    argv: args.slice(1),
    hostname: 'wrong-hostname',
    readFile: (p) => {
      filesRead.push(p);
      return readInContainer(p);
    },
  });
  return { loaded, argv: args, filesRead };
}

function portOf(bindAddress: string): number {
  return Number(bindAddress.slice(bindAddress.lastIndexOf(':') + 1));
}

/** Capabilities deploy/README.md marks as added / not added (its privileges table). */
function documentedCapabilities(): { added: string[]; notAdded: string[] } {
  const readme = readFileSync(`${DEPLOY}README.md`, 'utf8');
  const added: string[] = [];
  const notAdded: string[] = [];
  for (const m of readme.matchAll(/^\|\s*`([A-Z_]+)`\s*\|\s*(added|not added)\s*\|/gm)) {
    (m[2] === 'added' ? added : notAdded).push(m[1]!);
  }
  return { added: added.sort(), notAdded };
}

// ---------------------------------------------------------------------------------------------

describe('ClusterRole', () => {
  /** `group resource verb` triples. */
  const triples = (
    rules: readonly { groups: readonly string[]; resources: readonly string[]; verbs: readonly string[] }[],
  ): string[] => {
    const out = new Set<string>();
    for (const r of rules)
      for (const g of r.groups)
        for (const res of r.resources) for (const v of r.verbs) out.add(`${g || 'core'} ${res} ${v}`);
    return [...out].sort();
  };

  it('grants exactly what the code uses (API_ACCESS): no more, no less', () => {
    expect(role.kind).toBe('ClusterRole');
    const granted = triples(
      role.rules.map((r) => ({ groups: r.apiGroups ?? [], resources: r.resources ?? [], verbs: r.verbs ?? [] })),
    );
    const used = triples(API_ACCESS.map((a) => ({ groups: [a.group], resources: [a.resource], verbs: a.verbs })));
    expect(granted).toEqual(used);
    // Sanity of the derivation itself: the four informed resources and Events.
    expect(used).toContain('core services watch');
    expect(used).toContain('discovery.k8s.io endpointslices list');
    expect(used).toContain('core nodes list');
    expect(used).toContain('networking.k8s.io servicecidrs watch');
    expect(used).toContain('core events create');
  });

  it('src/ writes to the API only where API_ACCESS says (Event creates), never through a typed client', () => {
    const writers: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const path = `${dir}/${e.name}`;
        if (e.isDirectory()) walk(path);
        else if (e.name.endsWith('.ts')) {
          const text = readFileSync(path, 'utf8');
          expect(text, `${path} uses client-node's typed API`).not.toMatch(/makeApiClient|\b[A-Z][A-Za-z]*V1Api\b/);
          if (/method: '(POST|PUT|PATCH|DELETE)'/.test(text)) writers.push(path.slice(ROOT.length));
        }
      }
    };
    walk(`${ROOT}src`);
    // The HTTP module names the methods it supports; events-api.ts is the one caller that writes.
    expect(writers.sort()).toEqual(['src/daemon/events-api.ts']);
    expect(readFileSync(`${ROOT}src/daemon/events-api.ts`, 'utf8')).toMatch(
      /`\/api\/v1\/namespaces\/\$\{[^}]+\}\/events`/,
    );
    expect(API_ACCESS.filter((a) => a.verbs.some((v) => v !== 'list' && v !== 'watch'))).toEqual([
      { group: '', resource: 'events', verbs: ['create'] },
    ]);
  });

  it('has no wildcards, resource names, subresources or non-resource URLs', () => {
    for (const r of role.rules) {
      expect(Object.keys(r).sort()).toEqual(['apiGroups', 'resources', 'verbs']);
      for (const v of [...(r.apiGroups ?? []), ...(r.resources ?? []), ...(r.verbs ?? [])]) {
        expect(v).not.toContain('*');
        expect(v).not.toContain('/');
      }
    }
  });

  it('is bound to the service account the DaemonSet runs as', () => {
    expect(serviceAccount.kind).toBe('ServiceAccount');
    expect(binding.kind).toBe('ClusterRoleBinding');
    expect(binding.roleRef).toEqual({
      apiGroup: 'rbac.authorization.k8s.io',
      kind: 'ClusterRole',
      name: role.metadata.name,
    });
    expect(binding.subjects).toEqual([
      { kind: 'ServiceAccount', name: serviceAccount.metadata.name, namespace: serviceAccount.metadata.namespace },
    ]);
    expect(pod.serviceAccountName).toBe(serviceAccount.metadata.name);
    expect(serviceAccount.metadata.namespace).toBe(daemonSet.metadata.namespace);
  });
});

describe('DaemonSet', () => {
  it("follows kube-proxy's conventions", () => {
    expect(daemonSet.kind).toBe('DaemonSet');
    expect(daemonSet.metadata).toMatchObject({
      name: 'kproxy',
      namespace: 'kube-system',
      labels: { 'k8s-app': 'kproxy' },
    });
    expect(daemonSet.spec.selector.matchLabels).toEqual({ 'k8s-app': 'kproxy' });
    expect(daemonSet.spec.template.metadata.labels).toMatchObject(daemonSet.spec.selector.matchLabels);
    expect(pod.hostNetwork).toBe(true);
    expect(pod.priorityClassName).toBe('system-node-critical');
    expect(pod.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(pod.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' });
    expect(daemonSet.spec.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: '10%' } });
    expect(pod.containers).toHaveLength(1);
    expect(container.resources).toEqual({ requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } });
  });

  it('runs kproxy with its config from the ConfigMap volume and the node name from NODE_NAME', () => {
    const { loaded, argv, filesRead } = loadAsDaemon();
    expect(argv).toContain('--config=/var/lib/kproxy/config.conf');
    expect(container.args).toContain('--hostname-override=$(NODE_NAME)');
    expect(container.env?.find((e) => e.name === 'NODE_NAME')).toEqual({
      name: 'NODE_NAME',
      valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } },
    });
    expect(filesRead).toEqual(['/var/lib/kproxy/config.conf']);
    expect(loaded.configFile).toBe('/var/lib/kproxy/config.conf');
    expect(loaded.config.nodeName).toBe(FAKE_NODE);
    expect(loaded.warnings).toEqual([]);
    expect(loaded.kubeconfig, 'in-cluster authentication').toBeUndefined();
    const configMount = container.volumeMounts?.find((m) => m.mountPath === posix.dirname(loaded.configFile ?? ''));
    expect(configMount?.readOnly).toBe(true);
  });

  it('reaches the API server at the address set in the ConfigMap, not through the kubernetes Service', () => {
    const env = containerEnv();
    expect(env.get('KUBERNETES_SERVICE_HOST')).toBe(configMap.data['kubernetes-service-host']);
    expect(env.get('KUBERNETES_SERVICE_PORT')).toMatch(/^\d+$/);
    for (const name of ['KUBERNETES_SERVICE_HOST', 'KUBERNETES_SERVICE_PORT']) {
      expect(container.env?.find((e) => e.name === name)?.valueFrom?.configMapKeyRef?.optional, name).toBeUndefined();
    }
  });

  it('probes /livez and /healthz on the configured healthz port', () => {
    const port = portOf(loadAsDaemon().loaded.config.healthzBindAddress);
    expect(port).toBe(10256);
    expect(container.livenessProbe?.httpGet).toMatchObject({ path: '/livez', port });
    expect(container.readinessProbe?.httpGet).toMatchObject({ path: '/healthz', port });
    for (const p of [container.livenessProbe, container.readinessProbe]) {
      expect(p?.timeoutSeconds ?? 1).toBeGreaterThanOrEqual(2);
      expect(p?.periodSeconds ?? 10).toBeGreaterThanOrEqual(5);
    }
  });

  it('is not privileged: root with exactly the documented capabilities, read-only root filesystem', () => {
    const sc = container.securityContext;
    expect(sc?.privileged).toBe(false);
    expect(sc?.allowPrivilegeEscalation).toBe(false);
    expect(sc?.readOnlyRootFilesystem).toBe(true);
    expect(sc?.runAsUser).toBe(0);
    expect(sc?.capabilities?.drop).toEqual(['ALL']);
    const documented = documentedCapabilities();
    expect(documented.added.length).toBeGreaterThan(0);
    expect([...(sc?.capabilities?.add ?? [])].sort()).toEqual(documented.added);
    expect(documented.notAdded).toEqual(expect.arrayContaining(['NET_RAW', 'SYS_MODULE']));
  });

  it('mounts the xtables lock, /lib/modules read-only and a scratch /tmp', () => {
    const mount = (path: string) => {
      const m = container.volumeMounts?.find((x) => x.mountPath === path);
      return { mount: m, volume: pod.volumes?.find((v) => v.name === m?.name) };
    };
    expect(mount('/run/xtables.lock').volume?.hostPath).toEqual({ path: '/run/xtables.lock', type: 'FileOrCreate' });
    expect(mount('/lib/modules').mount?.readOnly).toBe(true);
    expect(mount('/lib/modules').volume?.hostPath?.path).toBe('/lib/modules');
    expect(mount('/tmp').volume?.emptyDir).toBeDefined();
    // Every volume is mounted.
    expect(new Set(pod.volumes?.map((v) => v.name))).toEqual(new Set(container.volumeMounts?.map((m) => m.name)));
  });
});

describe('defaults', () => {
  it('metrics (and /rules) listen on loopback unless asked otherwise, as upstream', () => {
    const loaded = loadProxyConfig({ argv: [], hostname: 'node-a', readFile: () => '' });
    expect(loaded.config.metricsBindAddress).toBe('127.0.0.1:10249');
    expect(loadAsDaemon().loaded.config.metricsBindAddress).toBe('127.0.0.1:10249');
  });
});

describe('ConfigMap', () => {
  it('config.conf loads cleanly with the upstream defaults deploy/ promises', () => {
    const text = configMap.data['config.conf'];
    expect(text).toBeDefined();
    const loaded = loadProxyConfig({ argv: ['--config', '/c'], hostname: 'node-a', readFile: () => text ?? '' });
    expect(loaded.warnings).toEqual([]);
    expect(loaded.config).toMatchObject({
      mode: 'nftables',
      detectLocal: { mode: 'ClusterCIDR' },
      nodePortAddresses: { kind: 'primary' },
      syncPeriodMs: 30_000,
      minSyncPeriodMs: 1_000,
      healthzBindAddress: '0.0.0.0:10256',
      metricsBindAddress: '127.0.0.1:10249',
    });
    expect(loaded.config.clusterCIDRs.length).toBeGreaterThan(0);
    expect(configMap.metadata).toMatchObject({ name: 'kproxy', namespace: 'kube-system' });
  });
});

describe('kustomization', () => {
  it('lists every manifest in deploy/', () => {
    const manifests = readdirSync(DEPLOY)
      .filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml')
      .sort();
    expect([...kustomization.resources].sort()).toEqual(manifests);
    expect(kustomization.namespace).toBe('kube-system');
  });

  it("sets the DaemonSet's image, tagged with the package version", () => {
    const image = kustomization.images?.find((i) => i.name === container.image);
    expect(image).toBeDefined();
    expect(image?.newTag).toBe(packageJson.version);
  });
});

describe('Containerfile', () => {
  const text = readFileSync(`${ROOT}Containerfile`, 'utf8');

  it('runs the Node version package.json pins', () => {
    expect(/^ARG NODE_VERSION=(\S+)$/m.exec(text)?.[1]).toBe(packageJson.dependencies['node']);
  });

  it('starts the CLI the DaemonSet passes its arguments to, through bin/kproxy (its V8 and malloc settings)', () => {
    expect(text).toMatch(/^ENTRYPOINT \["\/app\/bin\/kproxy"\]$/m);
    expect(text).toMatch(/^COPY bin\/ \.\/bin\/$/m);
    // Without the node package (removed in the image) it runs the node on PATH.
    expect(readFileSync(`${ROOT}bin/kproxy`, 'utf8')).toContain('[ -x "$node" ] || node=node');
    expect(readFileSync(`${ROOT}src/cli/main.ts`, 'utf8')).toContain('import.meta.main');
  });

  it('ships the rules templates every mode loads at start', () => {
    expect(text).toMatch(/^COPY rules-templates\/ \.\/rules-templates\/$/m);
  });
});
