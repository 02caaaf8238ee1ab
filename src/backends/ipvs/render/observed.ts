/**
 * @module backends/ipvs/render/observed
 * What the kernel holds, read back from the tools' text (pure parsers): the virtual servers of
 * `ipvsadm -Sn`, the connection counts of `ipvsadm -Ln`, and the addresses of `ip -o addr show`.
 * Lines kproxy cannot read completely are kept as "unrecognised" rather than guessed at: a
 * virtual server with an option kproxy does not write is one kproxy does not match.
 */
import type { Family, Protocol } from '../../../model/cluster.ts';
import { parseIp } from '../../../model/ip.ts';
import { keyText, type VirtualServerKey } from './syntax.ts';

export interface ObservedRealServer {
  readonly ip: string;
  readonly port: number;
  readonly weight: number;
  /** m (masquerading), g (direct routing), i (tunnel). */
  readonly method: 'm' | 'g' | 'i';
  /** Options kproxy never writes (thresholds, tunnel types), verbatim. */
  readonly other: readonly string[];
}

export interface ObservedVirtualServer {
  readonly key: VirtualServerKey;
  readonly scheduler: string;
  readonly persistence?: number;
  /** `-b` scheduler flags. */
  readonly flags: readonly string[];
  /** Options kproxy never writes (netmask, persistence engine), verbatim. */
  readonly other: readonly string[];
  /** By `hostPort`. */
  readonly realServers: Map<string, ObservedRealServer>;
}

export interface ObservedIpvs {
  /** By keyText. */
  readonly virtualServers: Map<string, ObservedVirtualServer>;
  /** Lines that could not be read at all (foreign, unusual): reported, never touched. */
  readonly unreadable: readonly string[];
}

const PROTOCOL: Readonly<Record<string, Protocol>> = { '-t': 'TCP', '-u': 'UDP', '--sctp-service': 'SCTP' };

/** `IP:port` or `[IPv6]:port` → canonical parts. */
export function parseHostPort(text: string): { ip: string; port: number } | undefined {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(text) ?? /^([0-9.]+):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const ip = parseIp(m[1] ?? '');
  const port = Number(m[2]);
  if (!ip || port < 1 || port > 65535) return undefined;
  return { ip: ip.text, port };
}

function hostPortText(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Reads `ipvsadm -Sn` (the restore syntax): `-A` lines for services, `-a` lines for their real servers. */
export function parseIpvsSave(text: string): ObservedIpvs {
  const virtualServers = new Map<string, ObservedVirtualServer>();
  const unreadable: string[] = [];
  for (const raw of text.split('\n')) {
    const l = raw.trim();
    if (l === '') continue;
    const tokens = l.split(/\s+/);
    const cmd = tokens[0];
    const parsed = parseOptions(tokens.slice(1));
    if (!parsed || (cmd !== '-A' && cmd !== '-a')) {
      unreadable.push(l);
      continue;
    }
    const k = keyText(parsed.key);
    if (cmd === '-A') {
      virtualServers.set(k, {
        key: parsed.key,
        scheduler: parsed.scheduler ?? '',
        ...(parsed.persistence !== undefined ? { persistence: parsed.persistence } : {}),
        flags: parsed.flags,
        other: parsed.other,
        realServers: new Map(),
      });
      continue;
    }
    const vs = virtualServers.get(k);
    if (!vs || !parsed.server) {
      unreadable.push(l);
      continue;
    }
    vs.realServers.set(hostPortText(parsed.server.ip, parsed.server.port), {
      ip: parsed.server.ip,
      port: parsed.server.port,
      weight: parsed.weight ?? 1,
      method: parsed.method ?? 'g',
      other: parsed.other,
    });
  }
  return { virtualServers, unreadable };
}

interface ParsedOptions {
  key: VirtualServerKey;
  scheduler?: string;
  persistence?: number;
  flags: string[];
  server?: { ip: string; port: number };
  method?: 'm' | 'g' | 'i';
  weight?: number;
  other: string[];
}

function parseOptions(tokens: readonly string[]): ParsedOptions | undefined {
  let key: VirtualServerKey | undefined;
  let fwmark: number | undefined;
  let v6 = false;
  const out: Omit<ParsedOptions, 'key'> = { flags: [], other: [] };
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] ?? '';
    const arg = tokens[i + 1];
    const protocol = PROTOCOL[t];
    if (protocol !== undefined) {
      const hp = arg !== undefined ? parseHostPort(arg) : undefined;
      if (!hp) return undefined;
      key = { kind: 'address', protocol, ip: hp.ip, port: hp.port };
      i++;
    } else if (t === '-f') {
      if (arg === undefined || !/^\d{1,10}$/.test(arg) || Number(arg) < 1 || Number(arg) > 0xffffffff) return undefined;
      fwmark = Number(arg);
      i++;
    } else if (t === '-6') v6 = true;
    else if (t === '-s') {
      if (arg === undefined) return undefined;
      out.scheduler = arg;
      i++;
    } else if (t === '-p') {
      if (arg === undefined || !/^\d{1,10}$/.test(arg)) return undefined;
      out.persistence = Number(arg);
      i++;
    } else if (t === '-b') {
      if (arg === undefined) return undefined;
      out.flags.push(...arg.split(',').filter(Boolean));
      i++;
    } else if (t === '-r') {
      const hp = arg !== undefined ? parseHostPort(arg) : undefined;
      if (!hp) return undefined;
      out.server = hp;
      i++;
    } else if (t === '-m' || t === '-g' || t === '-i') out.method = t.slice(1) as 'm' | 'g' | 'i';
    else if (t === '-w') {
      if (arg === undefined || !/^\d{1,10}$/.test(arg)) return undefined;
      out.weight = Number(arg);
      i++;
    } else if (t.startsWith('-')) {
      // An option kproxy never writes, with its argument if it has one.
      if (arg !== undefined && !arg.startsWith('-')) {
        out.other.push(`${t} ${arg}`);
        i++;
      } else out.other.push(t);
    } else return undefined;
  }
  if (fwmark !== undefined) key = { kind: 'fwmark', family: v6 ? 'ipv6' : 'ipv4', mark: fwmark };
  if (!key) return undefined;
  return { key, ...out };
}

/** Active and inactive connections per real server, by keyText then hostPort, from `ipvsadm -Ln`. */
export type ConnectionCounts = Map<string, Map<string, { active: number; inactive: number }>>;

/**
 * Reads `ipvsadm -Ln`: service lines (`TCP  10.96.0.10:80 rr`, `FWM  5 IPv6 rr`) each followed by
 * its real servers (`  -> 10.244.0.11:8080  Masq  1  0  0`).
 */
export function parseIpvsList(text: string): ConnectionCounts {
  const out: ConnectionCounts = new Map();
  let current: Map<string, { active: number; inactive: number }> | undefined;
  for (const raw of text.split('\n')) {
    const service = /^(TCP|UDP|SCTP|FWM)\s+(\S+)(\s+IPv6)?\s/.exec(`${raw} `);
    if (service) {
      const [, proto, where, v6] = service;
      let key: VirtualServerKey | undefined;
      if (proto === 'FWM') {
        const mark = Number(where);
        if (Number.isInteger(mark) && mark >= 1) key = { kind: 'fwmark', family: v6 ? 'ipv6' : 'ipv4', mark };
      } else {
        const hp = parseHostPort(where ?? '');
        if (hp) key = { kind: 'address', protocol: proto as Protocol, ip: hp.ip, port: hp.port };
      }
      current = undefined;
      if (key) {
        current = new Map();
        out.set(keyText(key), current);
      }
      continue;
    }
    const server = /^\s+->\s+(\S+)\s+\S+\s+\d+\s+(\d+)\s+(\d+)\s*$/.exec(raw);
    if (server && current) {
      const hp = parseHostPort(server[1] ?? '');
      if (hp) current.set(hostPortText(hp.ip, hp.port), { active: Number(server[2]), inactive: Number(server[3]) });
    }
  }
  return out;
}

export interface InterfaceAddress {
  readonly ifname: string;
  readonly family: Family;
  readonly ip: string;
  readonly scope: string;
}

/** Reads `ip -o addr show`: `2: eth0    inet 192.0.2.1/24 brd … scope global eth0\ …`. */
export function parseAddresses(text: string): InterfaceAddress[] {
  const out: InterfaceAddress[] = [];
  for (const l of text.split('\n')) {
    const m = /^\d+:\s+([^\s:@]+)(?:@\S+)?\s+(inet6?)\s+([0-9a-fA-F:.]+)\/\d+\b.*?\bscope\s+(\S+)/.exec(l);
    if (!m) continue;
    const ip = parseIp(m[3] ?? '');
    if (!ip) continue;
    out.push({ ifname: m[1] ?? '', family: m[2] === 'inet' ? 'ipv4' : 'ipv6', ip: ip.text, scope: m[4] ?? '' });
  }
  return out;
}
