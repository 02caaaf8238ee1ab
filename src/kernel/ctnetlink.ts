/**
 * @module kernel/ctnetlink
 * The kernel's conntrack table through ctnetlink, in this process, with the system's
 * `libnetfilter_conntrack.so.3` (installed with the `conntrack` tool on Debian, with libmnl and
 * libnfnetlink) called through koffi: no process per request and, above all, deletion by exact
 * tuple. `conntrack -D` with a filter (what conntrack-tools offers) dumps the whole conntrack hash
 * table to find its matches — 262,144 buckets, ~15 ms of CPU per deletion on the test machine —
 * whereas `IPCTNL_MSG_CT_DELETE` with a full original tuple is one hash lookup.
 *
 * Deletion also names the kernel's id of the entry (`CTA_ID`, from the listing): the kernel then
 * deletes the entry only if it is still the one listed, so an entry that expired and was created
 * again (perhaps by newer rules, towards another endpoint) since the listing is left alone.
 *
 * A netlink socket belongs to the network namespace of the process that opens it, so this module
 * must run in the node's namespace: the daemon loads it in a long-lived child process started
 * there (`ctnetlink-child.ts`, `ctnetlink-client.ts`), never in itself. Every request is
 * synchronous (a dump blocks the calling thread while the kernel walks the table).
 *
 * Inputs are validated here again (addresses parsed, ports and ids range-checked) before any
 * byte reaches the library.
 */
import koffi, { type LibraryHandle, type TypeObject } from 'koffi';
import type { Family } from '../model/cluster.ts';
import type { ConntrackEntry, ConntrackProtocol, ConntrackTuple } from '../model/conntrack-plan.ts';
import { ipToBigInt, parseIp } from '../model/ip.ts';

export const LIBRARY = 'libnetfilter_conntrack.so.3';

/** `enum nf_conntrack_attr` (libnetfilter_conntrack.h), the attributes used here. */
const ATTR = {
  ORIG_IPV4_SRC: 0,
  ORIG_IPV4_DST: 1,
  REPL_IPV4_SRC: 2,
  REPL_IPV4_DST: 3,
  ORIG_IPV6_SRC: 4,
  ORIG_IPV6_DST: 5,
  REPL_IPV6_SRC: 6,
  REPL_IPV6_DST: 7,
  ORIG_PORT_SRC: 8,
  ORIG_PORT_DST: 9,
  REPL_PORT_SRC: 10,
  REPL_PORT_DST: 11,
  ORIG_L3PROTO: 15,
  ORIG_L4PROTO: 17,
  ID: 31,
  ZONE: 61,
} as const;

/** `enum nf_conntrack_query`. */
const NFCT_Q_GET = 3;
const NFCT_Q_DUMP = 5;
/** `NFNL_SUBSYS_CTNETLINK` (`CONNTRACK` in the library's header). */
const CONNTRACK = 1;
/** `enum nf_conntrack_msg_type`: every message type. */
const NFCT_T_ALL = 7;
/** Callback answers: go on with the dump. */
const NFCT_CB_CONTINUE = 1;

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
  list(family: Family, protocol: ConntrackProtocol): KernelConntrackEntry[];
  /** Deletes each entry by its original tuple (and id and zone when given): one hash lookup each. */
  destroy(entries: readonly KernelConntrackEntry[]): DestroyResult;
  close(): void;
}

export class CtnetlinkError extends Error {
  override readonly name = 'CtnetlinkError';
}

interface Api {
  readonly open: (subsys: number, groups: number) => bigint | null;
  readonly close: (h: bigint) => number;
  readonly getU8: (ct: bigint, attr: number) => number;
  readonly getU16: (ct: bigint, attr: number) => number;
  readonly getU32: (ct: bigint, attr: number) => number;
  readonly getAttr: (ct: bigint, attr: number) => bigint | null;
  readonly newCt: () => bigint | null;
  readonly destroyCt: (ct: bigint) => void;
  readonly setAttr: (ct: bigint, attr: number, v: Buffer) => void;
  readonly isSet: (ct: bigint, attr: number) => number;
  readonly callbackRegister: (h: bigint, type: number, cb: bigint, data: null) => number;
  readonly query: (h: bigint, q: number, data: bigint | Buffer) => number;
  readonly callbackProto: TypeObject;
}

/** libmnl: a plain netlink socket, for the deletions this module encodes itself (see `deleteMessage`). */
interface Mnl {
  readonly open: (bus: number) => bigint | null;
  readonly bind: (nl: bigint, groups: number, pid: number) => number;
  readonly sendto: (nl: bigint, buf: Buffer, len: number) => number;
  readonly recvfrom: (nl: bigint, buf: Buffer, len: number) => number;
  readonly close: (nl: bigint) => number;
}

let api: Api | undefined;
let mnlApi: Mnl | undefined;

export const MNL_LIBRARY = 'libmnl.so.0';

/** Loads the library once per process; throws CtnetlinkError when it cannot be loaded. */
function loadApi(): Api {
  if (api) return api;
  let lib: LibraryHandle;
  try {
    lib = koffi.load(LIBRARY);
  } catch (err) {
    throw new CtnetlinkError(`cannot load ${LIBRARY}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const callbackProto = koffi.proto('int kproxy_nfct_cb(int type, void *ct, void *data)');
  api = {
    open: lib.func('void *nfct_open(uint8_t subsys_id, unsigned int subscriptions)'),
    close: lib.func('int nfct_close(void *h)'),
    getU8: lib.func('uint8_t nfct_get_attr_u8(void *ct, int type)'),
    getU16: lib.func('uint16_t nfct_get_attr_u16(void *ct, int type)'),
    getU32: lib.func('uint32_t nfct_get_attr_u32(void *ct, int type)'),
    getAttr: lib.func('const void *nfct_get_attr(void *ct, int type)'),
    newCt: lib.func('void *nfct_new(void)'),
    destroyCt: lib.func('void nfct_destroy(void *ct)'),
    setAttr: lib.func('void nfct_set_attr(void *ct, int type, const void *value)'),
    isSet: lib.func('int nfct_attr_is_set(void *ct, int type)'),
    callbackRegister: lib.func('int nfct_callback_register(void *h, int type, kproxy_nfct_cb *cb, void *data)'),
    query: lib.func('int nfct_query(void *h, int query, const void *data)'),
    callbackProto,
  };
  return api;
}

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
/** `(NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE`. */
const CT_DELETE = (CONNTRACK << 8) | 2;
/** linux/netfilter/nfnetlink_conntrack.h. */
const CTA = { TUPLE_ORIG: 1, ID: 12, ZONE: 18 } as const;
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
  const addr = (text: string): Buffer =>
    family === 'ipv4' ? be32(Number(ipToBigInt({ family: 'ipv4', text }))) : ipv6ToBytes(text);
  const v4 = family === 'ipv4';
  const attrs = Buffer.concat([
    nest(
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
    ),
    ...(id !== undefined ? [nla(CTA.ID, be32(id))] : []),
    ...(zone !== 0 ? [nla(CTA.ZONE, be16(zone))] : []),
  ]);
  const header = Buffer.alloc(20);
  header.writeUInt32LE(20 + attrs.length, 0);
  header.writeUInt16LE(CT_DELETE, 4);
  header.writeUInt16LE(NLM_F_REQUEST | NLM_F_ACK, 6);
  header.writeUInt32LE(seq >>> 0, 8);
  header.writeUInt32LE(0, 12);
  // struct nfgenmsg: family, version (NFNETLINK_V0), res_id.
  header.writeUInt8(AF[family], 16);
  return { bytes: Buffer.concat([header, attrs]), what };
}

/** A netlink socket for requests answered by an acknowledgement; `request` returns the errno (0: done). */
function openMnl(): { request(msg: Buffer, seq: number): number; close(): void } {
  const m = loadMnl();
  const nl = m.open(NETLINK_NETFILTER);
  if (!nl) throw new CtnetlinkError(`mnl_socket_open failed (errno ${koffi.errno()})`);
  if (m.bind(nl, 0, 0) < 0) {
    const errno = koffi.errno();
    m.close(nl);
    throw new CtnetlinkError(`mnl_socket_bind failed (errno ${errno})`);
  }
  const buf = Buffer.alloc(8192);
  return {
    request(msg, seq) {
      if (m.sendto(nl, msg, msg.length) < 0) return koffi.errno();
      // The acknowledgement of this request (an older one's, after an error, is skipped).
      for (;;) {
        const n = m.recvfrom(nl, buf, buf.length);
        if (n < 0) return koffi.errno();
        for (let off = 0; off + 16 <= n; ) {
          const len = buf.readUInt32LE(off);
          if (len < 16) break;
          if (buf.readUInt16LE(off + 4) === NLMSG_ERROR && buf.readUInt32LE(off + 8) === seq >>> 0) {
            return -buf.readInt32LE(off + 16);
          }
          off += (len + 3) & ~3;
        }
      }
    },
    close() {
      m.close(nl);
    },
  };
}

/** Network byte order u16 (as the library stores ports) ↔ number. */
const swap16 = (v: number): number => ((v & 0xff) << 8) | ((v >> 8) & 0xff);

function u32ToIpv4(v: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
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
  const a = loadApi();
  const handle = a.open(CONNTRACK, 0);
  if (!handle) throw new CtnetlinkError(`nfct_open failed (errno ${koffi.errno()})`);
  /** Where the dump callback puts entries; set for the duration of one dump. */
  let sink: { family: Family; protocol: ConntrackProtocol; out: KernelConntrackEntry[] } | undefined;
  const v6 = (ct: bigint, attr: number): string | undefined => {
    const p = a.getAttr(ct, attr);
    return p ? bytesToIpv6(new Uint8Array(koffi.view(p, 16))) : undefined;
  };
  const onEntry = (_type: number, ct: bigint): number => {
    const s = sink;
    if (!s) return NFCT_CB_CONTINUE;
    try {
      if (a.getU8(ct, ATTR.ORIG_L4PROTO) !== L4[s.protocol]) return NFCT_CB_CONTINUE;
      const tuple = (src: string | undefined, dst: string | undefined, sp: number, dp: number) =>
        src && dst
          ? ({ src, dst, sport: swap16(a.getU16(ct, sp)), dport: swap16(a.getU16(ct, dp)) } as ConntrackTuple)
          : undefined;
      const original =
        s.family === 'ipv4'
          ? tuple(
              u32ToIpv4(a.getU32(ct, ATTR.ORIG_IPV4_SRC)),
              u32ToIpv4(a.getU32(ct, ATTR.ORIG_IPV4_DST)),
              ATTR.ORIG_PORT_SRC,
              ATTR.ORIG_PORT_DST,
            )
          : tuple(v6(ct, ATTR.ORIG_IPV6_SRC), v6(ct, ATTR.ORIG_IPV6_DST), ATTR.ORIG_PORT_SRC, ATTR.ORIG_PORT_DST);
      const reply =
        s.family === 'ipv4'
          ? tuple(
              u32ToIpv4(a.getU32(ct, ATTR.REPL_IPV4_SRC)),
              u32ToIpv4(a.getU32(ct, ATTR.REPL_IPV4_DST)),
              ATTR.REPL_PORT_SRC,
              ATTR.REPL_PORT_DST,
            )
          : tuple(v6(ct, ATTR.REPL_IPV6_SRC), v6(ct, ATTR.REPL_IPV6_DST), ATTR.REPL_PORT_SRC, ATTR.REPL_PORT_DST);
      if (!original || !reply) return NFCT_CB_CONTINUE;
      const zone = a.isSet(ct, ATTR.ZONE) ? a.getU16(ct, ATTR.ZONE) : 0;
      s.out.push({
        family: s.family,
        protocol: s.protocol,
        original,
        reply,
        ...(a.isSet(ct, ATTR.ID) ? { id: a.getU32(ct, ATTR.ID) >>> 0 } : {}),
        ...(zone !== 0 ? { zone } : {}),
      });
    } catch {
      // An exception must not unwind through C; the entry is skipped (counted by nobody: never expected).
    }
    return NFCT_CB_CONTINUE;
  };
  const callback = koffi.register(onEntry, koffi.pointer(a.callbackProto));
  if (a.callbackRegister(handle, NFCT_T_ALL, callback, null) !== 0) {
    koffi.unregister(callback);
    a.close(handle);
    throw new CtnetlinkError('nfct_callback_register failed');
  }
  let mnl: ReturnType<typeof openMnl>;
  try {
    mnl = openMnl();
  } catch (err) {
    koffi.unregister(callback);
    a.close(handle);
    throw err;
  }
  let seq = 0;
  let closed = false;
  /** The entry with this original tuple now (undefined: none), read with `IPCTNL_MSG_CT_GET`. */
  const get = (e: KernelConntrackEntry): KernelConntrackEntry | undefined => {
    const v = validEntry(e);
    const obj = a.newCt();
    if (!obj) throw new CtnetlinkError('nfct_new failed');
    const out: KernelConntrackEntry[] = [];
    try {
      const v4 = v.family === 'ipv4';
      const addr = (text: string): Buffer =>
        v4 ? be32(Number(ipToBigInt({ family: 'ipv4', text }))) : ipv6ToBytes(text);
      a.setAttr(obj, ATTR.ORIG_L3PROTO, Buffer.from([AF[v.family]]));
      a.setAttr(obj, ATTR.ORIG_L4PROTO, Buffer.from([v.l4]));
      a.setAttr(obj, v4 ? ATTR.ORIG_IPV4_SRC : ATTR.ORIG_IPV6_SRC, addr(v.src));
      a.setAttr(obj, v4 ? ATTR.ORIG_IPV4_DST : ATTR.ORIG_IPV6_DST, addr(v.dst));
      a.setAttr(obj, ATTR.ORIG_PORT_SRC, be16(v.sport));
      a.setAttr(obj, ATTR.ORIG_PORT_DST, be16(v.dport));
      if (v.zone !== 0) {
        const z = Buffer.alloc(2);
        z.writeUInt16LE(v.zone);
        a.setAttr(obj, ATTR.ZONE, z);
      }
      sink = { family: v.family, protocol: e.protocol, out };
      if (a.query(handle, NFCT_Q_GET, obj) !== 0) {
        const errno = koffi.errno();
        if (errno === ENOENT) return undefined;
        throw new CtnetlinkError(`reading ${v.what}: errno ${errno}`);
      }
    } finally {
      sink = undefined;
      a.destroyCt(obj);
    }
    return out[0];
  };
  const familyArg = { ipv4: Buffer.alloc(4), ipv6: Buffer.alloc(4) };
  familyArg.ipv4.writeUInt32LE(AF.ipv4);
  familyArg.ipv6.writeUInt32LE(AF.ipv6);

  return {
    list(family, protocol) {
      if (closed) throw new CtnetlinkError('ctnetlink handle closed');
      if (family !== 'ipv4' && family !== 'ipv6') throw new CtnetlinkError(`invalid family ${String(family)}`);
      if (!(protocol in L4)) throw new CtnetlinkError(`invalid protocol ${String(protocol)}`);
      const out: KernelConntrackEntry[] = [];
      sink = { family, protocol, out };
      try {
        if (a.query(handle, NFCT_Q_DUMP, familyArg[family]) !== 0) {
          throw new CtnetlinkError(`conntrack dump (${family}) failed: errno ${koffi.errno()}`);
        }
      } finally {
        sink = undefined;
      }
      return out;
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
      a.close(handle);
      koffi.unregister(callback);
    },
  };
}
