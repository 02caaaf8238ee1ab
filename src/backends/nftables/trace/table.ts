/**
 * @module backends/nftables/trace/table
 * The tables `kproxy trace` adds while it runs: `ip kproxy-trace` / `ip6 kproxy-trace`, one rule
 * per chain that sets `meta nftrace set 1` on the first packet of every new connection to one
 * Service's frontends (ClusterIP, externalIPs, LB IPs; NodePorts on any local address). Pure.
 *
 * Why a table of its own, not a rule in kproxy's: a sync compares kproxy's tables with what it
 * wants, so a rule added there is drift — the daemon's next full sync (or its periodic check)
 * would delete it and the trace would go quiet. kproxy never reads or writes another table, so
 * syncs leave this one alone. The tables are owned (`flags owner`) by the trace's nft session:
 * the kernel deletes them when it ends, and a rule kproxy programs is never touched.
 *
 * Priority -150: after conntrack (-200), so `ct state new` is known (later packets of a connection
 * skip the NAT chains and would say little), and before kproxy's firewall check (-110) and DNAT
 * (-100), so every chain of kproxy's the packet meets is traced.
 */
import type { NodeState } from '../../../model/node-state.ts';
import { Commands, type Chain, type Transaction } from '../render/ruleset.ts';
import { expr, type Fragment, nftFamily, stmt, value, type Value } from '../render/syntax.ts';

export const TRACE_TABLE = 'kproxy-trace';
const PRIORITY = -150;

/** The transaction that (re)creates the trace tables of every family in `states` for `service` (`ns/name`). */
export function traceTableCommands(states: readonly NodeState[], service: string): Transaction {
  const out: Fragment[] = [];
  for (const state of states) {
    const f = nftFamily(state.family);
    const c = new Commands(f, TRACE_TABLE);
    const ports = state.servicePorts.filter((sp) => `${sp.ref.namespace}/${sp.ref.name}` === service);
    const addresses: Value[] = [];
    const nodePorts: Value[] = [];
    for (const sp of ports) {
      const proto = value.protocol(sp.ref.protocol);
      for (const ip of new Set([sp.clusterIP, ...sp.externalIPs, ...sp.loadBalancerIPs]))
        addresses.push(value.concat([value.ip(ip), proto, value.port(sp.port)]));
      if (sp.nodePort !== undefined) nodePorts.push(value.concat([proto, value.port(sp.nodePort)]));
    }
    const newConnection = stmt.match(expr.ctState(), '==', value.keyword('new'));
    const comment = `kproxy trace ${service}`;
    const rules = [];
    if (addresses.length > 0) {
      const key = expr.concat([expr.daddr(f), expr.l4proto(), expr.dport()]);
      rules.push({
        statements: [newConnection, stmt.match(key, '==', value.set(addresses)), stmt.nftrace()],
        comment,
      });
    }
    if (nodePorts.length > 0) {
      const local = stmt.match(expr.fibType('daddr'), '==', value.keyword('local'));
      const key = expr.concat([expr.l4proto(), expr.dport()]);
      rules.push({
        statements: [newConnection, local, stmt.match(key, '==', value.set(nodePorts)), stmt.nftrace()],
        comment,
      });
    }
    // Add-then-delete starts from an empty table when the session applies this again (a retry).
    out.push(c.addTable({ owner: true }), c.deleteTable(), c.addTable({ owner: true }));
    for (const hook of ['prerouting', 'output'] as const) {
      const chain: Chain = { name: hook, base: { type: 'filter', hook, priority: PRIORITY }, rules };
      out.push(c.addChain(chain));
      for (const r of rules) out.push(c.addRule(hook, r));
    }
  }
  return out;
}
