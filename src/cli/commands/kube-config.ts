/**
 * @module cli/commands/kube-config
 * Reaching the API server, for every command that reads from it: kproxy's own reading of a plain
 * kubeconfig (or the in-cluster service account) when it can, client-node's KubeConfig otherwise
 * (exec and auth-provider credentials, several kubeconfig files...; docs/adr/0013).
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { Loaded } from '../../config/load.ts';
import { plainEndpoint } from '../../source/api-endpoint.ts';
import { type ApiConnection, endpointConnection, kubeConfigConnection } from '../../source/api-http.ts';

/** --kubeconfig, else in-cluster, else the default chain; --master overrides the server. */
export async function apiConnection(
  loaded: Loaded,
  env: Readonly<Record<string, string | undefined>> = process.env,
): Promise<ApiConnection> {
  const input = {
    ...(loaded.kubeconfig ? { kubeconfig: loaded.kubeconfig } : {}),
    ...(loaded.master ? { master: loaded.master } : {}),
    env,
  };
  const endpoint = await plainEndpoint(input);
  if (endpoint) return endpointConnection(endpoint, () => plainEndpoint(input));
  const { KubeConfig } = await import('@kubernetes/client-node');
  return kubeConfigConnection(loadKubeConfig(new KubeConfig(), loaded));
}

function loadKubeConfig(kc: KubeConfig, loaded: Loaded): KubeConfig {
  if (loaded.kubeconfig) kc.loadFromFile(loaded.kubeconfig);
  else if (process.env['KUBERNETES_SERVICE_HOST']) kc.loadFromCluster();
  else kc.loadFromDefault();
  if (loaded.master) {
    const cluster = kc.getCurrentCluster();
    kc.loadFromClusterAndUser(
      { ...(cluster ?? { name: 'master', skipTLSVerify: false }), server: loaded.master },
      kc.getCurrentUser() ?? { name: 'anonymous' },
    );
  }
  return kc;
}
