import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { jsonLongerThan } from '../../src/util/json-size.ts';

/** Agrees with `JSON.stringify(v).length > limit` exactly at the boundary. */
function agreesAtBoundary(v: unknown): boolean {
  const length = JSON.stringify(v).length;
  return !jsonLongerThan(v, length) && jsonLongerThan(v, length - 1);
}

describe('jsonLongerThan', () => {
  it('counts as JSON.stringify does, for any JSON value and limit', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.nat(500), (v, limit) => {
        return jsonLongerThan(v, limit) === JSON.stringify(v).length > limit && agreesAtBoundary(v);
      }),
      { numRuns: 5000 },
    );
  });

  it('counts escapes: quotes, backslashes, controls, lone and paired surrogates, in keys and values', () => {
    const text = fc.string({ unit: 'binary' });
    fc.assert(fc.property(fc.dictionary(text, fc.array(text)), agreesAtBoundary), { numRuns: 2000 });
    expect(agreesAtBoundary({ 'a"\\\n\u0001': ['\ud83d\ude00', '\ud83d', '\ude00x', '\b\t\f\r', ''] })).toBe(true);
  });

  it('stops early on a huge string and has no depth limit', () => {
    expect(jsonLongerThan({ blob: 'x'.repeat(3_000_000) }, 2_000_000)).toBe(true);
    let deep: unknown = [];
    for (let i = 0; i < 200_000; i++) deep = [deep];
    expect(jsonLongerThan(deep, 1_000_000)).toBe(false);
    expect(jsonLongerThan(deep, 399_999)).toBe(true);
  });
});
