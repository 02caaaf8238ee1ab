/**
 * What the kernel of the node namespace sends each IPv4 frontend to, read the way a packet would
 * go, per mode: frontend (`CLUSTERIP:PORT`, or `nodeport:PORT`; `/udp` or `/sctp` appended for
 * those protocols) → the DNAT destinations reachable from it. The tests compare this with the endpoints the API server holds.
 *
 * nftables (`nft -j`): the `service-ips` / `service-nodeports` map elements and each chain's
 * `dnat` statements (to an address, or through the endpoint maps for that frontend), jumps and
 * gotos followed. iptables: KUBE-SERVICES' `-d IP/32 … --dport P -j KUBE-SVC-…` and
 * KUBE-NODEPORTS' `--dport P -j KUBE-EXT-…` rules, followed through KUBE-EXT/SVC/SEP chains to
 * their `--to-destination`.
 */
import type { ProxyMode } from '../../../src/config/proxy-config.ts';
import type { Topology } from '../../../src/sandbox/topology.ts';

export type KernelView = Map<string, Set<string>>;

export async function kernelView(topo: Topology, mode: ProxyMode): Promise<KernelView> {
  if (mode === 'nftables') {
    const r = await topo.execIn(topo.node, 'nft', ['-j', 'list', 'table', 'ip', 'kproxy'], { allowFailure: true });
    return r.exitCode === 0 ? parseNftJson(r.stdout) : new Map();
  }
  if (mode === 'iptables') {
    // Whichever flavor kproxy chose; the other is empty.
    const texts = await Promise.all(
      ['iptables-nft-save', 'iptables-legacy-save'].map((t) =>
        topo
          .execIn(topo.node, t, ['-t', 'nat'], { allowFailure: true })
          .then((r) => (r.exitCode === 0 ? r.stdout : '')),
      ),
    );
    return parseIptables(texts.join('\n'));
  }
  throw new Error(`no kernel view for ${mode} mode`);
}

type Json = Record<string, unknown>;

/** `nft -j list table ip kproxy`: map elements → chains (jump/goto followed) → `dnat` statements. */
export function parseNftJson(text: string): KernelView {
  const doc = JSON.parse(text) as { nftables: Json[] };
  const chains = new Map<string, Json[][]>();
  const maps = new Map<string, unknown[][]>();
  for (const e of doc.nftables) {
    const rule = e['rule'] as Json | undefined;
    if (rule) {
      const list = chains.get(rule['chain'] as string) ?? [];
      list.push(rule['expr'] as Json[]);
      chains.set(rule['chain'] as string, list);
    }
    const map = e['map'] as Json | undefined;
    if (map) maps.set(map['name'] as string, (map['elem'] as unknown[][] | undefined) ?? []);
  }
  // Endpoint maps (ADR 0008): `frontend . index` → address and `frontend` → port, as element text.
  const valueText = (v: unknown): string =>
    Array.isArray((v as Json | null)?.['concat'])
      ? ((v as Json)['concat'] as unknown[]).map(String).join(' . ')
      : String(v);
  const lookup = new Map<string, Map<string, string>>();
  for (const [name, elems] of maps) lookup.set(name, new Map(elems.map(([k, d]) => [valueText(k), valueText(d)])));
  /** The destinations of a dnat statement, for the frontend (its key parts) the packet was sent to. */
  const destinations = (dnat: Json, frontend: readonly unknown[]): string[] => {
    const addr = dnat['addr'];
    if (typeof addr === 'string') return [`${addr}:${String(dnat['port'])}`];
    const addrMap = (addr as Json)['map'] as Json;
    const portMap = ((dnat['port'] as Json)['map'] as Json)['data'] as string;
    const parts = ((addrMap['key'] as Json)['concat'] as Json[]) ?? [];
    const numgen = parts[parts.length - 1]?.['numgen'] as Json;
    const base = frontend.map(String).join(' . ');
    const port = lookup.get(portMap.slice(1))?.get(base);
    const out: string[] = [];
    for (let i = 0; i < Number(numgen['mod']); i++) {
      const ip = lookup.get((addrMap['data'] as string).slice(1))?.get(`${base} . ${Number(numgen['offset']) + i}`);
      out.push(`${ip}:${port}`);
    }
    return out;
  };
  const reach = (chain: string, frontend: readonly unknown[], seen = new Set<string>()): Set<string> => {
    const out = new Set<string>();
    if (seen.has(chain)) return out;
    seen.add(chain);
    for (const expr of chains.get(chain) ?? []) {
      for (const st of expr) {
        const dnat = st['dnat'] as Json | undefined;
        if (dnat) for (const d of destinations(dnat, frontend)) out.add(d);
        const to = (st['jump'] ?? st['goto']) as Json | undefined;
        if (to && to['target'] !== 'mark-for-masquerade')
          for (const t of reach(to['target'] as string, frontend, seen)) out.add(t);
      }
    }
    return out;
  };
  const view: KernelView = new Map();
  const target = (v: unknown): string | undefined => {
    const verdict = v as Json;
    const to = (verdict['goto'] ?? verdict['jump']) as Json | undefined;
    return to?.['target'] as string | undefined;
  };
  for (const [key, value] of maps.get('service-ips') ?? []) {
    const [addr, proto, port] = ((key as Json)['concat'] as unknown[]) ?? [];
    const t = target(value);
    if (t)
      view.set(
        `${String(addr)}:${String(port)}${proto === 'tcp' ? '' : `/${String(proto)}`}`,
        reach(t, [addr, proto, port]),
      );
  }
  for (const [key, value] of maps.get('service-nodeports') ?? []) {
    const [proto, port] = ((key as Json)['concat'] as unknown[]) ?? [];
    const t = target(value);
    if (t) view.set(`nodeport:${String(port)}${proto === 'tcp' ? '' : `/${String(proto)}`}`, reach(t, [proto, port]));
  }
  return view;
}

export function parseIptables(text: string): KernelView {
  const rules = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^-A (\S+) (.*)$/.exec(line);
    if (!m) continue;
    const list = rules.get(m[1] as string) ?? [];
    list.push(` ${m[2] as string}`);
    rules.set(m[1] as string, list);
  }
  const reach = (chain: string, seen = new Set<string>()): Set<string> => {
    const out = new Set<string>();
    if (seen.has(chain)) return out;
    seen.add(chain);
    for (const r of rules.get(chain) ?? []) {
      const dnat = /--to-destination (\S+)/.exec(r);
      if (dnat) out.add(dnat[1] as string);
      const jump = / -j (KUBE-(?:SVC|SVL|EXT|SEP|FW)-\S+)/.exec(r);
      if (jump) for (const t of reach(jump[1] as string, seen)) out.add(t);
    }
    return out;
  };
  const view: KernelView = new Map();
  for (const r of rules.get('KUBE-SERVICES') ?? []) {
    const m = /-d (\d+\.\d+\.\d+\.\d+)\/32 -p (\w+) .*--dport (\d+) -j (KUBE-SVC-\S+|KUBE-SVL-\S+|KUBE-EXT-\S+)/.exec(
      r,
    );
    if (m) view.set(`${m[1]}:${m[3]}${m[2] === 'tcp' ? '' : `/${m[2]}`}`, reach(m[4] as string));
  }
  for (const r of rules.get('KUBE-NODEPORTS') ?? []) {
    const m = /-p (\w+) .*--dport (\d+) -j (KUBE-EXT-\S+|KUBE-SVC-\S+)/.exec(r);
    if (m) view.set(`nodeport:${m[2]}${m[1] === 'tcp' ? '' : `/${m[1]}`}`, reach(m[3] as string));
  }
  return view;
}

/** A view as sorted plain data, for messages and comparisons. */
export function plainView(v: KernelView): Record<string, string[]> {
  return Object.fromEntries([...v.entries()].sort().map(([k, s]) => [k, [...s].sort()]));
}
