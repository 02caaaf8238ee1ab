/**
 * The incremental List decoder: the same items and members as `JSON.parse` for any List split
 * anywhere (mid character, mid escape), and a ListDecodeError for anything `JSON.parse` would
 * refuse or that is not a List, with the failure sticking.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ListDecodeError, ListDecoder } from '../../src/source/list-decoder.ts';

const encoder = new TextEncoder();

interface Decoded {
  readonly items: unknown[];
  readonly members: Record<string, unknown>;
}

/** Decodes `body` fed in the given chunks (cut positions, ascending). */
function decode(body: Uint8Array | string, cuts: readonly number[] = []): Decoded {
  const bytes = typeof body === 'string' ? encoder.encode(body) : body;
  const items: unknown[] = [];
  const decoder = new ListDecoder((item) => items.push(item));
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    decoder.write(bytes.subarray(from, cut));
    from = cut;
  }
  return { items, members: decoder.end() };
}

/** Decodes `body` one byte at a time. */
function decodeBytewise(body: string): Decoded {
  const bytes = encoder.encode(body);
  return decode(
    bytes,
    Array.from({ length: bytes.length }, (_, i) => i),
  );
}

/** What JSON.parse makes of the same body, split the same way. */
function expected(text: string): Decoded {
  const { items, ...members } = JSON.parse(text) as { items: unknown[] | null };
  return { items: items ?? [], members };
}

/** A tiny deterministic PRNG, so one fast-check integer drives whitespace, escapes and cuts. */
function prng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

const WHITESPACE = ['', '', '', ' ', '\n', '\t', '\r\n', '  \n  '];
const SHORT_ESCAPES: Record<string, string> = {
  '"': '\\"',
  '\\': '\\\\',
  '/': '\\/',
  '\b': '\\b',
  '\f': '\\f',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
};

/** JSON text for `value` with random whitespace between tokens and random (valid) escapes in strings. */
function serialize(value: unknown, rand: (n: number) => number): string {
  const ws = () => WHITESPACE[rand(WHITESPACE.length)];
  const str = (s: string): string => {
    let out = '"';
    for (const ch of s) {
      const code = ch.codePointAt(0) as number;
      const choice = rand(6);
      if (choice === 0) {
        // \u escapes, as a surrogate pair for astral characters.
        for (let k = 0; k < ch.length; k++) out += `\\u${ch.charCodeAt(k).toString(16).padStart(4, '0')}`;
      } else if (choice === 1 && SHORT_ESCAPES[ch] !== undefined) out += SHORT_ESCAPES[ch];
      else if (code < 0x20 || ch === '"' || ch === '\\') out += JSON.stringify(ch).slice(1, -1);
      else out += ch;
    }
    return `${out}"`;
  };
  const go = (v: unknown): string => {
    if (typeof v === 'string') return str(v);
    if (typeof v === 'number') {
      const s = JSON.stringify(v);
      return rand(4) === 0 && !/[eE.]/.test(s) ? `${s}${['e0', 'E+0', '.0e-0', '.000'][rand(4)]}` : s;
    }
    if (v === null || typeof v === 'boolean') return JSON.stringify(v);
    if (Array.isArray(v)) return `[${ws()}${v.map((x) => go(x)).join(`${ws()},${ws()}`)}${ws()}]`;
    const entries = Object.entries(v as Record<string, unknown>).map(([k, x]) => `${str(k)}${ws()}:${ws()}${go(x)}`);
    return `{${ws()}${entries.join(`${ws()},${ws()}`)}${ws()}}`;
  };
  return go(value);
}

/** A List body: `members` (duplicates allowed) with `items` inserted at `itemsAt`, serialized with `rand`. */
function listBody(
  items: unknown,
  members: readonly [string, unknown][],
  itemsAt: number,
  rand: (n: number) => number,
): string {
  const all: [string, unknown][] = [...members];
  all.splice(Math.min(itemsAt, all.length), 0, ['items', items]);
  const ws = () => WHITESPACE[rand(WHITESPACE.length)];
  const parts = all.map(([k, v]) => `${serialize(k, rand)}${ws()}:${ws()}${serialize(v, rand)}`);
  return `${ws()}{${ws()}${parts.join(`${ws()},${ws()}`)}${ws()}}${ws()}`;
}

/** Random cut positions in a body of `length` bytes. */
function cutsOf(length: number, rand: (n: number) => number): number[] {
  const count = rand(Math.min(length, 40) + 1);
  return [...new Set(Array.from({ length: count }, () => rand(length + 1)))].sort((a, b) => a - b);
}

/** Any code point, astral ones included, with JSON's structural and escaped characters made frequent. */
const unit = fc.oneof(
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
  fc.constantFrom('"', '\\', '/', '{', '}', '[', ']', ',', ':', '\n', '\u0000', 'é', '€', '😀'),
);
const unicodeJson = fc.jsonValue({ stringUnit: unit, maxDepth: 4 });
const memberKey = fc
  .oneof(fc.string({ unit }), fc.constantFrom('kind', 'apiVersion', 'metadata', '__proto__', 'item', 'itemsx'))
  .filter((key) => key !== 'items');
const members = fc.array(fc.tuple(memberKey, unicodeJson), { maxLength: 5 });

function expectListError(body: string | Uint8Array): void {
  expect(() => decode(body)).toThrow(ListDecodeError);
  if (typeof body === 'string') expect(() => decodeBytewise(body)).toThrow(ListDecodeError);
}

describe('ListDecoder', () => {
  it('decodes like JSON.parse for any List, whitespace, escapes and chunking', () => {
    fc.assert(
      fc.property(
        fc.array(unicodeJson, { maxLength: 8 }),
        members,
        fc.nat(6),
        fc.integer(),
        (items, others, itemsAt, seed) => {
          const rand = prng(seed);
          const text = listBody(items, others, itemsAt, rand);
          const bytes = encoder.encode(text);
          const want = expected(text);
          const got = decode(bytes, cutsOf(bytes.length, rand));
          expect(got.items).toEqual(want.items);
          expect(got.members).toEqual(want.members);
          expect(Object.keys(got.members)).toEqual(Object.keys(want.members));
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('decodes like JSON.parse when fed one byte at a time', () => {
    fc.assert(
      fc.property(
        fc.array(unicodeJson, { maxLength: 4 }),
        members,
        fc.nat(6),
        fc.integer(),
        (items, others, at, seed) => {
          const text = listBody(items, others, at, prng(seed));
          expect(decodeBytewise(text)).toEqual(expected(text));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('hands each item over as soon as its last byte arrives', () => {
    const items: unknown[] = [];
    const decoder = new ListDecoder((item) => items.push(item));
    decoder.write(encoder.encode('{"kind":"ServiceList","items":[{"a":1}'));
    expect(items).toEqual([{ a: 1 }]);
    decoder.write(encoder.encode(', "x" ,[2'));
    expect(items).toEqual([{ a: 1 }, 'x']);
    decoder.write(encoder.encode('], 3'));
    expect(items).toHaveLength(3);
    decoder.write(encoder.encode(']'));
    expect(items).toEqual([{ a: 1 }, 'x', [2], 3]);
    decoder.write(encoder.encode(',"metadata":{"resourceVersion":"42"}}\n'));
    expect(decoder.end()).toEqual({ kind: 'ServiceList', metadata: { resourceVersion: '42' } });
  });

  it('splits mid multi-byte character, mid escape and mid key', () => {
    const text =
      '{"met\\u0061data":{"n":"é😀\\\\\\"x"},"it\\u0065ms":["😀","\\ud83d\\ude00",{"k\\"":"\\u00e9"},"\\ud800"]}';
    const want = expected(text);
    expect(want.items).toHaveLength(4);
    const bytes = encoder.encode(text);
    for (let a = 0; a <= bytes.length; a++) {
      for (const b of [a, a + 1, a + 2, a + 3, a + 7]) {
        expect(decode(bytes, b <= bytes.length ? [a, b] : [a])).toEqual(want);
      }
    }
  });

  it('takes a Buffer, a Uint8Array view into a larger buffer, and empty chunks', () => {
    const backing = new Uint8Array(64).fill(0x78);
    const body = encoder.encode('{"items":[1,{"a":"b"}],"kind":"L"}');
    backing.set(body, 10);
    const items: unknown[] = [];
    const decoder = new ListDecoder((item) => items.push(item));
    decoder.write(new Uint8Array(0));
    decoder.write(backing.subarray(10, 20));
    decoder.write(Buffer.alloc(0));
    decoder.write(Buffer.from(backing.subarray(20, 10 + body.length)));
    expect(decoder.end()).toEqual({ kind: 'L' });
    expect(items).toEqual([1, { a: 'b' }]);
  });

  it('decodes a large item spanning many chunks, and deep nesting', () => {
    const big = { metadata: { name: 'x'.repeat(200_000), list: Array.from({ length: 5000 }, (_, i) => ({ i })) } };
    let deep: unknown = 'bottom';
    for (let i = 0; i < 2000; i++) deep = i % 2 === 0 ? [deep] : { d: deep };
    const text = JSON.stringify({ items: [big, deep, big], metadata: {} });
    const bytes = encoder.encode(text);
    const cuts = Array.from({ length: Math.floor(bytes.length / 4096) }, (_, i) => (i + 1) * 4096);
    expect(decode(bytes, cuts)).toEqual(expected(text));
  });

  it('takes items null or empty as an empty list, and keeps other members in any order', () => {
    expect(decode('{"items":null}')).toEqual({ items: [], members: {} });
    expect(decode(' {"kind":"L", "items" : null , "metadata":{}} ')).toEqual({
      items: [],
      members: { kind: 'L', metadata: {} },
    });
    expect(decode('{"items":[]}')).toEqual({ items: [], members: {} });
    expect(decode('{"metadata":{"resourceVersion":"1"},"items":[ ],"kind":"L"}')).toEqual({
      items: [],
      members: { metadata: { resourceVersion: '1' }, kind: 'L' },
    });
  });

  it('keeps the last of duplicate members, as JSON.parse does, and "__proto__" as data', () => {
    const text = '{"kind":"A","items":[],"kind":"B","__proto__":{"polluted":true}}';
    const { members } = decode(text);
    expect(members).toEqual(expected(text).members);
    expect(members['kind']).toBe('B');
    expect(Object.getPrototypeOf(members)).toBe(Object.prototype);
    expect(Object.hasOwn(members, '__proto__')).toBe(true);
  });

  it('refuses a missing, repeated or non-array items member', () => {
    for (const body of [
      '{}',
      '{"kind":"L"}',
      '{"Items":[]}',
      '{"items":[],"items":[]}',
      '{"items":null,"items":[]}',
      '{"items":{}}',
      '{"items":"[]"}',
      '{"items":1}',
      '{"items":true}',
      '{"items":nul}',
      '{"items":nullx}',
    ]) {
      expectListError(body);
    }
  });

  it('refuses bodies that are not a JSON object', () => {
    for (const body of [
      '',
      '   ',
      '[]',
      '[{"items":[]}]',
      '"items"',
      'null',
      '1',
      '\ufeff{"items":[]}',
      'x{"items":[]}',
    ]) {
      expectListError(body);
    }
  });

  it('refuses stray or missing commas and colons', () => {
    for (const body of [
      '{"items":[{},,{}]}',
      '{"items":[{} {}]}',
      '{"items":[,{}]}',
      '{"items":[{},]}',
      '{"items":[1 2]}',
      '{"items" []}',
      '{"items"::[]}',
      '{,"items":[]}',
      '{"items":[],}',
      '{"kind":"L",,"items":[]}',
      '{"kind":"L" "items":[]}',
      '{"kind" "L","items":[]}',
      '{"kind":,"items":[]}',
      '{"kind":}',
      '{"items":[];"kind":"L"}',
      '{"items":[]]}',
      '{"items":[]]',
      '{items:[]}',
      "{'items':[]}",
      '{1:2,"items":[]}',
    ]) {
      expectListError(body);
    }
  });

  it('refuses trailing data after the object', () => {
    for (const body of ['{"items":[]}x', '{"items":[]} {}', '{"items":[]}}', '{"items":[]},', '{"items":[]}\u0000']) {
      expectListError(body);
    }
  });

  it('refuses malformed items and member values, as JSON.parse would', () => {
    for (const body of [
      '{"items":["abc]}',
      '{"items":[{"a":[1}]]}',
      '{"items":[{]}',
      '{"items":[[}]}',
      '{"items":[tru]}',
      '{"items":[01]}',
      '{"items":[1.]}',
      '{"items":[-]}',
      '{"items":[+1]}',
      '{"items":[NaN]}',
      '{"items":[{"a":"\\x"}]}',
      '{"items":["a\\u00"]}',
      '{"items":["tab\there"]}',
      '{"items":[{"a" 1}]}',
      '{"items":[{"a":1,}]}',
      '{"items":[{a:1}]}',
      '{"items":[], "metadata":{"a":}}',
      '{"items":[], "kind":"L\\"}',
      '{"items":[], "kind":undefined}',
      '{"items":[:]}',
      '{"items":[}]}',
      '{"it\\ems":[]}',
    ]) {
      expectListError(body);
    }
  });

  it('refuses a body truncated anywhere', () => {
    const text = '{"kind":"L","items":[{"a":"é😀\\"","b":[1,-2.5e3,true,null]},"x",12],"metadata":{"rv":"7"}}';
    const bytes = encoder.encode(text);
    expect(decode(bytes).items).toHaveLength(3);
    for (let cut = 0; cut < bytes.length; cut++) {
      expect(() => decode(bytes.subarray(0, cut)), `cut at ${cut}`).toThrow(ListDecodeError);
      expect(() => decode(bytes.subarray(0, cut), [cut >> 1]), `cut at ${cut}`).toThrow(ListDecodeError);
    }
  });

  it('gives the byte offset and never echoes the body', () => {
    const secret = 'hunter2-token';
    const bodies = [
      `{"items":[{"token":"${secret}"} {"token":"${secret}"}]}`,
      `{"items":[{"token":"${secret}",}]}`,
      `{"items":[],"token":"${secret}}`,
      `{"${secret}":[]`,
    ];
    for (const body of bodies) {
      let caught: unknown;
      try {
        decode(body, [7, 20]);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(ListDecodeError);
      expect(String((caught as Error).message)).not.toContain('hunter');
      expect((caught as Error).message).toMatch(/byte/);
    }
    expect(() => decode('{"items":[{} {}]}')).toThrow(/byte 13, expected ',' or '\]'/);
  });

  it('propagates errors from onItem unchanged, after the items before it', () => {
    const boom = new Error('boom');
    const seen: unknown[] = [];
    const decoder = new ListDecoder((item) => {
      if (item === 2) throw boom;
      seen.push(item);
    });
    expect(() => decoder.write(encoder.encode('{"items":[1,2,3]}'))).toThrow(boom);
    expect(seen).toEqual([1]);
    expect(() => decoder.write(encoder.encode(' '))).toThrow(ListDecodeError);
    expect(() => decoder.end()).toThrow(ListDecodeError);
  });

  it('stays failed after an error', () => {
    const decoder = new ListDecoder(() => {});
    decoder.write(encoder.encode('{"items":['));
    expect(() => decoder.write(encoder.encode(',]}'))).toThrow(ListDecodeError);
    expect(() => decoder.write(encoder.encode('1]}'))).toThrow(ListDecodeError);
    expect(() => decoder.end()).toThrow(ListDecodeError);

    const truncated = new ListDecoder(() => {});
    truncated.write(encoder.encode('{"items":[]'));
    expect(() => truncated.end()).toThrow(ListDecodeError);
    expect(() => truncated.end()).toThrow(ListDecodeError);
    expect(() => truncated.write(encoder.encode('}'))).toThrow(ListDecodeError);
  });

  it('refuses use after end', () => {
    const decoder = new ListDecoder(() => {});
    decoder.write(encoder.encode('{"items":[]}'));
    expect(decoder.end()).toEqual({});
    expect(() => decoder.write(encoder.encode(' '))).toThrow(ListDecodeError);
    expect(() => decoder.end()).toThrow(ListDecodeError);
  });
});
