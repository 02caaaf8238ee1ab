/**
 * @module util/json-size
 */

/** How many characters of JSON one string or number takes. */
interface Measure {
  string(s: string): number;
  number(n: number): number;
}

/** At most: every character escaped as \uXXXX, the longest number JavaScript prints (25). */
const AT_MOST: Measure = { string: (s) => 6 * s.length + 2, number: () => 25 };
const EXACTLY: Measure = { string: jsonStringLength, number: (n) => String(n).length };

/**
 * Whether `value` (as `JSON.parse` returns it) is more than `limit` characters of JSON, counted as
 * `JSON.stringify(value).length` counts them but without writing the string. A first walk counts
 * an upper bound (no escape scan, no number printing; on the bench's API objects 3–5× cheaper
 * than `JSON.stringify`), which settles every object under a sixth of the limit; only an object it
 * cannot settle is counted exactly. Each walk stops once past the limit and is iterative (no
 * recursion, so deep nesting costs no stack).
 */
export function jsonLongerThan(value: unknown, limit: number): boolean {
  return jsonLength(value, limit, AT_MOST) > limit && jsonLength(value, limit, EXACTLY) > limit;
}

/** The length of `value`'s JSON as `measure` counts strings and numbers, or more than `limit` once past it. */
function jsonLength(value: unknown, limit: number, measure: Measure): number {
  let size = 0;
  const pending: unknown[] = [value];
  while (pending.length > 0 && size <= limit) {
    const v = pending.pop();
    if (typeof v === 'string') size += measure.string(v);
    else if (typeof v === 'number') size += measure.number(v);
    else if (typeof v === 'boolean') size += v ? 4 : 5;
    else if (Array.isArray(v)) {
      size += 1 + Math.max(1, v.length); // brackets and commas
      for (const item of v) pending.push(item);
    } else if (typeof v === 'object' && v !== null) {
      let keys = 0;
      for (const key in v) {
        keys += 1;
        size += measure.string(key) + 1; // and the colon
        pending.push((v as Record<string, unknown>)[key]);
      }
      size += 1 + Math.max(1, keys); // braces and commas
    } else size += 4; // null
  }
  return size;
}

/** Any character JSON.stringify may escape: the quote, the backslash, controls, surrogates (when lone). */
const MAY_ESCAPE = /[^\x20\x21\x23-\x5b\x5d-\ud7ff\ue000-\uffff]/;

/** Controls JSON.stringify writes as two characters (\b \t \n \f \r); the others take six (\u00XX). */
const SHORT_ESCAPES = new Set([0x08, 0x09, 0x0a, 0x0c, 0x0d]);

/** `JSON.stringify(s).length`, without the string. */
function jsonStringLength(s: string): number {
  let length = s.length + 2;
  if (!MAY_ESCAPE.test(s)) return length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22 || c === 0x5c) length += 1;
    else if (c < 0x20) length += SHORT_ESCAPES.has(c) ? 1 : 5;
    else if (c >= 0xd800 && c <= 0xdfff) {
      // A well-formed pair is written as is, a lone surrogate as \uDXXX.
      const next = s.charCodeAt(i + 1);
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) i++;
      else length += 5;
    }
  }
  return length;
}
