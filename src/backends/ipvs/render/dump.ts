/**
 * @module backends/ipvs/render/dump
 * What `kproxy dump --proxy-mode ipvs` prints for a family, and what a sync would program into an
 * empty kernel: the virtual servers as an `ipvsadm -R` batch, kube-ipvs0's addresses as an
 * `ip -batch` script, and the helper table as an `nft -f` transaction, each section introduced by
 * a `#` line.
 */
import type { Family } from '../../../model/cluster.ts';
import { createCommands, transactionText } from '../../nftables/render/ruleset.ts';
import type { IpvsFamilyState } from './layout.ts';
import { addressLine, line } from './syntax.ts';

const FAMILY_NAME: Readonly<Record<Family, string>> = { ipv4: 'IPv4', ipv6: 'IPv6' };

/** The batch that creates these virtual servers from nothing: services, then their real servers. */
export function createBatch(state: IpvsFamilyState): string[] {
  const out: string[] = [];
  for (const d of state.virtualServers.values()) out.push(line.addService(d.vs));
  for (const d of state.virtualServers.values()) for (const rs of d.realServers) out.push(line.addServer(d.vs.key, rs));
  return out;
}

export function dumpText(states: readonly IpvsFamilyState[]): string {
  const out: string[] = [];
  for (const s of states) {
    const fam = FAMILY_NAME[s.family];
    out.push(`# ${fam} virtual servers (ipvsadm -R)`);
    out.push(...createBatch(s));
    out.push(`# ${fam} addresses on kube-ipvs0 (ip -batch)`);
    out.push(...s.addresses.map(addressLine.add));
    out.push(`# ${fam} helper rules (nft -f)`);
    out.push(transactionText(createCommands(s.ruleset)).replace(/\n$/, ''));
  }
  return `${out.join('\n')}\n`;
}
