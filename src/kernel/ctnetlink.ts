/**
 * @module kernel/ctnetlink
 * The kernel's conntrack table through ctnetlink, in this process: a netlink socket from the
 * system's `libmnl.so.0` (netfilter's minimal netlink library, installed with the `conntrack` tool
 * on Debian) called through koffi, with kproxy's few ctnetlink messages encoded and decoded here.
 * No process per request and, above all, deletion by exact tuple: `conntrack -D` with a filter
 * (what conntrack-tools offers) dumps the whole conntrack hash table to find its matches —
 * 262,144 buckets, ~15 ms of CPU per deletion on the test machine — whereas
 * `IPCTNL_MSG_CT_DELETE` with the original tuple is one hash lookup.
 *
 * Three requests: a dump of one family (`IPCTNL_MSG_CT_GET` + `NLM_F_DUMP`, filtered by the
 * kernel to one L4 protocol with CTA_FILTER where the kernel has it, ≥ 5.8), the read of one entry
 * (`IPCTNL_MSG_CT_GET`), and its deletion (`IPCTNL_MSG_CT_DELETE` naming the kernel's id, CTA_ID).
 * A deletion removes only the entry that was listed: the entry is read first and must still have
 * the listed id and reply tuple (the id alone hashes the entry's address and original tuple, and
 * a freed entry's address is reused), then deleted naming that id, so an entry that expired and
 * was created again since the listing (perhaps by newer rules, towards another endpoint) is left
 * alone. Why not libnetfilter_conntrack (ADR 0010): its destroy does not send the id, its
 * protocol filter for dumps needs 1.0.10 (Debian 12 ships 1.0.9), and reading each attribute
 * through a foreign call cost more than decoding the messages here.
 *
 * A netlink socket belongs to the network namespace of the process that opens it, so this module
 * must run in the node's namespace: the daemon loads it in a long-lived child process started
 * there (the spawner's child, through kernel-calls.ts; `ctnetlink-client.ts`), never in itself. Reads and deletions are
 * synchronous (hash lookups); a dump receives on a worker thread over its own socket (the kernel
 * walks its whole table meanwhile), one dump at a time.
 *
 * Inputs are validated here again (addresses parsed; ports, ids and zones range-checked) before
 * any byte is encoded; answers are decoded defensively (lengths checked, family and protocol
 * re-checked whatever the kernel filtered).
 */
import koffi, { type LibraryHandle } from 'koffi';
import type { Family } from '../model/cluster.ts';
import type { ConntrackEntry, ConntrackProtocol, ConntrackTuple } from '../model/conntrack-plan.ts';
import { ipToBigInt, parseIp } from '../model/ip.ts';

/** `NFNL_SUBSYS_CTNETLINK`. */
const CONNTRACK = 1;

const AF = { ipv4: 2, ipv6: 10 } as const;
const L4 = { UDP: 17, SCTP: 132 } as const satisfies Record<ConntrackProtocol, number>;
const ENOENT = 2;

/** A listed entry: the kernel's id and zone come along, so a deletion hits exactly this entry. */
export type KernelConntrackEntry = ConntrackEntry;

export interface DestroyResult {
  /** Entries the kernel deleted. */
  readonly deleted: number;
  /** Entries already gone, or re-created since they were listed (a different id): left alone. */
  readonly missing: number;
  /** One message per other failure. */
  readonly errors: readonly string[];
}

export interface Ctnetlink {
  /** Every entry of the family and protocol (the kernel walks its table once). */
  list(family: Family, protocol: ConntrackProtocol): Promise<KernelConntrackEntry[]>;
  /** Deletes each entry by its original tuple (and id and zone when given): one hash lookup each. */
  destroy(entries: readonly KernelConntrackEntry[]): DestroyResult;
  close(): void;
}

export class CtnetlinkError extends Error {
  override readonly name = 'CtnetlinkError';
}

/** libmnl: a plain netlink socket, for the messages this module encodes itself. */
interface Mnl {
  readonly open: (bus: number) => bigint | null;
  readonly bind: (nl: bigint, groups: number, pid: number) => number;
  readonly sendto: (nl: bigint, buf: Buffer, len: number) => number;
  readonly recvfrom: ((nl: bigint, buf: Buffer, len: number) => number) & {
    /** The same call on a worker thread: the kernel's walk of its table does not block this one. */
    readonly async: (nl: bigint, buf: Buffer, len: number, done: (err: unknown, n: number) => void) => void;
  };
  readonly close: (nl: bigint) => number;
}

let mnlApi: Mnl | undefined;

export const MNL_LIBRARY = 'libmnl.so.0';

/** Loads libmnl once per process; throws CtnetlinkError when it cannot be loaded. */
function loadMnl(): Mnl {
  if (mnlApi) return mnlApi;
  let lib: LibraryHandle;
  try {
    lib = koffi.load(MNL_LIBRARY);
  } catch (err) {
    throw new CtnetlinkError(`cannot load ${MNL_LIBRARY}: ${err instanceof Error ? err.message : String(err)}`);
  }
  mnlApi = {
    open: lib.func('void *mnl_socket_open(int bus)'),
    bind: lib.func('int mnl_socket_bind(void *nl, unsigned int groups, int pid)'),
    sendto: lib.func('intptr_t mnl_socket_sendto(void *nl, const void *buf, size_t len)'),
    recvfrom: lib.func('intptr_t mnl_socket_recvfrom(void *nl, _Out_ void *buf, size_t len)'),
    close: lib.func('int mnl_socket_close(void *nl)'),
  };
  return mnlApi;
}

const NETLINK_NETFILTER = 12;
const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 1;
const NLM_F_ACK = 4;
const NLA_F_NESTED = 0x8000;
/** `(NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_{NEW,GET,DELETE}`. */
const CT_NEW = CONNTRACK << 8;
const CT_GET = (CONNTRACK << 8) | 1;
const CT_DELETE = (CONNTRACK << 8) | 2;
const NLM_F_DUMP = 0x300;
/** linux/netfilter/nfnetlink_conntrack.h. */
const CTA = { TUPLE_ORIG: 1, TUPLE_REPLY: 2, ID: 12, ZONE: 18, FILTER: 25 } as const;
/** CTA_FILTER's CTA_FILTER_ORIG_FLAGS / _REPLY_FLAGS, and its bit for the L4 protocol (kernel ≥ 5.8). */
const CTA_FILTER = { ORIG_FLAGS: 1, REPLY_FLAGS: 2 } as const;
const CTA_FILTER_F_CTA_PROTO_NUM = 1 << 3;
const CTA_TUPLE = { IP: 1, PROTO: 2 } as const;
const CTA_IP = { V4_SRC: 1, V4_DST: 2, V6_SRC: 3, V6_DST: 4 } as const;
const CTA_PROTO = { NUM: 1, SRC_PORT: 2, DST_PORT: 3 } as const;

/** One netlink attribute, padded to 4 bytes. */
function nla(type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length;
  const b = Buffer.alloc((len + 3) & ~3);
  b.writeUInt16LE(len, 0);
  b.writeUInt16LE(type, 2);
  payload.copy(b, 4);
  return b;
}
const nest = (type: number, ...children: Buffer[]): Buffer => nla(type | NLA_F_NESTED, Buffer.concat(children));
const be16 = (v: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
};
const be32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
};

/**
 * `IPCTNL_MSG_CT_DELETE` for one entry: its original tuple, its zone, and its id when known. The
 * library's own destroy (`nfct_query(NFCT_Q_DESTROY)`) does not send the id (measured: it deleted
 * an entry named with a wrong id), so this message is encoded here, from validated fields only.
 */
interface ValidEntry {
  readonly family: Family;
  readonly l4: number;
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
  readonly zone: number;
  readonly what: string;
}

/** An entry's fields, checked (addresses parsed; ports, id and zone in range); throws otherwise. */
function validEntry(e: KernelConntrackEntry): ValidEntry {
  if (e.family !== 'ipv4' && e.family !== 'ipv6') throw new CtnetlinkError(`invalid family ${String(e.family)}`);
  const l4 = L4[e.protocol];
  if (l4 === undefined) throw new CtnetlinkError(`invalid protocol ${String(e.protocol)}`);
  const o = e.original;
  const src = checkAddress(o.src, e.family);
  const dst = checkAddress(o.dst, e.family);
  const sport = checkPort(o.sport);
  const dport = checkPort(o.dport);
  if (e.id !== undefined && !(Number.isInteger(e.id) && e.id >= 0 && e.id <= 0xffff_ffff)) {
    throw new CtnetlinkError(`invalid conntrack id ${e.id}`);
  }
  const zone = e.zone ?? 0;
  if (!(Number.isInteger(zone) && zone >= 0 && zone <= 0xffff)) {
    throw new CtnetlinkError(`invalid conntrack zone ${zone}`);
  }
  const what = `${e.protocol} ${src}:${sport} → ${dst}:${dport}`;
  return { family: e.family, l4, src, dst, sport, dport, zone, what };
}

const sameReply = (a: KernelConntrackEntry, b: KernelConntrackEntry): boolean =>
  a.reply.src === b.reply.src &&
  a.reply.dst === b.reply.dst &&
  a.reply.sport === b.reply.sport &&
  a.reply.dport === b.reply.dport;

function deleteMessage(e: KernelConntrackEntry, seq: number): { bytes: Buffer; what: string } {
  const { family, l4, src, dst, sport, dport, zone, what } = validEntry(e);
  const id = e.id;
  const attrs = Buffer.concat([
    origTuple(family, l4, src, dst, sport, dport),
    ...(id !== undefined ? [nla(CTA.ID, be32(id))] : []),
    ...(zone !== 0 ? [nla(CTA.ZONE, be16(zone))] : []),
  ]);
  return { bytes: message(CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, AF[family], seq, attrs), what };
}

/** CTA_TUPLE_ORIG of validated fields. */
function origTuple(family: Family, l4: number, src: string, dst: string, sport: number, dport: number): Buffer {
  const addr = (text: string): Buffer =>
    family === 'ipv4' ? be32(Number(ipToBigInt({ family: 'ipv4', text }))) : ipv6ToBytes(text);
  const v4 = family === 'ipv4';
  return nest(
    CTA.TUPLE_ORIG,
    nest(
      CTA_TUPLE.IP,
      nla(v4 ? CTA_IP.V4_SRC : CTA_IP.V6_SRC, addr(src)),
      nla(v4 ? CTA_IP.V4_DST : CTA_IP.V6_DST, addr(dst)),
    ),
    nest(
      CTA_TUPLE.PROTO,
      nla(CTA_PROTO.NUM, Buffer.from([l4])),
      nla(CTA_PROTO.SRC_PORT, be16(sport)),
      nla(CTA_PROTO.DST_PORT, be16(dport)),
    ),
  );
}

/** A dump's CTA_FILTER: the original tuple's L4 protocol only. */
function protocolFilter(protocol: ConntrackProtocol): Buffer {
  const u32 = (v: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return b;
  };
  return Buffer.concat([
    nest(CTA.FILTER, nla(CTA_FILTER.ORIG_FLAGS, u32(CTA_FILTER_F_CTA_PROTO_NUM)), nla(CTA_FILTER.REPLY_FLAGS, u32(0))),
    nest(CTA.TUPLE_ORIG, nest(CTA_TUPLE.PROTO, nla(CTA_PROTO.NUM, Buffer.from([L4[protocol]])))),
  ]);
}

/** A ctnetlink request: nlmsghdr, nfgenmsg (family, NFNETLINK_V0), attributes. */
function message(type: number, flags: number, af: number, seq: number, attributes: Buffer): Buffer {
  const header = Buffer.alloc(20);
  header.writeUInt32LE(20 + attributes.length, 0);
  header.writeUInt16LE(type, 4);
  header.writeUInt16LE(flags, 6);
  header.writeUInt32LE(seq >>> 0, 8);
  header.writeUInt32LE(0, 12);
  header.writeUInt8(af, 16);
  return Buffer.concat([header, attributes]);
}

/** A netlink socket for requests answered by an acknowledgement; `request` returns the errno (0: done). */
interface MnlSocket {
  /**
   * Sends a request and reads what answers it: `onMessage` gets every message of this sequence
   * number (the buffer, the message's offset and length); it ends at the acknowledgement, the
   * error, or the dump's end. Returns 0 or the errno.
   */
  request(msg: Buffer, seq: number, onMessage?: (buf: Buffer, off: number, len: number) => void): number;
  /** `request`, with each receive on a worker thread (for dumps). */
  requestAsync(msg: Buffer, seq: number, onMessage: (buf: Buffer, off: number, len: number) => void): Promise<number>;
  close(): void;
}

const NLMSG_DONE = 3;

/** A netlink socket (libmnl) for the requests this module encodes itself. */
function openMnl(): MnlSocket {
  const m = loadMnl();
  const nl = m.open(NETLINK_NETFILTER);
  if (!nl) throw new CtnetlinkError(`mnl_socket_open failed (errno ${koffi.errno()})`);
  if (m.bind(nl, 0, 0) < 0) {
    const errno = koffi.errno();
    m.close(nl);
    throw new CtnetlinkError(`mnl_socket_bind failed (errno ${errno})`);
  }
  // Large enough for any dump batch the kernel sends (it sizes them by the reader's buffer, ≤ 32 KiB+).
  const buf = Buffer.alloc(256 * 1024);
  /** Handles one receive: the errno or 0 when the request is answered, undefined to read on. */
  const take = (
    n: number,
    seq: number,
    onMessage?: (b: Buffer, off: number, len: number) => void,
  ): number | undefined => {
    // Messages of other sequence numbers (an earlier request's leftovers) are skipped.
    for (let off = 0; off + 16 <= n; ) {
      const len = buf.readUInt32LE(off);
      if (len < 16 || off + len > n) break;
      if (buf.readUInt32LE(off + 8) === seq >>> 0) {
        const type = buf.readUInt16LE(off + 4);
        if (type === NLMSG_ERROR) return -buf.readInt32LE(off + 16);
        if (type === NLMSG_DONE) return 0;
        onMessage?.(buf, off, len);
      }
      off += (len + 3) & ~3;
    }
    return undefined;
  };
  return {
    request(msg, seq, onMessage) {
      if (m.sendto(nl, msg, msg.length) < 0) return koffi.errno();
      for (;;) {
        const n = m.recvfrom(nl, buf, buf.length);
        if (n < 0) return koffi.errno();
        const done = take(n, seq, onMessage);
        if (done !== undefined) return done;
      }
    },
    async requestAsync(msg, seq, onMessage) {
      if (m.sendto(nl, msg, msg.length) < 0) return koffi.errno();
      for (;;) {
        const n = await new Promise<number>((resolve, reject) => {
          m.recvfrom.async(nl, buf, buf.length, (err, r) => (err ? reject(err) : resolve(r < 0 ? -koffi.errno() : r)));
        });
        if (n < 0) return -n;
        const done = take(n, seq, onMessage);
        if (done !== undefined) return done;
      }
    },
    close() {
      m.close(nl);
    },
  };
}

/** The attributes of one netlink attribute stream, by type (nested flag cleared): [offset, length] of each payload. */
function attrs(buf: Buffer, off: number, end: number): Map<number, [number, number]> {
  const out = new Map<number, [number, number]>();
  while (off + 4 <= end) {
    const len = buf.readUInt16LE(off);
    if (len < 4 || off + len > end) break;
    out.set(buf.readUInt16LE(off + 2) & 0x3fff, [off + 4, len - 4]);
    off += (len + 3) & ~3;
  }
  return out;
}

function ipText(buf: Buffer, at: [number, number] | undefined, family: Family): string | undefined {
  if (!at) return undefined;
  const [o, l] = at;
  if (family === 'ipv4') return l === 4 ? `${buf[o]}.${buf[o + 1]}.${buf[o + 2]}.${buf[o + 3]}` : undefined;
  return l === 16 ? bytesToIpv6(buf.subarray(o, o + 16)) : undefined;
}

/** One direction's tuple (CTA_TUPLE_ORIG or _REPLY), if it is of this family and L4 protocol. */
function tupleOf(
  buf: Buffer,
  at: [number, number] | undefined,
  family: Family,
  l4: number,
): ConntrackTuple | undefined {
  if (!at) return undefined;
  const t = attrs(buf, at[0], at[0] + at[1]);
  const ip = t.get(CTA_TUPLE.IP);
  const proto = t.get(CTA_TUPLE.PROTO);
  if (!ip || !proto) return undefined;
  const a = attrs(buf, ip[0], ip[0] + ip[1]);
  const p = attrs(buf, proto[0], proto[0] + proto[1]);
  const num = p.get(CTA_PROTO.NUM);
  const sp = p.get(CTA_PROTO.SRC_PORT);
  const dp = p.get(CTA_PROTO.DST_PORT);
  if (!num || buf[num[0]] !== l4 || !sp || !dp) return undefined;
  const v4 = family === 'ipv4';
  const src = ipText(buf, a.get(v4 ? CTA_IP.V4_SRC : CTA_IP.V6_SRC), family);
  const dst = ipText(buf, a.get(v4 ? CTA_IP.V4_DST : CTA_IP.V6_DST), family);
  if (!src || !dst) return undefined;
  return { src, dst, sport: buf.readUInt16BE(sp[0]), dport: buf.readUInt16BE(dp[0]) };
}

/** A conntrack message (`IPCTNL_MSG_CT_NEW`, as dumps and reads answer) as an entry; undefined if not of an IP family and this protocol. */
function entryOf(buf: Buffer, off: number, len: number, protocol: ConntrackProtocol): KernelConntrackEntry | undefined {
  if (buf.readUInt16LE(off + 4) !== CT_NEW || len < 20) return undefined;
  const family: Family | undefined =
    buf[off + 16] === AF.ipv4 ? 'ipv4' : buf[off + 16] === AF.ipv6 ? 'ipv6' : undefined;
  if (!family) return undefined;
  const a = attrs(buf, off + 20, off + len);
  const l4 = L4[protocol];
  const original = tupleOf(buf, a.get(CTA.TUPLE_ORIG), family, l4);
  const reply = tupleOf(buf, a.get(CTA.TUPLE_REPLY), family, l4);
  if (!original || !reply) return undefined;
  const id = a.get(CTA.ID);
  const zone = a.get(CTA.ZONE);
  const z = zone && zone[1] >= 2 ? buf.readUInt16BE(zone[0]) : 0;
  return {
    family,
    protocol,
    original,
    reply,
    ...(id && id[1] >= 4 ? { id: buf.readUInt32BE(id[0]) } : {}),
    ...(z !== 0 ? { zone: z } : {}),
  };
}

function ipv6ToBytes(text: string): Buffer {
  const b = Buffer.alloc(16);
  const v = ipToBigInt({ family: 'ipv6', text });
  b.writeBigUInt64BE(v >> 64n, 0);
  b.writeBigUInt64BE(v & 0xffff_ffff_ffff_ffffn, 8);
  return b;
}

function bytesToIpv6(b: Uint8Array): string | undefined {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((b[i] ?? 0) << 8) | (b[i + 1] ?? 0)).toString(16));
  return parseIp(groups.join(':'))?.text;
}

function checkPort(p: number): number {
  if (!Number.isInteger(p) || p < 0 || p > 65535) throw new CtnetlinkError(`invalid port ${p}`);
  return p;
}

function checkAddress(text: string, family: Family): string {
  const ip = parseIp(text);
  if (!ip || ip.family !== family) throw new CtnetlinkError(`invalid ${family} address ${JSON.stringify(text)}`);
  return ip.text;
}

/**
 * Opens a ctnetlink socket in this process's network namespace. Throws CtnetlinkError when the
 * library cannot be loaded or the socket cannot be opened.
 */
export function openCtnetlink(): Ctnetlink {
  // Two sockets: dumps receive on a worker thread, so reads and deletions are served meanwhile.
  const mnl = openMnl();
  let dumps: MnlSocket;
  try {
    dumps = openMnl();
  } catch (err) {
    mnl.close();
    throw err;
  }
  /** Dumps one at a time (one socket). */
  let dumping: Promise<unknown> = Promise.resolve();
  let seq = 0;
  let closed = false;
  let kernelFilters = true;
  /** The entry with this original tuple now (undefined: none), read with `IPCTNL_MSG_CT_GET`. */
  const get = (e: KernelConntrackEntry): KernelConntrackEntry | undefined => {
    const v = validEntry(e);
    const attributes = Buffer.concat([
      origTuple(v.family, v.l4, v.src, v.dst, v.sport, v.dport),
      ...(v.zone !== 0 ? [nla(CTA.ZONE, be16(v.zone))] : []),
    ]);
    let found: KernelConntrackEntry | undefined;
    const errno = mnl.request(
      message(CT_GET, NLM_F_REQUEST | NLM_F_ACK, AF[v.family], ++seq, attributes),
      seq,
      (buf, off, len) => {
        const got = entryOf(buf, off, len, e.protocol);
        if (got?.family === v.family) found ??= got;
      },
    );
    if (errno === ENOENT) return undefined;
    if (errno !== 0) throw new CtnetlinkError(`reading ${v.what}: errno ${errno}`);
    return found;
  };

  const listFamily = async (family: Family, protocol: ConntrackProtocol): Promise<KernelConntrackEntry[]> => {
    if (closed) throw new CtnetlinkError('ctnetlink handle closed');
    if (family !== 'ipv4' && family !== 'ipv6') throw new CtnetlinkError(`invalid family ${String(family)}`);
    if (!(protocol in L4)) throw new CtnetlinkError(`invalid protocol ${String(protocol)}`);
    const dump = async (filtered: boolean): Promise<{ errno: number; out: KernelConntrackEntry[] }> => {
      const out: KernelConntrackEntry[] = [];
      const attributes = filtered ? protocolFilter(protocol) : Buffer.alloc(0);
      const msg = message(CT_GET, NLM_F_REQUEST | NLM_F_DUMP, AF[family], ++seq, attributes);
      const errno = await dumps.requestAsync(msg, seq, (buf, off, len) => {
        // Family and protocol are checked here, whatever the kernel filtered.
        const e = entryOf(buf, off, len, protocol);
        if (e?.family === family) out.push(e);
      });
      return { errno, out };
    };
    // The kernel still walks its whole table (one family per dump: it filters by protocol only
    // for a given family), but sends only the protocol's entries: a node's table is mostly TCP.
    // Kernels without CTA_FILTER (< 5.8) refuse it: then unfiltered.
    let r = await dump(kernelFilters);
    if (r.errno !== 0 && kernelFilters) {
      kernelFilters = false;
      r = await dump(false);
    }
    if (r.errno !== 0) throw new CtnetlinkError(`conntrack dump (${family}) failed: errno ${r.errno}`);
    return r.out;
  };

  return {
    list(family, protocol) {
      const run = dumping.then(() => listFamily(family, protocol));
      dumping = run.catch(() => undefined);
      return run;
    },

    destroy(entries) {
      if (closed) throw new CtnetlinkError('ctnetlink handle closed');
      let deleted = 0;
      let missing = 0;
      const errors: string[] = [];
      for (const e of entries) {
        let what = 'entry';
        try {
          what = validEntry(e).what;
          // The kernel's id alone does not tell a re-created entry: it hashes the entry's address
          // (often reused) and its original tuple. So the entry is read first and deleted only if
          // it is still the one listed (same id, same reply tuple: still DNATed where the plan
          // said), naming that id, so that nothing else can be deleted in between.
          const current = get(e);
          if (!current || !sameReply(current, e) || (e.id !== undefined && current.id !== e.id)) {
            missing++;
            continue;
          }
          const msg = deleteMessage({ ...e, ...(current.id !== undefined ? { id: current.id } : {}) }, ++seq);
          const errno = mnl.request(msg.bytes, seq);
          if (errno === 0) deleted++;
          else if (errno === ENOENT) missing++;
          else errors.push(`deleting ${what}: errno ${errno}`);
        } catch (err) {
          errors.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
      return { deleted, missing, errors };
    },

    close() {
      if (closed) return;
      closed = true;
      mnl.close();
      // A dump in progress finishes on its worker first.
      void dumping.then(() => dumps.close());
    },
  };
}
