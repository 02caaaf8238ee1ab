/**
 * @module cli/commands/cluster-input
 * One snapshot of the cluster for the commands that look without programming (`explain`, `diff`):
 * from a manifest directory, or listed once from the API server (`--kubeconfig`, `--master`,
 * in-cluster), the way `kproxy run` reads it. Problems with objects are logged and the objects skipped.
 */
import type { Loaded } from '../../config/load.ts';
import type { ClusterSnapshot } from '../../model/cluster.ts';
import { readManifestDir } from '../../source/manifests.ts';
import { buildSnapshot } from '../../source/normalize.ts';
import type { Logger } from '../../util/log.ts';
import { formatProblem } from '../../util/problems.ts';

/** How long the API server gets to list everything once. */
const API_SYNC_TIMEOUT_MS = 60_000;

/** The snapshot from `dir` (a manifest directory), or from the API server when `dir` is undefined. */
export async function clusterSnapshot(
  loaded: Loaded,
  log: Logger,
  dir: string | undefined,
): Promise<ClusterSnapshot | undefined> {
  const nodeName = loaded.config.nodeName;
  let snapshot: ClusterSnapshot;
  if (dir !== undefined) {
    let read: Awaited<ReturnType<typeof readManifestDir>>;
    try {
      read = await readManifestDir(dir);
    } catch (err) {
      log.error({ dir }, err instanceof Error ? err.message : String(err));
      return undefined;
    }
    const built = buildSnapshot(read.objects, nodeName);
    for (const p of [...read.problems, ...built.problems])
      log.warn({ kind: p.kind, object: p.object, path: p.path || undefined }, `skipped: ${formatProblem(p)}`);
    snapshot = built.snapshot;
  } else {
    const [{ apiSource, whenSynced }, { apiConnection }] = await Promise.all([
      import('../../source/api-source.ts'),
      import('./kube-config.ts'),
    ]);
    const source = apiSource({ connection: await apiConnection(loaded), nodeName, log });
    try {
      await source.start();
      await whenSynced(source, AbortSignal.timeout(API_SYNC_TIMEOUT_MS));
      snapshot = source.snapshot();
    } catch (err) {
      log.error(`cannot list the cluster from the API server: ${err instanceof Error ? err.message : String(err)}`);
      return undefined;
    } finally {
      await source.stop();
    }
  }
  if (!snapshot.node) log.warn({ node: nodeName }, 'no Node object for this node: no node IPs, zone or podCIDRs');
  return snapshot;
}
