/**
 * kproxy diff --against: what changes in this node's desired state from one snapshot to another,
 * each difference attributed to the object fields that caused it (model/object-changes.ts and
 * explain/state-diff.ts).
 */
import { describe, expect, it } from 'vitest';
import type { ClusterSnapshot } from '../../src/model/cluster.ts';
import { objectChangeLines, objectChanges } from '../../src/model/object-changes.ts';
import { diffDesired, stateDiffText } from '../../src/explain/state-diff.ts';
import { nodeStates } from '../../src/proxy/desired.ts';
import type { ProxyConfig } from '../../src/config/proxy-config.ts';
import {
  ep,
  local,
  node,
  NODE,
  options,
  remote,
  service,
  serviceCIDR,
  slice,
  snapshot,
} from '../support/cluster-builders.ts';

const config = { ...options({ clusterCIDRs: ['10.244.0.0/16'] }) } as unknown as ProxyConfig;

const side = (snap: ClusterSnapshot) => ({ snapshot: snap, states: nodeStates(snap, config) });

function cluster(
  eps = [local('10.1.2.3'), remote('10.1.2.4')],
  init: Parameters<typeof service>[1] = {},
  extra: { zone?: string; cidrs?: string[] } = {},
): ClusterSnapshot {
  return snapshot({
    services: [service('web', init), service('other', { clusterIPs: ['10.96.0.11'] })],
    slices: [slice('web', eps, { name: 'web-abc' }), slice('other', [local('10.1.9.9')], { name: 'other-1' })],
    node: node({ zone: extra.zone ?? 'zone-a' }),
    serviceCIDRs: [serviceCIDR('kubernetes', ...(extra.cidrs ?? ['10.96.0.0/16']))],
  });
}

describe('objectChanges', () => {
  it('names the API field that changed, per object', () => {
    const before = cluster();
    const after = cluster([ep('10.1.2.3', { node: NODE, ready: false }), remote('10.1.2.4')], {
      ports: [{ name: 'http', protocol: 'TCP', port: 81 }],
    });
    expect(objectChanges(before, after).flatMap(objectChangeLines)).toEqual([
      'Service default/web: spec.ports[0].port 80 → 81',
      'EndpointSlice default/web-abc: endpoint 10.1.2.3 ready true → false',
    ]);
  });

  it('objects added and removed; the same objects (by reference) are not even looked into', () => {
    const before = cluster();
    const after: ClusterSnapshot = {
      ...before,
      services: [...before.services, service('new', { clusterIPs: ['10.96.0.99'] })],
      endpointSlices: before.endpointSlices.filter((s) => s.name !== 'other-1'),
    };
    expect(objectChanges(before, after).flatMap(objectChangeLines)).toEqual([
      'Service default/new: added',
      'EndpointSlice default/other-1: removed',
    ]);
    expect(objectChanges(before, before)).toEqual([]);
  });

  it('a scope of Services limits the comparison to them and their slices', () => {
    const before = cluster();
    const after = cluster([local('10.1.2.3')], { externalIPs: ['203.0.113.5'] });
    expect(
      objectChanges(before, after, { services: new Set(['default/other']), node: false, serviceCIDRs: false }),
    ).toEqual([]);
    expect(objectChanges(before, after, { services: new Set(['default/web']) }).map((c) => c.kind)).toEqual([
      'Service',
      'EndpointSlice',
    ]);
  });
});

describe('diffDesired', () => {
  it('an endpoint going not ready: the service port loses it, because of the slice field', () => {
    const d = diffDesired(
      side(cluster()),
      side(cluster([ep('10.1.2.3', { node: NODE, ready: false, serving: false }), remote('10.1.2.4')])),
    );
    expect(d.ports).toEqual([
      {
        key: 'default/web:http',
        family: 'ipv4',
        change: 'modified',
        differences: [
          'internal endpoints (cluster) −10.1.2.3:8080 (local)',
          'serving endpoints (kept by conntrack cleanup) −10.1.2.3:8080 (local)',
          'ready local endpoints (health checks) 1 → 0',
        ],
        causes: [
          'EndpointSlice default/web-abc: endpoint 10.1.2.3 ready true → false',
          'EndpointSlice default/web-abc: endpoint 10.1.2.3 serving true → false',
        ],
      },
    ]);
    expect(d.contexts).toEqual([]);
    expect(d.withoutEffect).toEqual([]);
    const text = stateDiffText(d);
    expect(text).toContain('Service port default/web:http (IPv4):');
    expect(text).toContain('  because EndpointSlice default/web-abc: endpoint 10.1.2.3 ready true → false');
  });

  it("a Service's port changes: spec.ports[0].port 80 → 81", () => {
    const d = diffDesired(
      side(cluster()),
      side(cluster(undefined, { ports: [{ name: 'http', protocol: 'TCP', port: 81 }] })),
    );
    expect(d.ports.map((p) => [p.key, p.differences, p.causes])).toEqual([
      ['default/web:http', ['port 80 → 81'], ['Service default/web: spec.ports[0].port 80 → 81']],
    ]);
  });

  it("a Node's zone label: the ports its topology changes are attributed to the Node", () => {
    const hinted = [local('10.1.2.3', { forZones: ['zone-a'] }), remote('10.1.2.4', { forZones: ['zone-b'] })];
    const d = diffDesired(side(cluster(hinted)), side(cluster(hinted, {}, { zone: 'zone-b' })));
    expect(d.ports.map((p) => p.key)).toEqual(['default/web:http']);
    expect(d.ports[0]?.causes).toEqual(['Node node-a: metadata.labels[topology.kubernetes.io/zone] zone-a → zone-b']);
  });

  it('ServiceCIDRs change the node context; a change that affects no rule is listed as such', () => {
    const d = diffDesired(side(cluster()), side(cluster(undefined, {}, { cidrs: ['10.96.0.0/12'] })));
    expect(d.contexts).toEqual([
      {
        family: 'ipv4',
        differences: ['ServiceCIDRs [10.96.0.0/16] → [10.96.0.0/12]'],
        causes: ['ServiceCIDR kubernetes: spec.cidrs 10.96.0.0/16 → 10.96.0.0/12'],
      },
    ]);
    const none = diffDesired(
      side(cluster()),
      side(
        cluster([
          local('10.1.2.3'),
          remote('10.1.2.4'),
          ep('10.1.2.5', { node: 'node-b', ready: false, serving: false }),
        ]),
      ),
    );
    expect(none.ports).toEqual([]);
    expect(none.withoutEffect).toEqual([
      'EndpointSlice default/web-abc: endpoint 10.1.2.5 added (not ready, node node-b)',
    ]);
    expect(stateDiffText(diffDesired(side(cluster()), side(cluster())))).toBe('No differences.\n');
  });
});
