/**
 * @module kernel/netlink
 * A netfilter netlink socket (NETLINK_NETFILTER) for dumps, single requests and batches (one
 * transaction of many messages): requests are built and answers parsed here, in JavaScript, over
 * Buffers; the system calls go through koffi to the C library. Used where a tool would be slow at
 * scale: `nft -j list table` spends ~5 s at 10,000 Services formatting 147k map elements that this
 * reads in well under one, and `nft -f` ~1 s parsing them where this writes them in ~0.3 s.
 *
 * The socket belongs to the network namespace of the process that opens it (see spawner-child.ts).
 */
import { createRequire } from 'node:module';

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_NETFILTER = 12;
const NLM_F_REQUEST = 0x1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLM_F_ACK = 0x4;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const SOL_SOCKET = 1;
const SO_SNDBUFFORCE = 32;
const SOL_NETLINK = 270;
/** Errors echo only the failing message's header, not the whole message. */
const NETLINK_CAP_ACK = 10;
const MSG_DONTWAIT = 0x40;
const EAGAIN = 11;
/** Attribute type bits that are flags, not the type. */
const NLA_TYPE_MASK = 0x3fff;

interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  send(fd: number, buf: Buffer, len: number, flags: number): number;
  recv(fd: number, buf: Buffer, len: number, flags: number): number;
  setsockopt(fd: number, level: number, name: number, value: Buffer, len: number): number;
  close(fd: number): number;
  errno(): number;
}

let libc: Libc | undefined;

function load(): Libc {
  if (libc) return libc;
  // koffi is CommonJS with a native addon: loaded on demand, only by the process that uses it.
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  const c = koffi.load('libc.so.6');
  libc = {
    socket: c.func('int socket(int domain, int type, int protocol)') as Libc['socket'],
    bind: c.func('int bind(int fd, void *addr, uint32_t len)') as Libc['bind'],
    send: c.func('intptr_t send(int fd, void *buf, size_t len, int flags)') as Libc['send'],
    recv: c.func('intptr_t recv(int fd, void *buf, size_t len, int flags)') as Libc['recv'],
    setsockopt: c.func('int setsockopt(int fd, int level, int name, void *value, uint32_t len)') as Libc['setsockopt'],
    close: c.func('int close(int fd)') as Libc['close'],
    errno: () => koffi.errno(),
  };
  return libc;
}

export class NetlinkError extends Error {
  override readonly name = 'NetlinkError';
  /** The errno the kernel or the C library returned (positive). */
  readonly errno: number;
  constructor(message: string, errno: number) {
    super(`${message} (errno ${errno})`);
    this.errno = errno;
  }
}

/** One netlink attribute: its type (flags masked off) and its payload. */
export interface Attr {
  readonly type: number;
  readonly value: Buffer;
}

/** The attributes in `b` (a message body after its fixed header, or a nested attribute's payload). */
export function attrs(b: Buffer): Attr[] {
  const out: Attr[] = [];
  let at = 0;
  while (at + 4 <= b.length) {
    const len = b.readUInt16LE(at);
    if (len < 4 || at + len > b.length) break;
    out.push({ type: b.readUInt16LE(at + 2) & NLA_TYPE_MASK, value: b.subarray(at + 4, at + len) });
    at += (len + 3) & ~3;
  }
  return out;
}

/** The first attribute of `type` among `list`. */
export function attr(list: readonly Attr[], type: number): Buffer | undefined {
  return list.find((a) => a.type === type)?.value;
}

/** A NUL-terminated string attribute. */
export function stringAttr(b: Buffer | undefined): string | undefined {
  if (!b) return undefined;
  const end = b.indexOf(0);
  return b.toString('utf8', 0, end < 0 ? b.length : end);
}

/** A string attribute, NUL-terminated, as the kernel expects it. */
export function encodeStringAttr(type: number, s: string): Buffer {
  return encodeAttr(type, Buffer.from(`${s}\0`, 'utf8'));
}

/** An attribute holding `value` (padded to 4 bytes). */
function encodeAttr(type: number, value: Buffer): Buffer {
  const b = Buffer.alloc((4 + value.length + 3) & ~3);
  b.writeUInt16LE(4 + value.length, 0);
  b.writeUInt16LE(type, 2);
  value.copy(b, 4);
  return b;
}

/** One message of a batch: netlink type (subsystem << 8 | message), flags, nfgenmsg family, attributes. */
export interface BatchMessage {
  readonly type: number;
  readonly flags: number;
  readonly family: number;
  readonly body: Buffer;
}

/**
 * Sends `messages` as one nfnetlink batch of `subsystem`: the kernel runs it as one transaction
 * (all or nothing) inside this send, so every answer is queued when it returns. Each message asks
 * for an acknowledgement; throws the first refusal, or when any acknowledgement is missing.
 */
export function netfilterBatch(subsystem: number, messages: readonly BatchMessage[]): void {
  if (messages.length === 0) return;
  withSocket((c, fd) => {
    const parts = [message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, 0, 0, subsystem)];
    for (const [i, m] of messages.entries()) {
      parts.push(message(m.type, m.flags | NLM_F_REQUEST | NLM_F_ACK, i + 2, m.family, m.body.length), m.body);
    }
    parts.push(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, messages.length + 2, 0, 0, subsystem));
    const batch = Buffer.concat(parts);
    // The whole batch is one datagram: the send buffer must hold it (CAP_NET_ADMIN may force it).
    setIntOption(c, fd, SOL_SOCKET, SO_SNDBUFFORCE, batch.length + 4096);
    setIntOption(c, fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
    if (c.send(fd, batch, batch.length, 0) !== batch.length) throw new NetlinkError('netlink batch send', c.errno());
    let acknowledged = 0;
    const buf = Buffer.alloc(1 << 16);
    for (;;) {
      const n = c.recv(fd, buf, buf.length, MSG_DONTWAIT);
      if (n < 0) {
        const errno = c.errno();
        if (errno === EAGAIN) break;
        throw new NetlinkError('netlink batch recv', errno);
      }
      for (let at = 0; at + 20 <= n; at += (buf.readUInt32LE(at) + 3) & ~3) {
        if (buf.readUInt16LE(at + 4) !== NLMSG_ERROR) continue;
        const err = -buf.readInt32LE(at + 16);
        if (err !== 0) throw new NetlinkError('netlink batch refused', err);
        acknowledged++;
      }
    }
    if (acknowledged !== messages.length)
      throw new NetlinkError(`netlink batch: ${acknowledged} of ${messages.length} messages acknowledged`, 0);
  });
}

/** Runs `fn` with a fresh NETLINK_NETFILTER socket, bound, and closes it after. */
function withSocket<T>(fn: (c: Libc, fd: number) => T): T {
  const c = load();
  const fd = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) throw new NetlinkError('netlink socket', c.errno());
  try {
    const local = Buffer.alloc(12);
    local.writeUInt16LE(AF_NETLINK, 0);
    if (c.bind(fd, local, local.length) < 0) throw new NetlinkError('netlink bind', c.errno());
    return fn(c, fd);
  } finally {
    c.close(fd);
  }
}

/**
 * A message's header and nfgenmsg (family, version 0, res_id in network order), for a body of
 * `bodyLength` bytes that follows.
 */
function message(type: number, flags: number, seq: number, family: number, bodyLength: number, resId = 0): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32LE(20 + bodyLength, 0);
  b.writeUInt16LE(type, 4);
  b.writeUInt16LE(flags, 6);
  b.writeUInt32LE(seq, 8);
  b[16] = family;
  b.writeUInt16BE(resId, 18);
  return b;
}

function setIntOption(c: Libc, fd: number, level: number, name: number, value: number): void {
  const v = Buffer.alloc(4);
  v.writeInt32LE(value, 0);
  if (c.setsockopt(fd, level, name, v, 4) < 0) throw new NetlinkError(`netlink setsockopt ${level}/${name}`, c.errno());
}

/**
 * Runs one netfilter dump: `type` (subsystem << 8 | message), the nfgenmsg family, request
 * attributes. Calls `each` with every answer message's attributes (after its nfgenmsg header),
 * a view of a buffer the next read reuses: decode or copy what you keep before returning.
 */
export function netfilterDump(
  type: number,
  family: number,
  body: readonly Buffer[],
  each: (body: Buffer) => void,
): void {
  exchange(type, family, body, true, each);
}

/** Sends one netfilter request that is not a dump; returns its answer's attributes (a copy). */
export function netfilterGet(type: number, family: number, body: readonly Buffer[]): Buffer {
  let answer: Buffer | undefined;
  exchange(type, family, body, false, (b) => {
    answer = Buffer.from(b);
  });
  if (!answer) throw new NetlinkError('netlink: no answer', 0);
  return answer;
}

/** One request on a fresh socket; a dump's answers until NLMSG_DONE, else the first answer. */
function exchange(
  type: number,
  family: number,
  body: readonly Buffer[],
  dump: boolean,
  each: (body: Buffer) => void,
): void {
  withSocket((c, fd) => {
    const attributes = Buffer.concat(body);
    const flags = NLM_F_REQUEST | (dump ? NLM_F_DUMP : 0);
    const request = Buffer.concat([message(type, flags, 1, family, attributes.length), attributes]);
    if (c.send(fd, request, request.length, 0) !== request.length) throw new NetlinkError('netlink send', c.errno());
    const buf = Buffer.alloc(1 << 20);
    for (;;) {
      const n = c.recv(fd, buf, buf.length, 0);
      if (n < 0) throw new NetlinkError('netlink recv', c.errno());
      let at = 0;
      while (at + 16 <= n) {
        const len = buf.readUInt32LE(at);
        const msgType = buf.readUInt16LE(at + 4);
        if (len < 16 || at + len > n) throw new NetlinkError('netlink: truncated message', 0);
        if (msgType === NLMSG_DONE) return;
        if (msgType === NLMSG_ERROR) {
          const err = -buf.readInt32LE(at + 16);
          if (err !== 0) throw new NetlinkError(dump ? 'netlink dump refused' : 'netlink request refused', err);
          if (!dump) return; // an acknowledgement without an answer
        } else {
          each(buf.subarray(at + 20, at + len));
          if (!dump) return;
        }
        at += (len + 3) & ~3;
      }
    }
  });
}
