/**
 * @module backends/nftables/render/elements-digest
 * A set's elements summed up in a few bytes, so a read-back can say "the kernel holds exactly
 * these" without sending ~730k element texts (50,000 Services) from the process that read them
 * to the one that compares them (ADR 0014). The digest is the element count and, per seed, the
 * sum modulo 2^32 of a 32-bit hash of every element's text: independent of order, and it counts
 * repeats. Seeds are drawn at random by the reader and never leave kproxy, so nobody who creates
 * Services can steer element texts onto a collision. Pure.
 */

/** Two 32-bit seeds: the digest carries 64 bits of hash besides the count. */
export type DigestSeeds = readonly [number, number];

export interface ElementsDigest {
  readonly seeds: DigestSeeds;
  readonly count: number;
  /** Per seed, the sum of the elements' hashes (unsigned 32-bit). */
  readonly sums: readonly [number, number];
}

export function elementsDigest(elements: readonly string[], seeds: DigestSeeds): ElementsDigest {
  let a = 0;
  let b = 0;
  for (let e = 0; e < elements.length; e++) {
    const text = elements[e] as string;
    // MurmurHash3 (x86, 32-bit) under both seeds at once, over UTF-16 code units two per block.
    let h = seeds[0];
    let g = seeds[1];
    const n = text.length;
    let i = 0;
    for (; i + 1 < n; i += 2) {
      const k = scramble(text.charCodeAt(i) | (text.charCodeAt(i + 1) << 16));
      h ^= k;
      h = (h << 13) | (h >>> 19);
      h = (Math.imul(h, 5) + 0xe6546b64) | 0;
      g ^= k;
      g = (g << 13) | (g >>> 19);
      g = (Math.imul(g, 5) + 0xe6546b64) | 0;
    }
    if (i < n) {
      const k = scramble(text.charCodeAt(i));
      h ^= k;
      g ^= k;
    }
    a = (a + finish(h ^ n)) >>> 0;
    b = (b + finish(g ^ n)) >>> 0;
  }
  return { seeds, count: elements.length, sums: [a, b] };
}

/** Digests of rendered element lists (immutable), so a sync that asks twice sums once. */
const computed = new WeakMap<readonly string[], ElementsDigest>();

/** Whether `elements` sum up to `digest` (computed with the digest's own seeds). */
export function holdsExactly(digest: ElementsDigest, elements: readonly string[]): boolean {
  if (elements.length !== digest.count) return false;
  let mine = computed.get(elements);
  if (!mine || mine.seeds[0] !== digest.seeds[0] || mine.seeds[1] !== digest.seeds[1]) {
    mine = elementsDigest(elements, digest.seeds);
    computed.set(elements, mine);
  }
  return mine.sums[0] === digest.sums[0] && mine.sums[1] === digest.sums[1];
}

function scramble(k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, 0x1b873593);
}

function finish(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
