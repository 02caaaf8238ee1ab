// Vitest glue: build a topology for a describe block / file and always tear it down.
import { afterAll, beforeAll } from 'vitest';
import { createTopology, type Topology, type TopologyOptions } from '../../src/sandbox/topology.ts';

/**
 * Registers beforeAll (build) and afterAll (destroy, even when tests failed) in the current
 * describe scope and returns an accessor. Call at collection time (top level or in describe()).
 *
 *   const topo = useTopology({ pods: 3 });
 *   it('...', async () => { await topo().probe(topo().client(), {...}); });
 */
export function useTopology(opts: TopologyOptions = {}, buildTimeoutMs = 30_000): () => Topology {
  let topo: Topology | undefined;
  beforeAll(async () => {
    topo = await createTopology(opts);
  }, buildTimeoutMs);
  afterAll(async () => {
    await topo?.destroy();
  });
  return () => {
    if (topo === undefined) throw new Error('topology not built (beforeAll failed or not run yet)');
    return topo;
  };
}

/** Register teardown for a topology built some other way (call at collection time). */
export function destroyAfterAll(get: () => Topology | undefined): void {
  afterAll(async () => {
    await get()?.destroy();
  });
}
