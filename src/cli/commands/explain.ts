/**
 * @module cli/commands/explain
 * `kproxy explain --src IP[:PORT] --dst IP:PORT [--proto tcp|udp|sctp] [--from pod|node|outside]`:
 * what this node's rules do with one packet, and why (src/explain/explain.ts), as text or as the
 * `--output json` contract. `--packets FILE|-` explains one packet per line (`SRC DST [PROTO]
 * [FROM]`) against one read of the cluster, answering each line as it arrives (one JSON line per
 * packet with `--output json`). Reads the cluster from `--manifests DIR` or the API server;
 * touches nothing.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Loaded } from '../../config/load.ts';
import { explainPacket, ExplainError, type Packet, type PacketOrigin } from '../../explain/explain.ts';
import { explanationText } from '../../explain/format.ts';
import { MODE_TRAITS } from '../../explain/modes.ts';
import type { ClusterSnapshot, IpAddress, Protocol } from '../../model/cluster.ts';
import { parseIp } from '../../model/ip.ts';
import type { Logger } from '../../util/log.ts';
import { clusterSnapshot } from './cluster-input.ts';

interface PacketFields {
  readonly src?: string | undefined;
  readonly dst?: string | undefined;
  readonly proto?: string | undefined;
  readonly from?: string | undefined;
}

/** `stdin`: what `--packets -` reads (the IPVS VM's flow suite answers in-process through it). */
export async function explain(
  loaded: Loaded,
  log: Logger,
  out: NodeJS.WritableStream,
  stdin: NodeJS.ReadableStream = process.stdin,
): Promise<number> {
  const o = loaded.commandOptions;
  const problems: string[] = [];
  const output = o.output ?? 'text';
  if (output !== 'text' && output !== 'json')
    problems.push(`--output: must be text or json, got ${JSON.stringify(output)}`);
  const localAddresses = (o['local-addresses'] ?? '')
    .split(',')
    .map((a) => a.trim())
    .filter(Boolean);
  for (const a of localAddresses)
    if (!parseIp(a)) problems.push(`--local-addresses: not an IP address: ${JSON.stringify(a)}`);
  const batch = o.packets;
  let single: Packet | undefined;
  if (batch === undefined) {
    const parsed = parsePacket(o, '--');
    if (typeof parsed === 'string') problems.push(parsed);
    else single = parsed;
  } else if (o.src !== undefined || o.dst !== undefined) {
    problems.push('--packets and --src/--dst: give one or the other');
  }
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(`kproxy explain: ${p}\n`);
    return 2;
  }
  const snapshot = await clusterSnapshot(loaded, log, loaded.manifests);
  if (!snapshot) return 1;
  const answer = (packet: Packet): string => {
    const e = explainPacket({
      snapshot: snapshot as ClusterSnapshot,
      config: loaded.config,
      traits: MODE_TRAITS[loaded.config.mode],
      packet,
      localAddresses,
    });
    return output === 'json' ? `${JSON.stringify(e, null, batch === undefined ? 2 : undefined)}\n` : explanationText(e);
  };

  if (single) {
    try {
      out.write(answer(single));
      return 0;
    } catch (err) {
      if (!(err instanceof ExplainError)) throw err;
      process.stderr.write(`kproxy explain: ${err.message}\n`);
      return 2;
    }
  }
  let failed = false;
  const lines = createInterface({ input: batch === '-' ? stdin : createReadStream(batch as string) });
  for await (const raw of lines) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [src, dst, proto, from] = line.split(/\s+/);
    const parsed = parsePacket({ src, dst, proto, from }, '');
    let text: string;
    try {
      if (typeof parsed === 'string') throw new ExplainError(parsed);
      text = answer(parsed);
    } catch (err) {
      if (!(err instanceof ExplainError)) throw err;
      failed = true;
      text =
        output === 'json' ? `${JSON.stringify({ error: err.message, line })}\n` : `error: ${err.message}: ${line}\n`;
    }
    out.write(output === 'json' ? text : `${text}\n`);
  }
  return failed ? 2 : 0;
}

/** A packet from its four fields (flags, or the words of a `--packets` line); a message when one is wrong. */
function parsePacket(f: PacketFields, prefix: string): Packet | string {
  const problems: string[] = [];
  if (f.src === undefined) problems.push(`${prefix}src IP[:PORT] is required`);
  if (f.dst === undefined) problems.push(`${prefix}dst IP:PORT is required`);
  const src = f.src === undefined ? undefined : hostPort(f.src, false);
  const dst = f.dst === undefined ? undefined : hostPort(f.dst, true);
  if (typeof src === 'string') problems.push(`${prefix}src: ${src}`);
  if (typeof dst === 'string') problems.push(`${prefix}dst: ${dst}`);
  const proto = (f.proto ?? 'tcp').toUpperCase();
  if (!['TCP', 'UDP', 'SCTP'].includes(proto))
    problems.push(`${prefix}proto: must be tcp, udp or sctp, got ${JSON.stringify(f.proto)}`);
  if (f.from !== undefined && !['pod', 'node', 'outside'].includes(f.from))
    problems.push(`${prefix}from: must be pod, node or outside, got ${JSON.stringify(f.from)}`);
  if (problems.length > 0 || typeof src !== 'object' || typeof dst !== 'object' || dst.port === undefined)
    return problems.join('; ');
  return {
    src: src.ip,
    ...(src.port !== undefined ? { srcPort: src.port } : {}),
    dst: dst.ip,
    dstPort: dst.port,
    protocol: proto as Protocol,
    ...(f.from !== undefined ? { from: f.from as PacketOrigin } : {}),
  };
}

/** `IP`, `IP:PORT`, `[IPv6]:PORT` or a bare IPv6 address; a message when it does not parse. */
export function hostPort(text: string, portRequired: boolean): { ip: IpAddress; port?: number } | string {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:]+)(?::(\d+))?$/.exec(text);
  const ip = parseIp(m ? (m[1] ?? '') : text);
  const portText = m ? m[2] : undefined;
  if (!ip) return `not an IP address or IP:PORT: ${JSON.stringify(text)}`;
  if (portText === undefined)
    return portRequired ? `needs a port (IP:PORT, [IPv6]:PORT): ${JSON.stringify(text)}` : { ip };
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return `port out of range 1..65535: ${JSON.stringify(text)}`;
  return { ip, port };
}
