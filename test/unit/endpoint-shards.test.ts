/**
 * Endpoint maps split into shards above PORTS_PER_SHARD service ports (ADR 0008, "Sharded address maps"):
 * how many, which frontend goes where, and that a rendered table routes each frontend through the
 * map its elements are in. (Packets through sharded maps: the packet-flow suite's
 * `nftables-sharded` backend.)
 */
import { describe, expect, it } from 'vitest';
import { ENDPOINT_MAP, PORTS_PER_SHARD, endpointShards, shardOf } from '../../src/backends/nftables/render/names.ts';
import { renderNftables } from '../../src/backends/nftables/render/layout.ts';
import { bareState, numberedServicePorts } from '../support/states.ts';

describe('endpointShards', () => {
  it('is 1 up to PORTS_PER_SHARD ports, then doubles, up to 64', () => {
    expect(endpointShards(0)).toBe(1);
    expect(endpointShards(PORTS_PER_SHARD)).toBe(1);
    expect(endpointShards(PORTS_PER_SHARD + 1)).toBe(2);
    expect(endpointShards(2 * PORTS_PER_SHARD + 1)).toBe(4);
    expect(endpointShards(10_000)).toBe(16);
    expect(endpointShards(50_000)).toBe(64);
    expect(endpointShards(10_000_000)).toBe(64);
  });
});

describe('shardOf', () => {
  it('is fixed by the frontend text: a new version must not move every element', () => {
    // FNV-1a 32: pinned so that a change of the function shows here, not as a full rewrite of the maps.
    expect([1, 2, 4, 8, 16, 32, 64].map((k) => shardOf('10.96.0.1 . tcp . 80', k))).toEqual([0, 1, 3, 7, 15, 31, 31]);
    expect(shardOf('10.96.0.2 . udp . 53', 64)).toBe(52);
    expect(shardOf('anything', 1)).toBe(0);
  });

  it('spreads frontends evenly', () => {
    const counts = new Array<number>(16).fill(0);
    for (let i = 0; i < 16_000; i++) {
      const s = shardOf(`10.96.${i >> 8}.${i & 255} . tcp . 80`, 16);
      counts[s] = (counts[s] ?? 0) + 1;
    }
    for (const c of counts) expect(c).toBeGreaterThan(800);
  });
});

describe('a table past PORTS_PER_SHARD ports', () => {
  const ports = numberedServicePorts(PORTS_PER_SHARD + 1);
  const { ruleset } = renderNftables(bareState(ports));
  const maps = ruleset.sets.filter((s) => s.spec.name.startsWith(`${ENDPOINT_MAP.addresses}-`));

  it('declares one address map per shard, each holding its frontends', () => {
    expect(maps.map((m) => m.spec.name)).toEqual([`${ENDPOINT_MAP.addresses}-0`, `${ENDPOINT_MAP.addresses}-1`]);
    for (const [shard, map] of maps.entries()) {
      expect(map.elements.length).toBeGreaterThan(0);
      for (const e of map.elements) expect(shardOf(e.slice(0, e.lastIndexOf(' . ')), 2)).toBe(shard);
    }
    expect(maps.reduce((n, m) => n + m.elements.length, 0)).toBe(ports.length);
    expect(ruleset.sets.some((s) => s.spec.name === ENDPOINT_MAP.addresses)).toBe(false);
  });

  it("routes each frontend to a DNAT chain that reads its shard's map", () => {
    const dnat = (shard: number) => ruleset.chains.find((c) => c.name === `dnat-s${shard}-1`);
    for (const shard of [0, 1]) {
      const text = JSON.stringify(dnat(shard)?.rules);
      expect(text).toContain(`@${ENDPOINT_MAP.addresses}-${shard}`);
      expect(text).not.toContain(`@${ENDPOINT_MAP.addresses}-${1 - shard}`);
    }
    const vmap = ruleset.sets.find((s) => s.spec.verdictMap && s.elements.some((e) => e.includes('goto dnat-s')));
    expect(vmap).toBeDefined();
    for (const e of vmap?.elements ?? []) {
      const m = /^(.*) : goto dnat-s(\d+)-1$/.exec(e);
      if (m) expect(shardOf(m[1] ?? '', 2)).toBe(Number(m[2]));
    }
  });
});
