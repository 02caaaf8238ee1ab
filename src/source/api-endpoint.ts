/**
 * @module source/api-endpoint
 * The API server and credentials read from a plain kubeconfig (or the in-cluster service account)
 * by kproxy itself, without client-node, whose KubeConfig imports its whole generated API (~83 MiB
 * of RSS, 1-2 s of CPU; docs/adr/0007, 0013). Anything that is not plain yields undefined and the
 * caller falls back to client-node's KubeConfig.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { type ApiEndpoint, isRecord } from './api-http.ts';

export interface EndpointInput {
  /** `--kubeconfig` (or the config file's `clientConnection.kubeconfig`). */
  readonly kubeconfig?: string;
  /** `--master`: overrides the server address. */
  readonly master?: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly readFile?: (path: string) => Buffer;
}

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const CLUSTER_KEYS = new Set([
  'server',
  'certificate-authority',
  'certificate-authority-data',
  'insecure-skip-tls-verify',
  'tls-server-name',
  'extensions',
]);
const USER_KEYS = new Set([
  'token',
  'tokenFile',
  'client-certificate',
  'client-certificate-data',
  'client-key',
  'client-key-data',
  'extensions',
]);

/**
 * The API server and credentials, chosen as client-node would (`--kubeconfig`, else in-cluster,
 * else `$KUBECONFIG` or `~/.kube/config`; `--master` overrides the server), or undefined whenever
 * anything is not plain: exec or auth-provider credentials, basic auth, impersonation, a proxy,
 * several kubeconfig files, an unreadable file. Nothing is ever weaker than client-node's own
 * reading (TLS is verified unless the kubeconfig says `insecure-skip-tls-verify: true`).
 * Called again to refresh rotated credentials (`endpointConnection`'s reload).
 */
export async function plainEndpoint(input: EndpointInput): Promise<ApiEndpoint | undefined> {
  const read = input.readFile ?? ((path: string) => readFileSync(path));
  try {
    let endpoint: ApiEndpoint | undefined;
    if (input.kubeconfig) endpoint = await fromKubeconfigFile(input.kubeconfig, read);
    else if (input.env['KUBERNETES_SERVICE_HOST']) endpoint = inCluster(input.env, read);
    else {
      const paths = input.env['KUBECONFIG'];
      if (paths?.includes(':')) return undefined;
      endpoint = await fromKubeconfigFile(paths || join(homedir(), '.kube', 'config'), read);
    }
    if (endpoint && input.master) endpoint = { ...endpoint, server: input.master };
    return endpoint;
  } catch {
    return undefined;
  }
}

function inCluster(env: EndpointInput['env'], read: (path: string) => Buffer): ApiEndpoint | undefined {
  const host = env['KUBERNETES_SERVICE_HOST'] ?? '';
  const port = env['KUBERNETES_SERVICE_PORT'] ?? '443';
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    ca: read(`${SERVICE_ACCOUNT_DIR}/ca.crt`),
    token: read(`${SERVICE_ACCOUNT_DIR}/token`).toString('utf8').trim(),
    rejectUnauthorized: true,
  };
}
async function fromKubeconfigFile(path: string, read: (path: string) => Buffer): Promise<ApiEndpoint | undefined> {
  const { parse } = await import('yaml');
  const doc: unknown = parse(read(path).toString('utf8'));
  if (!isRecord(doc)) return undefined;
  const named = (list: unknown, name: unknown, field: string): Record<string, unknown> | undefined => {
    if (!Array.isArray(list)) return undefined;
    const hits = list.filter((e) => isRecord(e) && e['name'] === name);
    const hit = hits.length === 1 ? hits[0] : undefined;
    return isRecord(hit) && isRecord(hit[field]) ? hit[field] : undefined;
  };
  const context = named(doc['contexts'], doc['current-context'], 'context');
  if (!context) return undefined;
  const cluster = named(doc['clusters'], context['cluster'], 'cluster');
  const user = context['user'] === undefined ? {} : named(doc['users'], context['user'], 'user');
  if (!cluster || !user || typeof cluster['server'] !== 'string') return undefined;
  if (Object.keys(cluster).some((k) => !CLUSTER_KEYS.has(k))) return undefined;
  if (Object.keys(user).some((k) => !USER_KEYS.has(k))) return undefined;
  const base = dirname(path);
  const file = (p: unknown): Buffer | undefined =>
    typeof p === 'string' && p !== '' ? read(isAbsolute(p) ? p : join(base, p)) : undefined;
  const data = (d: unknown): Buffer | undefined =>
    typeof d === 'string' && d !== '' ? Buffer.from(d, 'base64') : undefined;
  const ca = data(cluster['certificate-authority-data']) ?? file(cluster['certificate-authority']);
  const cert = data(user['client-certificate-data']) ?? file(user['client-certificate']);
  const key = data(user['client-key-data']) ?? file(user['client-key']);
  const token =
    typeof user['token'] === 'string' && user['token'] !== ''
      ? user['token']
      : file(user['tokenFile'])?.toString('utf8').trim();
  const insecure = cluster['insecure-skip-tls-verify'];
  if (insecure !== undefined && typeof insecure !== 'boolean') return undefined;
  const servername = cluster['tls-server-name'];
  return {
    server: cluster['server'],
    ...(ca ? { ca } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
    ...(token ? { token } : {}),
    ...(typeof servername === 'string' && servername !== '' ? { servername } : {}),
    rejectUnauthorized: insecure !== true,
  };
}
