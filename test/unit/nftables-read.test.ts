/**
 * How nftables mode reads its table back (kernel/apply.ts): over netlink when a kernel call is
 * given, combining nft's declarations with the dump; through `nft -j list table` when the dump
 * cannot decode the table, when it fails, or when the table declares nothing. And what a plan
 * does with what was read (render/diff.ts).
 */
import { describe, expect, it } from 'vitest';
import { NftablesApplier } from '../../src/backends/nftables/kernel/apply.ts';
import { Nft } from '../../src/backends/nftables/kernel/nft.ts';
import type { Exec } from '../../src/kernel/exec.ts';
import { planTransaction } from '../../src/backends/nftables/render/diff.ts';
import type { ObservedTable } from '../../src/backends/nftables/render/observed.ts';
import { chainFingerprint, type Ruleset } from '../../src/backends/nftables/render/ruleset.ts';
import type { KernelCall } from '../../src/kernel/kernel-calls.ts';
import type { DumpRequest } from '../../src/backends/nftables/kernel/netlink-dump.ts';
import { elementsDigest } from '../../src/backends/nftables/render/elements-digest.ts';
import { runCase } from '../support/golden.ts';

const CHAIN = { chain: { family: 'ip', table: 'kproxy', name: 'services' } };
const MAP = { map: { family: 'ip', table: 'kproxy', name: 'target-ports', type: 'ipv4_addr', map: 'inet_service' } };
const FULL = {
  nftables: [
    CHAIN,
    { rule: { family: 'ip', table: 'kproxy', chain: 'services', comment: 'sum:from-nft' } },
    { map: { ...MAP.map, elem: [['10.0.0.1', 80]] } },
  ],
};

/** nft answering from canned listings; records what it was asked. */
function fakeNft(declares: boolean, asked: string[]): Nft {
  const exec: Exec = async (_file, args) => {
    asked.push(args.join(' '));
    const listing = args.includes('-t')
      ? { nftables: declares ? (args.includes('chains') ? [CHAIN] : args.includes('maps') ? [MAP] : []) : [] }
      : FULL;
    return { exitCode: 0, stdout: JSON.stringify(listing), stderr: '' };
  };
  return new Nft(exec);
}

const where = { family: 'ip', table: 'kproxy' } as const;
/** The desired table of these tests: the one map, holding `elements`. */
const desiring = (...elements: string[]): Ruleset => ({
  ...where,
  chains: [],
  sets: [
    {
      spec: { name: 'target-ports', keyType: ['ipv4_addr'], dataType: ['inet_service'], verdictMap: false, flags: [] },
      elements,
    },
  ],
});

/** A kernel dump holding `held` in the map, answering as asked (listed, or digests under the seeds). */
function dumping(held: string[], asked: DumpRequest[], generation = () => 5): KernelCall {
  return async <T>(name: string, args: unknown) => {
    if (name === 'nftGeneration') return generation() as T;
    const request = args as DumpRequest;
    asked.push(request);
    const elements = Object.fromEntries(
      request.sets.map((s) => [s.name, request.digestSeeds ? elementsDigest(held, request.digestSeeds) : held]),
    );
    return {
      chains: { services: { ruleCount: 2, fingerprint: 'sum:from-dump' } },
      elements,
      generation: generation(),
    } as T;
  };
}

describe('reading the nftables table back', () => {
  it('over netlink: the declarations from nft, rule counts, fingerprints and the elements as a digest from the dump', async () => {
    const asked: string[] = [];
    const dumps: DumpRequest[] = [];
    const applier = new NftablesApplier(fakeNft(true, asked), dumping(['10.0.0.2 : 8080'], dumps));
    const seen = await applier.observe(desiring('10.0.0.2 : 8080'));
    expect(seen?.chains.get('services')).toEqual({ ruleCount: 2, fingerprint: 'sum:from-dump' });
    const map = seen?.sets.get('target-ports');
    expect(map && 'digest' in map && map.digest.count).toBe(1);
    expect(dumps).toHaveLength(1);
    expect(asked.some((a) => a === '-j list table ip kproxy')).toBe(false);
    expect(planTransaction(desiring('10.0.0.2 : 8080'), seen).summary).toMatchObject({
      elementsAdded: 0,
      elementsDeleted: 0,
    });
  });

  it('lists the elements of a set whose digest differs from the desired, from the same generation', async () => {
    const dumps: DumpRequest[] = [];
    const applier = new NftablesApplier(fakeNft(true, []), dumping(['10.0.0.2 : 8080'], dumps));
    const desired = desiring('10.0.0.2 : 8080', '10.0.0.3 : 8080');
    const seen = await applier.observe(desired);
    expect(dumps.map((d) => [d.digestSeeds !== undefined, d.sets.map((s) => s.name)])).toEqual([
      [true, ['target-ports']],
      [false, ['target-ports']],
    ]);
    expect(seen?.sets.get('target-ports')).toMatchObject({ elements: new Set(['10.0.0.2 : 8080']) });
    expect(planTransaction(desired, seen).summary).toMatchObject({ elementsAdded: 1, elementsDeleted: 0 });
    // A plan never guesses: a digest that differs must have been listed.
    const digested = await new NftablesApplier(fakeNft(true, []), dumping(['10.0.0.2 : 8080'], [])).observe(
      desiring('10.0.0.2 : 8080'),
    );
    expect(() => planTransaction(desired, digested)).toThrow(/elements must be listed/);
  });

  it('reads the whole table again, listed, when a commit landed between the digest and the listing', async () => {
    const dumps: DumpRequest[] = [];
    // The second dump (the listing) sees the next generation.
    const moving = () => (dumps.length > 1 ? 6 : 5);
    const applier = new NftablesApplier(fakeNft(true, []), dumping(['10.0.0.2 : 8080'], dumps, moving));
    const seen = await applier.observe(desiring('10.0.0.3 : 8080'));
    expect(dumps.map((d) => d.digestSeeds !== undefined)).toEqual([true, false, false]);
    expect(seen?.sets.get('target-ports')).toMatchObject({ elements: new Set(['10.0.0.2 : 8080']) });
  });

  it('through nft when the dump cannot decode, when it fails, or when nothing is declared', async () => {
    const undecodable: KernelCall = async <T>() => ({ undecodable: 'set x: type mark' }) as T;
    const failing: KernelCall = async () => {
      throw new Error('readNftTable failed: libnftables could not be loaded');
    };
    for (const [call, declares] of [
      [undecodable, true],
      [failing, true],
      [undecodable, false],
    ] as const) {
      const asked: string[] = [];
      const seen = await new NftablesApplier(fakeNft(declares, asked), call).observe(desiring());
      expect(seen?.chains.get('services')).toEqual({ ruleCount: 1, fingerprint: 'sum:from-nft' });
      expect(seen?.sets.get('target-ports')).toMatchObject({ elements: new Set(['10.0.0.1 : 80']) });
      expect(asked).toContain('-j list table ip kproxy');
    }
  });
});

describe('reading ahead (a restart reads the kernel while its caches fill)', () => {
  /** A kernel whose ruleset generation the test moves; counts the dumps. */
  function kernel(): { call: KernelCall; dumps: () => number; commit: () => void } {
    let generation = 7;
    let dumps = 0;
    const call: KernelCall = async <T>(name: string) => {
      if (name === 'nftGeneration') return generation as T;
      dumps++;
      return {
        chains: { services: { ruleCount: 1, fingerprint: `sum:gen-${generation}` } },
        elements: { 'target-ports': [] },
        generation,
      } as T;
    };
    return { call, dumps: () => dumps, commit: () => void generation++ };
  }

  it('takes the reading made ahead when nothing was committed since, once', async () => {
    const k = kernel();
    const applier = new NftablesApplier(fakeNft(true, []), k.call);
    applier.prefetch(where);
    const seen = await applier.observe(desiring());
    expect(seen?.chains.get('services')?.fingerprint).toBe('sum:gen-7');
    expect(k.dumps()).toBe(1);
    await applier.observe(desiring());
    expect(k.dumps()).toBe(2);
  });

  it('reads again when the ruleset generation moved since the reading (anyone committed)', async () => {
    const k = kernel();
    const applier = new NftablesApplier(fakeNft(true, []), k.call);
    applier.prefetch(where);
    await new Promise((r) => setTimeout(r, 10));
    k.commit();
    const seen = await applier.observe(desiring());
    expect(seen?.chains.get('services')?.fingerprint).toBe('sum:gen-8');
    expect(k.dumps()).toBe(2);
  });

  it('never takes a reading whose dump saw another generation, nor one made before its own commit', async () => {
    let generation = 1;
    let dumps = 0;
    // A commit lands between the generation read before the declarations and the dump.
    const racing: KernelCall = async <T>(name: string) => {
      if (name === 'nftGeneration') return generation as T;
      dumps++;
      generation++;
      return { chains: {}, elements: { 'target-ports': [] }, generation } as T;
    };
    const applier = new NftablesApplier(fakeNft(true, []), racing);
    applier.prefetch(where);
    await applier.observe(desiring());
    expect(dumps).toBe(2);

    const k = kernel();
    const committing = new NftablesApplier(fakeNft(true, []), k.call);
    committing.prefetch(where);
    await committing.apply([]);
    await committing.observe(desiring());
    expect(k.dumps()).toBe(2);
  });
});

describe('planning against what was read', () => {
  const { ruleset } = runCase('clusterip-basic').desired.families[0] as { ruleset: Ruleset };
  /** What the kernel holds after committing `ruleset`, as a read reports it. */
  const asRead = (extra?: { set: string; text: string }): ObservedTable => ({
    chains: new Map(
      ruleset.chains.map((c) => [
        c.name,
        {
          ...(c.base ? { base: c.base } : {}),
          ruleCount: c.rules.length,
          ...(c.rules.length > 0 ? { fingerprint: chainFingerprint(c) } : {}),
        },
      ]),
    ),
    sets: new Map(
      ruleset.sets.map((s) => [
        s.spec.name,
        {
          spec: s.spec,
          elements: new Set([...s.elements, ...(extra?.set === s.spec.name ? [extra.text] : [])]),
        },
      ]),
    ),
  });

  it('plans nothing when the kernel holds what is desired, and deletes an element kproxy no longer wants', () => {
    expect(planTransaction(ruleset, asRead()).commands).toEqual([]);
    const plan = planTransaction(ruleset, asRead({ set: 'cluster-ips', text: '10.96.99.99' }));
    expect(plan.summary).toMatchObject({ kind: 'update', elementsDeleted: 1, elementsAdded: 0 });
  });

  it('replaces the table when an element to delete cannot be named safely', () => {
    const plan = planTransaction(ruleset, asRead({ set: 'cluster-ips', text: '10.96.0.1 } ; flush ruleset ; {' }));
    expect(plan.summary.kind).toBe('replace');
    expect(plan.reason).toBe('set cluster-ips holds an element kproxy did not write');
  });
});
