/**
 * @module explain/format
 * An {@link Explanation} as text for a person: the verdict first, then what decided it.
 */
import type { Explanation } from './explain.ts';

const VERDICT: Record<Explanation['verdict'], string> = {
  dnat: 'DNAT',
  reject: 'REJECT (ICMP port unreachable)',
  drop: 'DROP',
  none: 'not intercepted (kproxy has no rule for it: routed on as any packet)',
};

export function explanationText(e: Explanation): string {
  const p = e.packet;
  const src = p.srcPort !== undefined ? `${p.src}:${p.srcPort}` : p.src;
  const dst = p.dst.includes(':') ? `[${p.dst}]:${p.dstPort}` : `${p.dst}:${p.dstPort}`;
  const out: string[] = [];
  const row = (label: string, text: string) => out.push(`${label.padEnd(11)}${text}`);
  row('packet', `${src} → ${dst}/${p.protocol}, from ${p.from} (${p.fromReason}); ${e.mode} mode`);
  row('verdict', VERDICT[e.verdict]);
  row('why', e.reason);
  if (e.frontend) {
    const kind = e.frontend.kind === 'LoadBalancerIP' ? 'load-balancer IP' : e.frontend.kind;
    row('frontend', `${kind} ${dst}/${p.protocol} of Service port ${e.service}`);
  } else if (e.service) row('service', e.service);
  if (e.route) row('route', e.route);
  if (e.verdict === 'dnat') {
    row('endpoints', e.endpoints.join(', '));
    row('masquerade', `${e.masquerade ? 'yes' : 'no'}: ${e.masqueradeReason}`);
    row('affinity', e.affinity ? `ClientIP, ${e.affinity.timeoutSeconds} s` : 'none');
  }
  if (e.excluded.length > 0) {
    out.push(`left out (${e.excluded.length}):`);
    // The other family's endpoints of a dual-stack Service are never candidates: one line for them all.
    const shown = e.excluded.filter((x) => x.reason !== 'wrong-family');
    const otherFamily = e.excluded.length - shown.length;
    const width = Math.max(0, ...shown.map((x) => x.endpoint.length));
    for (const x of shown) out.push(`  ${x.endpoint.padEnd(width)}  ${x.reason}: ${x.detail}`);
    if (otherFamily > 0)
      out.push(
        `  ${otherFamily} endpoint(s) of the other IP family  wrong-family: a packet is DNATed within its own family`,
      );
  }
  out.push('path:');
  for (const s of e.steps) out.push(`  ${s}`);
  return `${out.join('\n')}\n`;
}
