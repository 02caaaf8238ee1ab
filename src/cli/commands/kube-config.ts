/**
 * @module cli/commands/kube-config
 * Reaching the API server the standard client-node way, for every command that reads from it.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { Loaded } from '../../config/load.ts';

/** --kubeconfig, else in-cluster, else the default chain; --master overrides the server. */
export function loadKubeConfig(kc: KubeConfig, loaded: Loaded): KubeConfig {
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
