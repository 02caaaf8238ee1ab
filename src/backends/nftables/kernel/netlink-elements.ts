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
import {
  encodeAttr,
  encodeNested,
  encodeStringAttr,
  netfilterBatch,
  type BatchMessage,
} from '../../../kernel/netlink.ts';
import { ipToBigInt, parseIp } from '../../../model/ip.ts';
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

/** Whether a set's elements can be loaded here: no intervals, every field of a known type. */
export function loadableOverNetlink(spec: {
  readonly keyType: readonly string[];
  readonly dataType?: readonly string[];
  readonly flags: readonly string[];
}): boolean {
  if (spec.flags.length > 0) return false;
  return [...spec.keyType, ...(spec.dataType ?? [])].every((t) => FIELD_SIZE[t] !== undefined);
}

/** An attribute's payload may be at most this long (its length is 16 bits); room kept for headers. */
const ELEMENTS_PER_MESSAGE_BYTES = 60_000;
/** Bytes of one batch (one commit): the kernel copies a batch whole before running it. */
const BATCH_BYTES = 4 << 20;

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
    const head = [encodeStringAttr(SETELEM_LIST.TABLE, req.table), encodeStringAttr(SETELEM_LIST.SET, set.name)];
    let chunk: Buffer[] = [];
    let chunkBytes = 0;
    const flush = (): void => {
      if (chunk.length === 0) return;
      const body = Buffer.concat([...head, encodeNested(SETELEM_LIST.ELEMENTS, chunk)]);
      messages.push({
        type: (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG.NEWSETELEM,
        flags: NLM_F_CREATE,
        family: NFPROTO[req.family],
        body,
      });
      batchBytes += body.length;
      chunk = [];
      chunkBytes = 0;
      if (batchBytes >= BATCH_BYTES) send();
    };
    for (const text of set.elements) {
      const e = encodeElement(set, text);
      if (chunkBytes + e.length > ELEMENTS_PER_MESSAGE_BYTES) flush();
      chunk.push(e);
      chunkBytes += e.length;
      count++;
    }
    flush();
  }
  send();
  return count;
}

/** One NFTA_LIST_ELEM: the key, and the data or verdict of a map's element. */
export function encodeElement(set: LoadSet, text: string): Buffer {
  const colon = text.indexOf(' : ');
  const keyText = colon < 0 ? text : text.slice(0, colon);
  const key = encodeNested(SETELEM.KEY, [encodeValue(set.name, set.keyType, keyText)]);
  const isMap = set.verdictMap || set.dataType !== undefined;
  if (colon >= 0 !== isMap) throw new Error(`set ${set.name}: element ${JSON.stringify(text)} does not fit its type`);
  if (!isMap) return encodeNested(LIST_ELEM, [key]);
  const dataText = text.slice(colon + 3);
  const data = set.verdictMap ? encodeVerdict(set.name, dataText) : encodeValue(set.name, set.dataType ?? [], dataText);
  return encodeNested(LIST_ELEM, [key, encodeNested(SETELEM.DATA, [data])]);
}

/** NFTA_DATA_VALUE of fields joined by ` . `, each field at its register-aligned offset. */
function encodeValue(setName: string, types: readonly string[], text: string): Buffer {
  const parts = types.length > 1 ? text.split(' . ') : [text];
  if (parts.length !== types.length)
    throw new Error(`set ${setName}: ${JSON.stringify(text)} is not ${types.join(' . ')}`);
  const widths = types.map((t) => fieldWidth(FIELD_SIZE[t] as number, types.length));
  const value = Buffer.alloc(widths.reduce((a, b) => a + b, 0));
  let at = 0;
  for (const [i, type] of types.entries()) {
    writeField(setName, type, parts[i] as string, value, at);
    at += widths[i] as number;
  }
  return encodeAttr(DATA.VALUE, value);
}

const DECIMAL = /^(0|[1-9][0-9]*)$/;

function writeField(setName: string, type: string, text: string, out: Buffer, at: number): void {
  const bad = (): Error => new Error(`set ${setName}: ${JSON.stringify(text)} is not ${type}`);
  switch (type) {
    case 'ipv4_addr':
    case 'ipv6_addr': {
      const ip = parseIp(text);
      if (!ip || ip.text !== text || (ip.family === 'ipv4') !== (type === 'ipv4_addr')) throw bad();
      if (ip.family === 'ipv4') {
        const octets = text.split('.');
        for (let i = 0; i < 4; i++) out[at + i] = Number(octets[i]);
        return;
      }
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

/** NFTA_DATA_VERDICT: `accept`, `drop`, `return`, `continue`, or `jump|goto CHAIN`. */
function encodeVerdict(setName: string, text: string): Buffer {
  const [kind = '', chain, extra] = text.split(' ');
  const code = VERDICT_CODE[kind];
  const needsChain = kind === 'jump' || kind === 'goto';
  if (code === undefined || extra !== undefined || needsChain !== (chain !== undefined) || chain === '')
    throw new Error(`set ${setName}: verdict ${JSON.stringify(text)}`);
  const codeValue = Buffer.alloc(4);
  codeValue.writeInt32BE(code, 0);
  const parts = [encodeAttr(VERDICT.CODE, codeValue)];
  if (chain !== undefined) parts.push(encodeStringAttr(VERDICT.CHAIN, chain));
  return encodeNested(DATA.VERDICT, parts);
}
