/**
 * The digest a netlink read gives for a set's elements (render/elements-digest.ts, ADR 0014):
 * the same for the same elements in any order, different when one element differs, is missing or
 * repeats, and different under other seeds.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { elementsDigest, holdsExactly } from '../../src/backends/nftables/render/elements-digest.ts';

const seeds = [0x9e3779b9, 0x7f4a7c15] as const;
const element = fc.string({ minLength: 1, maxLength: 48 });
const elements = fc.uniqueArray(element, { minLength: 1, maxLength: 200 });

describe('elementsDigest', () => {
  it('does not depend on the order', () => {
    fc.assert(
      fc.property(elements, fc.integer(), (list, shift) => {
        const at = Math.abs(shift) % list.length;
        const rotated = [...list.slice(at), ...list.slice(0, at)].reverse();
        expect(holdsExactly(elementsDigest(list, seeds), rotated)).toBe(true);
      }),
    );
  });

  it('tells a changed, missing or repeated element', () => {
    fc.assert(
      fc.property(elements, element, (list, other) => {
        fc.pre(!list.includes(other));
        const digest = elementsDigest(list, seeds);
        expect(holdsExactly(digest, [...list.slice(1), other])).toBe(false);
        expect(holdsExactly(digest, list.slice(1))).toBe(false);
        expect(holdsExactly(digest, [...list.slice(1), list[1] ?? other])).toBe(false);
      }),
    );
  });

  it('tells one character changed in a typical element, and depends on the seeds', () => {
    const a = ['10.96.0.10 . tcp . 80 : 10.244.1.2 . 8080', '10.96.0.11 . udp . 53 : 10.244.1.3 . 53'];
    const b = ['10.96.0.10 . tcp . 80 : 10.244.1.3 . 8080', '10.96.0.11 . udp . 53 : 10.244.1.3 . 53'];
    expect(elementsDigest(a, seeds).sums).not.toEqual(elementsDigest(b, seeds).sums);
    expect(elementsDigest(a, seeds).sums).not.toEqual(elementsDigest(a, [1, 2]).sums);
    expect(elementsDigest([], seeds)).toEqual({ seeds, count: 0, sums: [0, 0] });
  });
});
