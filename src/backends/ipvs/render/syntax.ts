/**
 * @module backends/ipvs/render/syntax
 * The only place `ipvsadm -R` lines and `ip -batch` lines are made. Every builder takes typed
 * values and checks each of them here (an address is a canonical IPv4/IPv6 address, a port is
 * 1..65535, a scheduler is one of the kernel's names, a timeout or mark is a bounded integer); a
 * violation throws, a programming error since the sources and the config validate first. Nothing
 * user-controlled is ever pasted into a line unchecked, and no line can carry a second option or
 * a newline.
 */
import type { Family, Protocol } from '../../../model/cluster.ts';
import { isIpvsScheduler, type IpvsScheduler } from '../../../model/ipvs-schedulers.ts';
import { parseIp } from '../../../model/ip.ts';

/** The dummy interface that holds the service addresses (upstream's name). */
export const DUMMY_INTERFACE = 'kube-ipvs0';

/** A virtual server's identity: an (address, protocol, port), or a firewall mark of one family. */
export type VirtualServerKey =
  | { readonly kind: 'address'; readonly protocol: Protocol; readonly ip: string; readonly port: number }
  | { readonly kind: 'fwmark'; readonly family: Family; readonly mark: number };

/** Scheduler flags kproxy sets (upstream sets mh's port hashing); others are kept as read. */
export type SchedulerFlag = 'mh-port';

export interface VirtualServer {
  readonly key: VirtualServerKey;
  readonly scheduler: IpvsScheduler;
  /** ClientIP affinity: persistence timeout in seconds. */
  readonly persistence?: number;
  readonly flags: readonly SchedulerFlag[];
}

export interface RealServer {
  readonly ip: string;
  readonly port: number;
  /** 1, or 0 while it drains. */
  readonly weight: number;
}

/** Largest persistence timeout and `--set` timeout the kernel keeps (INT_MAX jiffies at HZ=1000). */
export const MAX_TIMEOUT_SECONDS = 2_147_483;

// ---------------------------------------------------------------------------------------------
// Checks

/** A canonical address of either family (as model/ip.ts prints it); anything else throws. */
export function checkIp(ip: string): string {
  const parsed = typeof ip === 'string' ? parseIp(ip) : undefined;
  if (!parsed || parsed.text !== ip) throw new Error(`invalid IP address ${JSON.stringify(ip)}`);
  return ip;
}

export function familyOfIp(ip: string): Family {
  return checkIp(ip).includes(':') ? 'ipv6' : 'ipv4';
}

export function checkPort(port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`invalid port ${String(port)}`);
  return port;
}

export function checkScheduler(name: string): IpvsScheduler {
  if (typeof name !== 'string' || !isIpvsScheduler(name))
    throw new Error(`invalid IPVS scheduler ${JSON.stringify(name)}`);
  return name;
}

export function checkTimeout(seconds: number): number {
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_TIMEOUT_SECONDS)
    throw new Error(`invalid IPVS timeout ${String(seconds)}`);
  return seconds;
}

/** A firewall mark of a virtual server: a non-zero 32-bit value. */
export function checkMark(mark: number): number {
  if (!Number.isInteger(mark) || mark < 1 || mark > 0xffffffff)
    throw new Error(`invalid firewall mark ${String(mark)}`);
  return mark;
}

function checkWeight(weight: number): number {
  if (!Number.isInteger(weight) || weight < 0 || weight > 65535) throw new Error(`invalid weight ${String(weight)}`);
  return weight;
}

function checkFlag(flag: string): SchedulerFlag {
  if (flag !== 'mh-port') throw new Error(`invalid scheduler flag ${JSON.stringify(flag)}`);
  return flag;
}

const PROTOCOL_OPTION: Readonly<Record<Protocol, string>> = { TCP: '-t', UDP: '-u', SCTP: '--sctp-service' };

// ---------------------------------------------------------------------------------------------
// Texts

/** `IP:port`, IPv6 in brackets, as ipvsadm writes and reads it. */
export function hostPort(ip: string, port: number): string {
  checkIp(ip);
  checkPort(port);
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** A stable text for a key: map keys, logs, the order of the batch. */
export function keyText(key: VirtualServerKey): string {
  return key.kind === 'address'
    ? `${key.protocol}/${hostPort(key.ip, key.port)}`
    : `FWM/${key.family === 'ipv4' ? '4' : '6'}/${checkMark(key.mark)}`;
}

export function keyFamily(key: VirtualServerKey): Family {
  return key.kind === 'address' ? familyOfIp(key.ip) : key.family;
}

/** The options naming a virtual server: `-t 10.96.0.10:80`, `--sctp-service [fd00::a]:80`, `-f 5 -6`. */
function serviceOption(key: VirtualServerKey): string {
  if (key.kind === 'address') {
    const option = PROTOCOL_OPTION[key.protocol];
    if (option === undefined) throw new Error(`invalid protocol ${JSON.stringify(key.protocol)}`);
    return `${option} ${hostPort(key.ip, key.port)}`;
  }
  if (key.family !== 'ipv4' && key.family !== 'ipv6') throw new Error(`invalid family ${JSON.stringify(key.family)}`);
  return `-f ${checkMark(key.mark)}${key.family === 'ipv6' ? ' -6' : ''}`;
}

function serviceParams(vs: VirtualServer): string {
  let text = ` -s ${checkScheduler(vs.scheduler)}`;
  if (vs.flags.length > 0) text += ` -b ${vs.flags.map(checkFlag).join(',')}`;
  if (vs.persistence !== undefined) text += ` -p ${checkTimeout(vs.persistence)}`;
  return text;
}

function serverOption(key: VirtualServerKey, rs: RealServer): string {
  const server = hostPort(rs.ip, rs.port);
  if (familyOfIp(rs.ip) !== keyFamily(key))
    throw new Error(`real server ${server} of another family than ${keyText(key)}`);
  return `${serviceOption(key)} -r ${server}`;
}

/** Lines of an `ipvsadm -R` batch (one command each, in ipvsadm's own save syntax). */
export const line = {
  addService: (vs: VirtualServer): string => `-A ${serviceOption(vs.key)}${serviceParams(vs)}`,
  /** Changes scheduler, flags and persistence in place (real servers and connections stay). */
  editService: (vs: VirtualServer): string => `-E ${serviceOption(vs.key)}${serviceParams(vs)}`,
  deleteService: (key: VirtualServerKey): string => `-D ${serviceOption(key)}`,
  /** Masquerading (NAT) forwarding, always. */
  addServer: (key: VirtualServerKey, rs: RealServer): string =>
    `-a ${serverOption(key, rs)} -m -w ${checkWeight(rs.weight)}`,
  editServer: (key: VirtualServerKey, rs: RealServer): string =>
    `-e ${serverOption(key, rs)} -m -w ${checkWeight(rs.weight)}`,
  deleteServer: (key: VirtualServerKey, rs: Pick<RealServer, 'ip' | 'port'>): string =>
    `-d ${serviceOption(key)} -r ${hostPort(rs.ip, rs.port)}`,
};

/** `ip -batch` lines for kube-ipvs0's addresses (host routes: /32, /128; no IPv6 duplicate detection). */
export const addressLine = {
  add: (ip: string): string =>
    familyOfIp(ip) === 'ipv4'
      ? `address add ${ip}/32 dev ${DUMMY_INTERFACE}`
      : `address add ${ip}/128 dev ${DUMMY_INTERFACE} nodad`,
  delete: (ip: string): string => `address del ${ip}/${familyOfIp(ip) === 'ipv4' ? 32 : 128} dev ${DUMMY_INTERFACE}`,
};

/** `ipvsadm --set TCP TCPFIN UDP` arguments (0 keeps the kernel's value). */
export function timeoutArgs(t: { tcp: number; tcpFin: number; udp: number }): string[] {
  const check = (s: number) => {
    if (s !== 0) checkTimeout(s);
    return String(s);
  };
  return ['--set', check(t.tcp), check(t.tcpFin), check(t.udp)];
}
