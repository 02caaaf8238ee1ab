/**
 * @module source/list-decoder
 * Incremental decoding of a Kubernetes List body (`{"kind": …, "metadata": …, "items": [ … ]}`) as
 * it arrives from the socket. At 10,000 Services a List is ~30 MB of JSON: buffering it, parsing it
 * whole and then normalizing keeps the bytes, the string and the whole parsed tree alive at once.
 * Here each element of the top-level `items` array is handed over as soon as its last byte arrives,
 * parsed on its own (`JSON.parse` of its bytes), so only one item's tree and at most one partial
 * item's bytes are held at a time.
 *
 * The scan is byte-level: string contents (escapes included), nesting depth and the top-level
 * grammar are tracked, and `JSON.parse` validates each element, member name and member value on
 * its own byte range. UTF-8 multi-byte sequences are all bytes >= 0x80, never structural, so a
 * chunk boundary anywhere (mid character, mid escape) is fine: the bytes of the value in progress
 * are carried over, nothing else. The body is untrusted: errors name what was expected and the
 * byte offset, never the body's content.
 */

/** Incremental decoder of one Kubernetes List body (a JSON object with an `items` array). */
export class ListDecoder {
  readonly #onItem: (item: unknown) => void;
  /** Grammar position between values (`St*`), or SCANNING while a value's bytes are in progress. */
  #state: number = St.BEFORE_OBJECT;
  /** What the value being scanned is (`Kind*`), hence what to do with it once complete. */
  #kind = 0;
  /** How its end is found: a closing quote, the bracket closing depth 1, or a delimiter. */
  #shape = 0;
  #depth = 0;
  #inString = false;
  /** The chunk ended right after a backslash inside a string: the next byte is escaped. */
  #escaped = false;
  /** Body offset of the value being scanned, for messages. */
  #valueOffset = 0;
  /** Bytes of the value in progress when it started in an earlier chunk. */
  #carry: Buffer = EMPTY;
  #carryLength = 0;
  /** Body offset of the current chunk's first byte. */
  #offset = 0;
  #key = '';
  #itemsSeen = false;
  #itemCount = 0;
  readonly #members: Record<string, unknown> = {};
  #failure: unknown;
  #ended = false;

  constructor(onItem: (item: unknown) => void) {
    this.#onItem = onItem;
  }

  /** Feeds the next bytes of the body; throws ListDecodeError when they cannot be part of a List. */
  write(chunk: Uint8Array): void {
    this.#checkUsable();
    try {
      this.#write(asBuffer(chunk));
    } catch (err) {
      this.#failure = err;
      throw err;
    }
  }

  /**
   * The body ended: returns the top-level members other than `items` (e.g. { kind, apiVersion,
   * metadata }), parsed; throws ListDecodeError if the body is incomplete, not an object, has no
   * `items` array (an `items` of null counts as an empty list, as the API server can send that), or
   * has trailing non-whitespace.
   */
  end(): Record<string, unknown> {
    this.#checkUsable();
    this.#ended = true;
    try {
      if (this.#state !== St.AFTER_OBJECT) {
        const expected = this.#state === St.SCANNING ? `the rest of ${KIND_NAMES[this.#kind]}` : EXPECTED[this.#state];
        throw new ListDecodeError(`List body ends at byte ${this.#offset}, expected ${expected}`);
      }
      if (!this.#itemsSeen) throw new ListDecodeError('List body has no "items" member');
      return this.#members;
    } catch (err) {
      this.#failure = err;
      throw err;
    }
  }

  #checkUsable(): void {
    if (this.#failure !== undefined) throw new ListDecodeError('ListDecoder already failed', { cause: this.#failure });
    if (this.#ended) throw new ListDecodeError('ListDecoder already ended');
  }

  #write(buf: Buffer): void {
    const n = buf.length;
    if (n === 0) return;
    let i = 0;
    if (this.#state === St.SCANNING) {
      const end = this.#scan(buf, 0);
      if (end < 0) {
        this.#append(buf, 0, n);
        this.#offset += n;
        return;
      }
      this.#append(buf, 0, end);
      const carry = this.#carry;
      const length = this.#carryLength;
      this.#carryLength = 0;
      // A carry grown by one huge value is not kept for the rest of the body.
      if (carry.length > MAX_KEPT_CARRY) this.#carry = EMPTY;
      this.#complete(carry, 0, length);
      i = end;
    }
    while (i < n) {
      const c = buf[i] as number;
      if (c === SP || c === LF || c === CR || c === TAB) {
        i++;
        continue;
      }
      const state = this.#state;
      let kind: number;
      switch (state) {
        case St.ITEMS_FIRST:
          if (c === RBRACKET) {
            this.#state = St.AFTER_MEMBER;
            i++;
            continue;
          }
          kind = Kind.ITEM;
          break;
        case St.ITEMS_NEXT:
          kind = Kind.ITEM;
          break;
        case St.ITEMS_AFTER:
          if (c === COMMA) this.#state = St.ITEMS_NEXT;
          else if (c === RBRACKET) this.#state = St.AFTER_MEMBER;
          else this.#unexpected(c, i);
          i++;
          continue;
        case St.BEFORE_OBJECT:
          if (c !== LBRACE) this.#unexpected(c, i);
          this.#state = St.FIRST_KEY;
          i++;
          continue;
        case St.FIRST_KEY:
          if (c === RBRACE) {
            this.#state = St.AFTER_OBJECT;
            i++;
            continue;
          }
          if (c !== QUOTE) this.#unexpected(c, i);
          kind = Kind.KEY;
          break;
        case St.NEXT_KEY:
          if (c !== QUOTE) this.#unexpected(c, i);
          kind = Kind.KEY;
          break;
        case St.COLON:
          if (c !== COLON) this.#unexpected(c, i);
          this.#state = St.MEMBER_VALUE;
          i++;
          continue;
        case St.MEMBER_VALUE:
          if (this.#key !== 'items') {
            kind = Kind.MEMBER;
            break;
          }
          if (this.#itemsSeen)
            throw new ListDecodeError(`List body has a second "items" member at byte ${this.#at(i)}`);
          this.#itemsSeen = true;
          if (c === LBRACKET) {
            this.#state = St.ITEMS_FIRST;
            i++;
            continue;
          }
          if (c !== LOWER_N) {
            throw new ListDecodeError(`List "items" at byte ${this.#at(i)} is ${describe(c)}, not an array or null`);
          }
          kind = Kind.ITEMS_NULL;
          break;
        case St.AFTER_MEMBER:
          if (c === COMMA) this.#state = St.NEXT_KEY;
          else if (c === RBRACE) this.#state = St.AFTER_OBJECT;
          else this.#unexpected(c, i);
          i++;
          continue;
        default:
          this.#unexpected(c, i);
      }
      // A value starts at i.
      if (c === LBRACE || c === LBRACKET) this.#shape = Shape.COMPOSITE;
      else if (c === QUOTE) this.#shape = Shape.STRING;
      else if (c === MINUS || (c >= DIGIT_0 && c <= DIGIT_9) || c === LOWER_T || c === LOWER_F || c === LOWER_N) {
        this.#shape = Shape.SCALAR;
      } else this.#unexpected(c, i);
      this.#kind = kind;
      this.#state = St.SCANNING;
      this.#depth = 0;
      this.#inString = false;
      this.#valueOffset = this.#at(i);
      const end = this.#scan(buf, i);
      if (end < 0) {
        this.#append(buf, i, n);
        break;
      }
      this.#complete(buf, i, end);
      i = end;
    }
    this.#offset += n;
  }

  /**
   * Scans the value in progress from `i`: returns the index just past its last byte, or -1 when it
   * goes on past the chunk (the scan state is kept for the next one).
   */
  #scan(buf: Buffer, i: number): number {
    const n = buf.length;
    if (this.#shape === Shape.SCALAR) {
      for (; i < n; i++) {
        const c = buf[i] as number;
        if (c === COMMA || c === RBRACKET || c === RBRACE || c === SP || c === LF || c === CR || c === TAB) return i;
      }
      return -1;
    }
    let depth = this.#depth;
    let inString = this.#inString;
    if (this.#escaped) {
      this.#escaped = false;
      i++;
    }
    for (;;) {
      if (inString) {
        for (;;) {
          if (i >= n) {
            this.#inString = true;
            this.#depth = depth;
            return -1;
          }
          const c = buf[i++] as number;
          if (c === QUOTE) break;
          if (c === BACKSLASH) {
            if (i >= n) {
              this.#escaped = true;
              this.#inString = true;
              this.#depth = depth;
              return -1;
            }
            i++;
          }
        }
        inString = false;
        if (depth === 0) return i;
      }
      for (;;) {
        if (i >= n) {
          this.#inString = false;
          this.#depth = depth;
          return -1;
        }
        const c = buf[i++] as number;
        if (c === QUOTE) {
          inString = true;
          break;
        }
        if (c === LBRACE || c === LBRACKET) depth++;
        else if ((c === RBRACE || c === RBRACKET) && --depth === 0) return i;
      }
    }
  }

  /** The value in `buf[start, end)` is complete: parses it and moves on. */
  #complete(buf: Buffer, start: number, end: number): void {
    let value: unknown;
    try {
      value = JSON.parse(buf.toString('utf8', start, end));
    } catch {
      const what = this.#kind === Kind.ITEM ? `item ${this.#itemCount}` : KIND_NAMES[this.#kind];
      const where = `bytes ${this.#valueOffset}-${this.#valueOffset + end - start - 1}`;
      throw new ListDecodeError(`List body has invalid JSON in ${what} (${where})`);
    }
    switch (this.#kind) {
      case Kind.ITEM:
        this.#state = St.ITEMS_AFTER;
        this.#itemCount++;
        this.#onItem(value);
        return;
      case Kind.KEY:
        this.#key = value as string;
        this.#state = St.COLON;
        return;
      case Kind.MEMBER:
        // Defined, not assigned: a "__proto__" member is data, as JSON.parse makes it.
        Object.defineProperty(this.#members, this.#key, {
          value,
          writable: true,
          enumerable: true,
          configurable: true,
        });
        this.#state = St.AFTER_MEMBER;
        return;
      default:
        if (value !== null) {
          throw new ListDecodeError(`List "items" at byte ${this.#valueOffset} is not an array or null`);
        }
        this.#state = St.AFTER_MEMBER;
    }
  }

  #append(buf: Buffer, start: number, end: number): void {
    const length = this.#carryLength;
    const needed = length + end - start;
    if (needed > MAX_VALUE_BYTES) {
      throw new ListDecodeError(`List value at byte ${this.#valueOffset} is longer than ${MAX_VALUE_BYTES} bytes`);
    }
    if (needed > this.#carry.length) {
      const grown = Buffer.allocUnsafe(Math.max(needed, this.#carry.length * 2, 4096));
      this.#carry.copy(grown, 0, 0, length);
      this.#carry = grown;
    }
    buf.copy(this.#carry, length, start, end);
    this.#carryLength = needed;
  }

  #at(i: number): number {
    return this.#offset + i;
  }

  #unexpected(c: number, i: number): never {
    const state = this.#state;
    const what =
      state === St.ITEMS_NEXT || state === St.ITEMS_FIRST
        ? `${EXPECTED[state]} (item ${this.#itemCount})`
        : EXPECTED[state];
    throw new ListDecodeError(`List body has ${describe(c)} at byte ${this.#at(i)}, expected ${what}`);
  }
}

/** The body cannot be (the rest of) a Kubernetes List. */
export class ListDecodeError extends Error {
  override name = 'ListDecodeError';
}

/** Grammar positions; the top level is an object, `items` an array, every other value scanned whole. */
const St = {
  BEFORE_OBJECT: 0,
  FIRST_KEY: 1,
  NEXT_KEY: 2,
  COLON: 3,
  MEMBER_VALUE: 4,
  AFTER_MEMBER: 5,
  ITEMS_FIRST: 6,
  ITEMS_NEXT: 7,
  ITEMS_AFTER: 8,
  AFTER_OBJECT: 9,
  SCANNING: 10,
} as const;

const EXPECTED = [
  "'{' (a List is a JSON object)",
  "a member name or '}'",
  'a member name',
  "':'",
  'a value',
  "',' or '}'",
  "an item or ']'",
  'an item',
  "',' or ']'",
  'nothing more (the List object has ended)',
];

const Kind = { ITEM: 0, KEY: 1, MEMBER: 2, ITEMS_NULL: 3 } as const;
const KIND_NAMES = ['an item', 'a member name', 'a member value', '"items"'];

const Shape = { STRING: 0, COMPOSITE: 1, SCALAR: 2 } as const;

const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const QUOTE = 0x22;
const COMMA = 0x2c;
const MINUS = 0x2d;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;
const COLON = 0x3a;
const LBRACKET = 0x5b;
const BACKSLASH = 0x5c;
const RBRACKET = 0x5d;
const LOWER_F = 0x66;
const LOWER_N = 0x6e;
const LOWER_T = 0x74;
const LBRACE = 0x7b;
const RBRACE = 0x7d;

const EMPTY = Buffer.alloc(0);
/** A value longer than this fails the list (the API server caps objects at ~1.5 MiB; the body is untrusted). */
const MAX_VALUE_BYTES = 64 * 1024 * 1024;
/** A carry buffer larger than this (one unusually large value) is dropped once that value is done. */
const MAX_KEPT_CARRY = 1 << 20;

/** A byte for a message: printable ASCII quoted, anything else in hex, never more of the body. */
function describe(c: number): string {
  return c > SP && c < 0x7f ? `'${String.fromCharCode(c)}'` : `byte 0x${c.toString(16).padStart(2, '0')}`;
}

/** A Buffer view of the chunk, without copying, so scanning and decoding see one array type. */
function asBuffer(chunk: Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}
