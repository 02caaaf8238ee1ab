/**
 * @module backends/nftables/kernel/netlink-elements
 * Adds set and map elements straight over netlink, encoded here from the renderer's element text
 * (the inverse of netlink-dump.ts): a table's first load at 10,000 Services spends ~1 s in nft
 * parsing its ~150k elements, which this encodes in a fraction of that. Used only for a table
 * that no packet reaches yet (the staged create in apply.ts), so it may take several commits.
 *
 * Only sets without intervals whose fields are all types kproxy declares are loaded here
 * (`loadableOverNetlink`); an element whose text does not read as its set's types throws (the
 * renderer wrote it, so that is a bug, and the load fails whole instead of writing a guess).
 *
 * Runs in the process whose network namespace holds the table (spawner-child.ts, or `kproxy
 * sync` itself).
 */
import { netfilterBatch, type BatchMessage } from '../../../kernel/netlink.ts';
import { ipToBigInt, parseIp } from '../../../model/ip.ts';
import { identifier } from '../render/syntax.ts';
import {
  DATA,
  FIELD_SIZE,
  fieldWidth,
  LIST_ELEM,
  NFNL_SUBSYS_NFTABLES,
  NFPROTO,
  NFT_MSG,
  NLM_F_CREATE,
  PROTOCOL_NUMBER,
  SETELEM,
  SETELEM_LIST,
  VERDICT,
  VERDICT_CODE,
} from './nf-tables-abi.ts';

export interface LoadSet {
  readonly name: string;
  readonly keyType: readonly string[];
  readonly dataType?: readonly string[];
  readonly verdictMap: boolean;
  readonly elements: readonly string[];
}

export interface ElementLoad {
  readonly family: 'ip' | 'ip6';
  readonly table: string;
  readonly sets: readonly LoadSet[];
}

/**
 * `load` cut into loads of at most `max` elements each, in order (a set may span several). The
 * daemon hands a load to its tool child as one JSON message: at 50k Services one load would be a
 * ~33 MB string on each side at the first sync's peak. The loads go into a table no packet reaches
 * yet (ADR 0012), so how they are cut changes nothing the kernel shows.
 */
export function* elementLoadChunks(load: ElementLoad, max: number): Generator<ElementLoad> {
  let sets: LoadSet[] = [];
  let room = max;
  for (const set of load.sets) {
    for (let at = 0; at < set.elements.length; ) {
      const take = Math.min(room, set.elements.length - at);
      sets.push({ ...set, elements: set.elements.slice(at, at + take) });
      at += take;
      room -= take;
      if (room === 0) {
        yield { ...load, sets };
        sets = [];
        room = max;
      }
    }
  }
  if (sets.length > 0) yield { ...load, sets };
}

/** Whether a set's elements can be loaded here: no intervals, every field of a known type. */
export function loadableOverNetlink(spec: {
  readonly keyType: readonly string[];
  readonly dataType?: readonly string[];
  readonly flags: readonly string[];
}): boolean {
  if (spec.flags.length > 0) return false;
  return [...spec.keyType, ...(spec.dataType ?? [])].every((t) => FIELD_SIZE[t] !== undefined);
}

/** An attribute's length is 16 bits: a message's elements stay below this. */
const ELEMENTS_BYTES = 65_000;
/** Room for the largest element kproxy writes (two IPv6 keys' worth and a verdict's chain name). */
const ELEMENT_ROOM = 512;
/** Bytes of one batch (one commit): the kernel copies a batch whole before running it. */
const BATCH_BYTES = 4 << 20;
const NESTED = 0x8000;

/**
 * Writes netlink attributes in place into one zeroed buffer: an element is ~40 bytes and a table
 * holds ~150k, so nothing is allocated per attribute.
 */
class AttrWriter {
  readonly buf: Buffer;
  at = 0;
  constructor(size: number) {
    this.buf = Buffer.alloc(size);
  }
  /** Starts an attribute; `end(start)` closes it once its payload (or nested attributes) is written. */
  begin(type: number): number {
    const start = this.at;
    this.buf.writeUInt16LE(type, start + 2);
    this.at += 4;
    return start;
  }
  end(start: number): void {
    this.buf.writeUInt16LE(this.at - start, start);
    this.at = (this.at + 3) & ~3;
  }
  string(type: number, s: string): void {
    const a = this.begin(type);
    this.at += this.buf.write(s, this.at, 'utf8') + 1; // NUL-terminated (the buffer is zeroed)
    this.end(a);
  }
}

/** Adds every element of `req`'s sets to them (already declared, empty); returns how many. */
export function loadElements(req: ElementLoad): number {
  const messages: BatchMessage[] = [];
  let batchBytes = 0;
  let count = 0;
  const send = (): void => {
    netfilterBatch(NFNL_SUBSYS_NFTABLES, messages);
    messages.length = 0;
    batchBytes = 0;
  };
  for (const set of req.sets) {
    if (!loadableOverNetlink({ ...set, flags: [] })) throw new Error(`set ${set.name}: types it cannot encode`);
    for (let next = 0; next < set.elements.length; ) {
      const w = new AttrWriter(ELEMENTS_BYTES + ELEMENT_ROOM + 1024);
      w.string(SETELEM_LIST.TABLE, identifier(req.table));
      w.string(SETELEM_LIST.SET, identifier(set.name));
      const list = w.begin(SETELEM_LIST.ELEMENTS | NESTED);
      while (next < set.elements.length && w.at - list < ELEMENTS_BYTES - ELEMENT_ROOM) {
        writeElement(w, set, set.elements[next] as string);
        next++;
      }
      w.end(list);
      const body = w.buf.subarray(0, w.at);
      messages.push({
        type: (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG.NEWSETELEM,
        flags: NLM_F_CREATE,
        family: NFPROTO[req.family],
        body,
      });
      batchBytes += body.length;
      if (batchBytes >= BATCH_BYTES) send();
    }
    count += set.elements.length;
  }
  send();
  return count;
}

/** One NFTA_LIST_ELEM as bytes: the key, and the data or verdict of a map's element. */
export function encodeElement(set: LoadSet, text: string): Buffer {
  const w = new AttrWriter(ELEMENT_ROOM);
  writeElement(w, set, text);
  return Buffer.from(w.buf.subarray(0, w.at));
}

function writeElement(w: AttrWriter, set: LoadSet, text: string): void {
  const colon = text.indexOf(' : ');
  const isMap = set.verdictMap || set.dataType !== undefined;
  if (colon >= 0 !== isMap) throw new Error(`set ${set.name}: element ${JSON.stringify(text)} does not fit its type`);
  const elem = w.begin(LIST_ELEM | NESTED);
  const key = w.begin(SETELEM.KEY | NESTED);
  writeValue(w, set.name, set.keyType, text, 0, colon < 0 ? text.length : colon);
  w.end(key);
  if (isMap) {
    const data = w.begin(SETELEM.DATA | NESTED);
    if (set.verdictMap) writeVerdict(w, set.name, text.slice(colon + 3));
    else writeValue(w, set.name, set.dataType ?? [], text, colon + 3, text.length);
    w.end(data);
  }
  w.end(elem);
}

/** NFTA_DATA_VALUE of the fields in text[from, to), joined by ` . `, each at its register-aligned offset. */
function writeValue(
  w: AttrWriter,
  setName: string,
  types: readonly string[],
  text: string,
  from: number,
  to: number,
): void {
  const value = w.begin(DATA.VALUE);
  let pos = from;
  for (let i = 0; i < types.length; i++) {
    const type = types[i] as string;
    const last = i === types.length - 1;
    const sep = last ? to : text.indexOf(' . ', pos);
    if (sep < 0 || sep > to || (last && text.lastIndexOf(' . ', to - 1) >= pos))
      throw new Error(`set ${setName}: ${JSON.stringify(text.slice(from, to))} is not ${types.join(' . ')}`);
    writeField(setName, type, text.slice(pos, sep), w.buf, w.at);
    w.at += fieldWidth(FIELD_SIZE[type] as number, types.length);
    pos = sep + 3;
  }
  w.end(value);
}

const DECIMAL = /^(0|[1-9][0-9]*)$/;

function writeField(setName: string, type: string, text: string, out: Buffer, at: number): void {
  const bad = (): Error => new Error(`set ${setName}: ${JSON.stringify(text)} is not ${type}`);
  switch (type) {
    case 'ipv4_addr':
      if (!writeIpv4(text, out, at)) throw bad();
      return;
    case 'ipv6_addr': {
      const ip = parseIp(text);
      if (!ip || ip.text !== text || ip.family !== 'ipv6') throw bad();
      const n = ipToBigInt(ip);
      for (let i = 0; i < 16; i++) out[at + i] = Number((n >> BigInt(8 * (15 - i))) & 0xffn);
      return;
    }
    case 'inet_proto': {
      const n = PROTOCOL_NUMBER[text] ?? (DECIMAL.test(text) ? Number(text) : -1);
      if (n < 0 || n > 255) throw bad();
      out[at] = n;
      return;
    }
    case 'inet_service': {
      const n = DECIMAL.test(text) ? Number(text) : -1;
      if (n < 0 || n > 0xffff) throw bad();
      out.writeUInt16BE(n, at);
      return;
    }
    case 'integer': {
      // numgen's integer, in host byte order (as netlink-dump.ts reads it).
      const n = DECIMAL.test(text) ? Number(text) : -1;
      if (n < 0 || n > 0xffffffff) throw bad();
      out.writeUInt32LE(n, at);
      return;
    }
    default:
      throw bad();
  }
}

/** A canonical dotted quad (no leading zeros, each octet ≤ 255) into 4 bytes; false if it is not one. */
function writeIpv4(text: string, out: Buffer, at: number): boolean {
  let octet = 0;
  let digits = 0;
  let octets = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      if (digits === 0 || octets === 4) return false;
      out[at + octets++] = octet;
      octet = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39 && !(digits === 1 && octet === 0)) {
      octet = octet * 10 + (c - 0x30);
      if (octet > 255) return false;
      digits++;
    } else return false;
  }
  return octets === 4;
}

/** NFTA_DATA_VERDICT: `accept`, `drop`, `return`, `continue`, or `jump|goto CHAIN`. */
function writeVerdict(w: AttrWriter, setName: string, text: string): void {
  const [kind = '', chain, extra] = text.split(' ');
  const code = VERDICT_CODE[kind];
  const needsChain = kind === 'jump' || kind === 'goto';
  if (code === undefined || extra !== undefined || needsChain !== (chain !== undefined) || chain === '')
    throw new Error(`set ${setName}: verdict ${JSON.stringify(text)}`);
  const verdict = w.begin(DATA.VERDICT | NESTED);
  const codeAttr = w.begin(VERDICT.CODE);
  w.buf.writeInt32BE(code, w.at);
  w.at += 4;
  w.end(codeAttr);
  // Names are kproxy's own, checked as the renderer checks them before they reach the kernel.
  if (chain !== undefined) w.string(VERDICT.CHAIN, identifier(chain));
  w.end(verdict);
}
