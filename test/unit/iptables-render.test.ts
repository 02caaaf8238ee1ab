/**
 * iptables mode's pure renderer: upstream's rule shapes per behaviour, in iptables-save's canonical
 * text; the rule-text writer refusing hostile values; the skeleton template's validation; the
 * restore text, the save parser and the sync plan. (The kernel round trip is
 * test/kernel/iptables-roundtrip.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import type { Cidr } from '../../src/model/cluster.ts';
import type { EndpointTarget, NodeState, ServicePortState } from '../../src/model/node-state.ts';
import { endpointChainName, serviceChainNames } from '../../src/backends/iptables/render/names.ts';
import { planSync } from '../../src/backends/iptables/render/plan.ts';
import { dumpText, restoreText } from '../../src/backends/iptables/render/restore.ts';
import { assembleRuleset, contextOf, renderIptables } from '../../src/backends/iptables/render/ruleset.ts';
import { parseIptablesSave } from '../../src/backends/iptables/render/saved.ts';
import { renderServicePort } from '../../src/backends/iptables/render/service-port.ts';
import {
  fillTemplate,
  loadTemplate,
  parseTemplate,
  skeleton,
  templateValues,
} from '../../src/backends/iptables/render/skeleton.ts';
import {
  checkRuleText,
  cidrText,
  commentText,
  ipText,
  match as m,
  probabilityText,
  rule,
  target as t,
} from '../../src/backends/iptables/render/syntax.ts';
import type { IptablesContext, IptRuleset, PortRules } from '../../src/backends/iptables/render/types.ts';
import { bareState, sampleStateV4, servicePort } from '../support/states.ts';

const ep = (ip: string, port = 8080, isLocal = false): EndpointTarget => ({ ip, port, isLocal });
const cidr = (address: string, prefixLength: number): Cidr => ({
  family: address.includes(':') ? 'ipv6' : 'ipv4',
  address,
  prefixLength,
});
const OPTIONS = { localhostNodePorts: true, dropInvalid: true };

function ctxOf(partial: Partial<NodeState> = {}): IptablesContext {
  return contextOf(
    {
      ...bareState([]),
      localDetector: { kind: 'cidrs', cidrs: [cidr('10.244.0.0', 16)] },
      ...partial,
    },
    OPTIONS,
  );
}

/** Every rule of a port as `table CHAIN rule`, for readable expectations. */
function lines(p: PortRules): string[] {
  return [
    ...p.shared.map((r) => `${r.table} ${r.chain} ${r.rule}`),
    ...p.chains.flatMap((c) => c.rules.map((r) => `${c.table} ${c.name} ${r}`)),
  ];
}

const svc = (name: string, port: Partial<ServicePortState> & Pick<ServicePortState, 'internal'>): ServicePortState =>
  servicePort({
    ref: { namespace: 'ns', name, portName: 'http', protocol: 'TCP' },
    key: `ns/${name}:http`,
    clusterIP: '10.96.0.10',
    ...port,
  });

// ---------------------------------------------------------------------------------------------

describe('syntax: the canonical text iptables-save prints', () => {
  it('writes the IP part first in save order, whatever the input order', () => {
    const text = rule(
      m.comment('a b'),
      m.l4('TCP', 80),
      m.protocol('TCP'),
      m.inInterface('cbr0', true),
      m.destination('ipv4', '10.96.0.1'),
      m.source('ipv4', cidr('10.244.0.0', 16), true),
      t.jump('KUBE-MARK-MASQ'),
    );
    expect(text).toBe(
      '! -s 10.244.0.0/16 -d 10.96.0.1/32 ! -i cbr0 -p tcp -m comment --comment "a b" -m tcp --dport 80 -j KUBE-MARK-MASQ',
    );
  });

  it('addresses: /32 and /128, host bits cleared, glibc inet_ntop text, /0 left out', () => {
    expect(cidrText('ipv4', cidr('10.1.2.3', 8))).toBe('10.0.0.0/8');
    expect(ipText('ipv6', '2001:DB8:0:0:1:0:0:1')).toBe('2001:db8::1:0:0:1');
    expect(ipText('ipv6', '2001:db8:0:1:1:1:1:1')).toBe('2001:db8:0:1:1:1:1:1');
    expect(ipText('ipv6', '::ffff:a00:1')).toBe('::ffff:10.0.0.1');
    expect(ipText('ipv6', '::a00:1')).toBe('::10.0.0.1');
    expect(ipText('ipv6', '::2:3')).toBe('::0.2.0.3');
    expect(ipText('ipv6', '::1')).toBe('::1');
    expect(ipText('ipv6', '1:0:0:2::')).toBe('1:0:0:2::');
    expect(cidrText('ipv6', cidr('fd00:1:2:3:4::', 48))).toBe('fd00:1:2::/48');
    expect(rule(m.destination('ipv6', 'fd00::1'), t.return())).toBe('-d fd00::1/128 -j RETURN');
    expect(rule(m.source('ipv4', cidr('0.0.0.0', 0)), t.return())).toBe('-j RETURN');
    expect(() => m.source('ipv4', cidr('0.0.0.0', 0), true)).toThrow(/never matches/);
  });

  it('comments: bare when only [A-Za-z0-9_-], else double-quoted', () => {
    expect(commentText('abc_DEF-1')).toBe('abc_DEF-1');
    expect(commentText('ns/svc:http')).toBe('"ns/svc:http"');
    expect(commentText('ns/svc:http -> [fd00::1]:80')).toBe('"ns/svc:http -> [fd00::1]:80"');
  });

  it('probabilities as xt_statistic stores and prints them (upstream writes %0.10f)', () => {
    expect(probabilityText(2)).toBe('0.50000000000');
    expect(probabilityText(3)).toBe('0.33333333349');
    expect(probabilityText(4)).toBe('0.25000000000');
    expect(probabilityText(7)).toBe('0.14285714272');
    // 1/2048 is a tie at the 10th digit in Go's %0.10f (half to even), 1/4096 one at the 11th in %.11f.
    expect(probabilityText(2048)).toBe('0.00048828125');
    expect(probabilityText(4096)).toBe('0.00024414062');
    expect(probabilityText(10240)).toBe('0.00009765616');
  });

  it('marks, recent, conntrack, REJECT, DNAT, MASQUERADE', () => {
    expect(rule(t.orMark(0x4000))).toBe('-j MARK --set-xmark 0x4000/0x4000');
    expect(rule(t.xorMark(0x80000000))).toBe('-j MARK --set-xmark 0x80000000/0x0');
    expect(rule(m.mark(0x1, true), t.return())).toBe('-m mark ! --mark 0x1/0x1 -j RETURN');
    expect(rule(m.recentCheck('ipv4', 'KUBE-SEP-X', 10800), t.jump('KUBE-SEP-X'))).toBe(
      '-m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-X --mask 255.255.255.255 --rsource -j KUBE-SEP-X',
    );
    expect(rule(m.recentSet('ipv6', 'KUBE-SEP-X'))).toBe(
      '-m recent --set --name KUBE-SEP-X --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource',
    );
    expect(rule(m.conntrack(['DNAT', 'ESTABLISHED', 'RELATED'], true), t.drop())).toBe(
      '-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
    );
    expect(rule(t.reject('ipv4'))).toBe('-j REJECT --reject-with icmp-port-unreachable');
    expect(rule(t.reject('ipv6'))).toBe('-j REJECT --reject-with icmp6-port-unreachable');
    expect(rule(m.protocol('SCTP'), m.l4('SCTP'), t.dnat('ipv6', 'fd00::1', 80))).toBe(
      '-p sctp -m sctp -j DNAT --to-destination [fd00::1]:80',
    );
    expect(rule(t.masqueradeRandomFully())).toBe('-j MASQUERADE --random-fully');
    expect(rule(m.inInterfacePrefix('veth'), t.accept())).toBe('-i veth+ -j ACCEPT');
  });

  it('refuses hostile or invalid values', () => {
    const hostile: [string, () => unknown][] = [
      ['chain with a space', () => t.jump('KUBE-SVC-X -j ACCEPT')],
      ['chain with a newline', () => t.jump('KUBE-X\n-A INPUT -j DROP')],
      ['lower-case chain', () => t.jump('kube-x')],
      ['chain too long', () => t.jump(`KUBE-${'X'.repeat(24)}`)],
      ['interface with ;', () => m.inInterface('eth0;reboot')],
      ['interface too long', () => m.inInterface('a'.repeat(16))],
      ['interface prefix too long', () => m.inInterfacePrefix('a'.repeat(15))],
      ['comment with a quote', () => m.comment('a" -j ACCEPT "')],
      ['comment with a newline', () => m.comment('a\nCOMMIT')],
      ['comment with a backslash', () => m.comment('a\\')],
      ['comment with $()', () => m.comment('$(reboot)')],
      ['empty comment', () => m.comment('')],
      ['comment too long', () => m.comment('x'.repeat(256))],
      ['not an IP', () => m.destination('ipv4', '10.0.0.256')],
      ['IP with a zone', () => m.destination('ipv6', 'fe80::1%eth0')],
      ['IPv6 in an IPv4 rule', () => m.destination('ipv4', 'fd00::1')],
      ['IPv4 in an IPv6 rule', () => t.dnat('ipv6', '10.0.0.1', 80)],
      ['CIDR of the other family', () => m.source('ipv4', cidr('fd00::', 8))],
      ['prefix too long', () => m.source('ipv4', cidr('10.0.0.0', 33))],
      ['port 0', () => m.l4('TCP', 0)],
      ['port 65536', () => m.l4('TCP', 65536)],
      ['fractional port', () => t.dnat('ipv4', '10.0.0.1', 80.5)],
      ['negative mark', () => t.orMark(-1)],
      ['probability 1/1', () => m.probability(1)],
      ['affinity 0 s', () => m.recentCheck('ipv4', 'KUBE-SEP-X', 0)],
      ['unknown protocol', () => m.protocol('ICMP' as never)],
      ['-m tcp without -p tcp', () => rule(m.l4('TCP', 80), t.accept())],
      ['-m udp with -p tcp', () => rule(m.protocol('TCP'), m.l4('UDP', 80), t.accept())],
      ['DNAT without -p', () => rule(t.dnat('ipv4', '10.0.0.1', 80))],
      ['two targets', () => rule(t.accept(), t.drop())],
      ['two -d', () => rule(m.destination('ipv4', '10.0.0.1'), m.destination('ipv4', '10.0.0.2'))],
    ];
    for (const [what, f] of hostile) expect(f, what).toThrow();
  });

  it('checkRuleText accepts canonical hand-written rules and names what is wrong in others', () => {
    const ok = [
      '! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
      '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      '-m comment --comment abc -j RETURN',
      '-j MARK --set-xmark 0x4000/0x0',
      '-d 10.96.0.1/32 -i veth+ -p tcp -m tcp --dport 80 -j ACCEPT',
    ];
    for (const text of ok) expect(checkRuleText('ipv4', text)).toBe(text);
    const bad: [string, RegExp][] = [
      ['-m comment --comment "x y" -d 10.0.0.1/32 -j ACCEPT', /order/],
      ['-p tcp -d 10.0.0.1/32 -j ACCEPT', /order/],
      ['-d 10.0.0.1 -j ACCEPT', /prefix/],
      ['-d 10.0.0.1/8 -j ACCEPT', /canonical/],
      ['-d fd00::1/128 -j ACCEPT', /not ipv4|invalid/],
      ['-m comment --comment "abc" -j RETURN', /quoted/],
      ['-m comment --comment a b -j RETURN', /unexpected|unsafe/],
      ['-m tcp --dport 80 -j ACCEPT', /without -p tcp/],
      ['-j ACCEPT;', /invalid iptables chain name/],
      ['-m comment --comment "x"y" -j RETURN', /words/],
      ['-j  ACCEPT', /words/],
      ['-s 0.0.0.0/0 -j ACCEPT', /not printed/],
    ];
    for (const [text, why] of bad) expect(() => checkRuleText('ipv4', text), text).toThrow(why);
  });
});

// ---------------------------------------------------------------------------------------------

describe('service port rules (upstream shapes)', () => {
  const names = serviceChainNames({ namespace: 'ns', name: 'web', portName: 'http', protocol: 'TCP' });
  const sep = (ip: string, port = 8080) =>
    endpointChainName({ namespace: 'ns', name: 'web', portName: 'http', protocol: 'TCP' }, { ip, port });

  it('ClusterIP, policy Cluster: dispatch, masquerade off-cluster sources first, ladder, SEP hairpin and DNAT', () => {
    const p = renderServicePort(
      svc('web', { internal: { kind: 'cluster', endpoints: [ep('10.244.1.1'), ep('10.244.1.2'), ep('10.244.1.3')] } }),
      ctxOf(),
    );
    expect(lines(p)).toEqual([
      `nat KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "ns/web:http cluster IP" -m tcp --dport 80 -j ${names.svc}`,
      `nat ${names.svc} ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment "ns/web:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ`,
      `nat ${names.svc} -m comment --comment "ns/web:http -> 10.244.1.1:8080" -m statistic --mode random --probability 0.33333333349 -j ${sep('10.244.1.1')}`,
      `nat ${names.svc} -m comment --comment "ns/web:http -> 10.244.1.2:8080" -m statistic --mode random --probability 0.50000000000 -j ${sep('10.244.1.2')}`,
      `nat ${names.svc} -m comment --comment "ns/web:http -> 10.244.1.3:8080" -j ${sep('10.244.1.3')}`,
      ...['10.244.1.1', '10.244.1.2', '10.244.1.3'].flatMap((ip) => [
        `nat ${sep(ip)} -s ${ip}/32 -m comment --comment "ns/web:http" -j KUBE-MARK-MASQ`,
        `nat ${sep(ip)} -p tcp -m comment --comment "ns/web:http" -m tcp -j DNAT --to-destination ${ip}:8080`,
      ]),
    ]);
    expect(p.key).toBe('ns/web:http');
  });

  it('the masquerade rule per detector: masqueradeAll, none, bridge, interface prefix', () => {
    const sp = svc('web', { internal: { kind: 'cluster', endpoints: [ep('10.244.1.1')] } });
    const masq = (ctx: IptablesContext) =>
      lines(renderServicePort(sp, ctx)).filter((l) => l.startsWith(`nat ${names.svc}`) && l.includes('MARK-MASQ'));
    expect(masq(ctxOf({ masqueradeAll: true }))).toEqual([
      `nat ${names.svc} -d 10.96.0.10/32 -p tcp -m comment --comment "ns/web:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ`,
    ]);
    expect(masq(ctxOf({ localDetector: { kind: 'none' } }))).toEqual([]);
    expect(masq(ctxOf({ localDetector: { kind: 'bridgeInterface', interfaceName: 'cbr0' } }))[0]).toContain(
      '-d 10.96.0.10/32 ! -i cbr0 -p tcp',
    );
    expect(masq(ctxOf({ localDetector: { kind: 'interfacePrefix', prefix: 'veth' } }))[0]).toContain(
      '-d 10.96.0.10/32 ! -i veth+ -p tcp',
    );
    // Outside 0.0.0.0/0 is nowhere: no rule (iptables-nft refuses `! -s 0.0.0.0/0`).
    expect(masq(ctxOf({ localDetector: { kind: 'cidrs', cidrs: [cidr('0.0.0.0', 0)] } }))).toEqual([]);
  });

  it('ClientIP affinity: a recent check per endpoint before the ladder, recent --set in each SEP', () => {
    const p = renderServicePort(
      svc('web', {
        affinityTimeoutSeconds: 10800,
        internal: { kind: 'cluster', endpoints: [ep('10.244.1.1'), ep('10.244.1.2')] },
      }),
      ctxOf({ localDetector: { kind: 'none' } }),
    );
    const svcChain = p.chains.find((c) => c.name === names.svc)?.rules ?? [];
    expect(svcChain).toEqual([
      `-m comment --comment "ns/web:http -> 10.244.1.1:8080" -m recent --rcheck --seconds 10800 --reap --name ${sep('10.244.1.1')} --mask 255.255.255.255 --rsource -j ${sep('10.244.1.1')}`,
      `-m comment --comment "ns/web:http -> 10.244.1.2:8080" -m recent --rcheck --seconds 10800 --reap --name ${sep('10.244.1.2')} --mask 255.255.255.255 --rsource -j ${sep('10.244.1.2')}`,
      `-m comment --comment "ns/web:http -> 10.244.1.1:8080" -m statistic --mode random --probability 0.50000000000 -j ${sep('10.244.1.1')}`,
      `-m comment --comment "ns/web:http -> 10.244.1.2:8080" -j ${sep('10.244.1.2')}`,
    ]);
    expect(p.chains.find((c) => c.name === sep('10.244.1.1'))?.rules[1]).toBe(
      `-p tcp -m comment --comment "ns/web:http" -m recent --set --name ${sep('10.244.1.1')} --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.1.1:8080`,
    );
  });

  it('internalTrafficPolicy Local: KUBE-SVL with the masquerade rule; none local: DROP in filter KUBE-SERVICES', () => {
    const local = renderServicePort(
      svc('web', { internal: { kind: 'local', endpoints: [ep('10.244.0.5', 8080, true)] } }),
      ctxOf(),
    );
    expect(local.shared.map((r) => r.rule)).toEqual([
      `-d 10.96.0.10/32 -p tcp -m comment --comment "ns/web:http cluster IP" -m tcp --dport 80 -j ${names.svl}`,
    ]);
    expect(local.chains.map((c) => c.name)).toEqual([names.svl, sep('10.244.0.5')]);
    expect(local.chains[0]?.rules[0]).toContain('! -s 10.244.0.0/16 -d 10.96.0.10/32');
    const drop = renderServicePort(svc('web', { internal: { kind: 'drop' } }), ctxOf());
    expect(lines(drop)).toEqual([
      'filter KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "ns/web:http has no local endpoints" -m tcp --dport 80 -j DROP',
    ]);
  });

  it('no endpoints: REJECT for the ClusterIP, externalIPs, LB IPs and the NodePort; no nat rules at all', () => {
    const p = renderServicePort(
      svc('web', {
        nodePort: 30080,
        externalIPs: ['192.0.2.50'],
        loadBalancerIPs: ['198.51.100.7'],
        loadBalancerSourceRanges: [cidr('203.0.113.0', 24)],
        internal: { kind: 'reject' },
        external: { kind: 'reject' },
      }),
      ctxOf(),
    );
    expect(lines(p)).toEqual([
      'filter KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "ns/web:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable',
      'filter KUBE-EXTERNAL-SERVICES -d 192.0.2.50/32 -p tcp -m comment --comment "ns/web:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable',
      'filter KUBE-EXTERNAL-SERVICES -d 198.51.100.7/32 -p tcp -m comment --comment "ns/web:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable',
      'filter KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "ns/web:http has no endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j REJECT --reject-with icmp-port-unreachable',
    ]);
  });

  it('externalTrafficPolicy Cluster: externalIP and NodePort go to KUBE-EXT, which masquerades then jumps to KUBE-SVC', () => {
    const endpoints = [ep('10.244.1.1')] as const;
    const p = renderServicePort(
      svc('web', {
        nodePort: 30080,
        externalIPs: ['192.0.2.50'],
        internal: { kind: 'cluster', endpoints },
        external: { kind: 'cluster', endpoints },
      }),
      ctxOf(),
    );
    expect(p.shared.map((r) => `${r.table} ${r.chain} ${r.rule}`)).toEqual([
      `nat KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "ns/web:http cluster IP" -m tcp --dport 80 -j ${names.svc}`,
      `nat KUBE-SERVICES -d 192.0.2.50/32 -p tcp -m comment --comment "ns/web:http external IP" -m tcp --dport 80 -j ${names.ext}`,
      `nat KUBE-NODEPORTS -p tcp -m comment --comment "ns/web:http" -m tcp --dport 30080 -j ${names.ext}`,
    ]);
    expect(p.chains.find((c) => c.name === names.ext)?.rules).toEqual([
      '-m comment --comment "masquerade traffic for ns/web:http external destinations" -j KUBE-MARK-MASQ',
      `-j ${names.svc}`,
    ]);
  });

  it('externalTrafficPolicy Local: pods short-circuit, the node is masqueraded, the rest goes to KUBE-SVL', () => {
    const a = ep('10.244.0.5', 8080, true);
    const b = ep('10.244.1.1');
    const p = renderServicePort(
      svc('web', {
        nodePort: 30080,
        internal: { kind: 'cluster', endpoints: [a, b] },
        external: { kind: 'local', local: [a], cluster: [a, b] },
        healthCheckNodePort: 32000,
      }),
      ctxOf(),
    );
    expect(p.chains.find((c) => c.name === names.ext)?.rules).toEqual([
      `-s 10.244.0.0/16 -m comment --comment "pod traffic for ns/web:http external destinations" -j ${names.svc}`,
      '-m comment --comment "masquerade LOCAL traffic for ns/web:http external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
      `-m comment --comment "route LOCAL traffic for ns/web:http external destinations" -m addrtype --src-type LOCAL -j ${names.svc}`,
      `-j ${names.svl}`,
    ]);
    expect(p.chains.map((c) => c.name)).toEqual([names.svc, names.svl, names.ext, sep(a.ip), sep(b.ip)]);
    // The masquerade rule lives in the chain ClusterIP traffic goes to only.
    expect(p.chains.find((c) => c.name === names.svl)?.rules).toEqual([
      `-m comment --comment "ns/web:http -> 10.244.0.5:8080" -j ${sep(a.ip)}`,
    ]);
    expect(lines(p)).toContain(
      'filter KUBE-NODEPORTS -p tcp -m comment --comment "ns/web:http health check node port" -m tcp --dport 32000 -j ACCEPT',
    );
  });

  it('externalTrafficPolicy Local without local endpoints: EXT still short-circuits, then DROP in KUBE-EXTERNAL-SERVICES', () => {
    const b = ep('10.244.1.1');
    const p = renderServicePort(
      svc('web', {
        nodePort: 30080,
        externalIPs: ['192.0.2.50'],
        internal: { kind: 'cluster', endpoints: [b] },
        external: { kind: 'local', local: [], cluster: [b] },
      }),
      ctxOf({ localDetector: { kind: 'none' } }),
    );
    expect(p.chains.find((c) => c.name === names.ext)?.rules).toEqual([
      '-m comment --comment "masquerade LOCAL traffic for ns/web:http external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
      `-m comment --comment "route LOCAL traffic for ns/web:http external destinations" -m addrtype --src-type LOCAL -j ${names.svc}`,
    ]);
    expect(p.chains.some((c) => c.name === names.svl)).toBe(false);
    expect(lines(p).filter((l) => l.startsWith('filter'))).toEqual([
      'filter KUBE-EXTERNAL-SERVICES -d 192.0.2.50/32 -p tcp -m comment --comment "ns/web:http has no local endpoints" -m tcp --dport 80 -j DROP',
      'filter KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "ns/web:http has no local endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j DROP',
    ]);
  });

  it('loadBalancerSourceRanges: the LB IP goes through KUBE-FW, the NodePort does not; unDNATed traffic is dropped', () => {
    const endpoints = [ep('10.244.1.1')] as const;
    const sp = svc('web', {
      nodePort: 30080,
      loadBalancerIPs: ['198.51.100.7'],
      loadBalancerSourceRanges: [cidr('203.0.113.0', 25), cidr('192.0.2.0', 24)],
      internal: { kind: 'cluster', endpoints },
      external: { kind: 'cluster', endpoints },
    });
    const p = renderServicePort(sp, ctxOf({ nodeIPs: ['192.0.2.1'] }));
    expect(lines(p).filter((l) => l.includes('198.51.100.7') && !l.startsWith(`nat ${names.fw}`))).toEqual([
      `nat KUBE-SERVICES -d 198.51.100.7/32 -p tcp -m comment --comment "ns/web:http loadbalancer IP" -m tcp --dport 80 -j ${names.fw}`,
      `filter KUBE-PROXY-FIREWALL -d 198.51.100.7/32 -p tcp -m comment --comment "ns/web:http traffic not accepted by ${names.fw}" -m tcp --dport 80 -j DROP`,
    ]);
    expect(p.chains.find((c) => c.name === names.fw)?.rules).toEqual([
      `-s 203.0.113.0/25 -m comment --comment "ns/web:http loadbalancer IP" -j ${names.ext}`,
      `-s 192.0.2.0/24 -m comment --comment "ns/web:http loadbalancer IP" -j ${names.ext}`,
      // A range holds the node's IP: the LB IP itself is an allowed source (upstream's allowFromNode).
      `-s 198.51.100.7/32 -m comment --comment "ns/web:http loadbalancer IP" -j ${names.ext}`,
      '-m comment --comment "other traffic to ns/web:http will be dropped by KUBE-PROXY-FIREWALL"',
    ]);
    expect(lines(p)).toContain(
      `nat KUBE-NODEPORTS -p tcp -m comment --comment "ns/web:http" -m tcp --dport 30080 -j ${names.ext}`,
    );
    // Without a range holding a node IP, the LB IP is not a source.
    const far = renderServicePort(sp, ctxOf({ nodeIPs: ['172.16.0.1'] }));
    expect(far.chains.find((c) => c.name === names.fw)?.rules).toHaveLength(3);
  });

  it('UDP and SCTP; an unnamed port is commented `ns/name`', () => {
    const sp = servicePort({
      ref: { namespace: 'ns', name: 'dns', portName: '', protocol: 'UDP' },
      key: 'ns/dns:',
      clusterIP: '10.96.0.53',
      port: 53,
      internal: { kind: 'cluster', endpoints: [ep('10.244.1.1', 53)] },
    });
    const p = renderServicePort(sp, ctxOf({ localDetector: { kind: 'none' } }));
    expect(lines(p)[0]).toBe(
      `nat KUBE-SERVICES -d 10.96.0.53/32 -p udp -m comment --comment "ns/dns cluster IP" -m udp --dport 53 -j ${serviceChainNames(sp.ref).svc}`,
    );
    expect(lines(p).at(-1)).toMatch(
      /-p udp -m comment --comment "ns\/dns" -m udp -j DNAT --to-destination 10.244.1.1:53$/,
    );
    const sctp = renderServicePort({ ...sp, ref: { ...sp.ref, protocol: 'SCTP' } }, ctxOf());
    expect(lines(sctp)[0]).toContain('-p sctp -m comment --comment "ns/dns cluster IP" -m sctp --dport 53');
  });

  it('IPv6: /128, [ip]:port, icmp6 REJECT', () => {
    const ctx = contextOf(
      { ...bareState([], 'ipv6'), localDetector: { kind: 'cidrs', cidrs: [cidr('fd00:244::', 64)] } },
      OPTIONS,
    );
    const p = renderServicePort(
      svc('web', { clusterIP: 'fd00:96::10', internal: { kind: 'cluster', endpoints: [ep('fd00:244::5')] } }),
      ctx,
    );
    expect(lines(p)).toContain(
      `nat ${names.svc} ! -s fd00:244::/64 -d fd00:96::10/128 -p tcp -m comment --comment "ns/web:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ`,
    );
    expect(lines(p)).toContain(
      `nat ${sep('fd00:244::5')} -p tcp -m comment --comment "ns/web:http" -m tcp -j DNAT --to-destination [fd00:244::5]:8080`,
    );
    expect(lines(p)).toContain(
      `nat ${names.svc} -m comment --comment "ns/web:http -> [fd00:244::5]:8080" -j ${sep('fd00:244::5')}`,
    );
    const reject = renderServicePort(svc('web', { clusterIP: 'fd00:96::10', internal: { kind: 'reject' } }), ctx);
    expect(reject.shared[0]?.rule).toMatch(/-j REJECT --reject-with icmp6-port-unreachable$/);
  });
});

// ---------------------------------------------------------------------------------------------

describe('context, skeleton and assembly', () => {
  it('localhost NodePorts: off for IPv6 and when nodePortAddresses exclude 127.0.0.1 (upstream NewProxier)', () => {
    const base = bareState([]);
    expect(contextOf(base, OPTIONS).localhostNodePorts).toBe(true);
    expect(contextOf(base, { ...OPTIONS, localhostNodePorts: false }).localhostNodePorts).toBe(false);
    expect(contextOf(bareState([], 'ipv6'), OPTIONS).localhostNodePorts).toBe(false);
    const cidrs = (...c: Cidr[]) => ({ ...base, nodePortDestinations: { kind: 'cidrs' as const, cidrs: c } });
    expect(contextOf(cidrs(cidr('192.0.2.0', 24)), OPTIONS).localhostNodePorts).toBe(false);
    expect(contextOf(cidrs(cidr('127.0.0.0', 8), cidr('192.0.2.0', 24)), OPTIONS).localhostNodePorts).toBe(true);
  });

  it('the fixed chains and jumps; KUBE-FIREWALL only with localhost NodePorts; the NodePort jump last', () => {
    const rs = renderIptables(bareState([]), OPTIONS).ruleset;
    const chain = (table: string, name: string) => rs.chains.find((c) => c.table === table && c.name === name)?.rules;
    expect(rs.chains.map((c) => `${c.table} ${c.name}`)).toEqual([
      'filter KUBE-SERVICES',
      'filter KUBE-EXTERNAL-SERVICES',
      'filter KUBE-FORWARD',
      'filter KUBE-NODEPORTS',
      'filter KUBE-PROXY-FIREWALL',
      'filter KUBE-FIREWALL',
      'filter KUBE-PROXY-CANARY',
      'nat KUBE-SERVICES',
      'nat KUBE-NODEPORTS',
      'nat KUBE-POSTROUTING',
      'nat KUBE-MARK-MASQ',
      'nat KUBE-PROXY-CANARY',
      'mangle KUBE-PROXY-CANARY',
    ]);
    expect(chain('filter', 'KUBE-FIREWALL')).toEqual([
      '! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
    ]);
    expect(rs.jumps.filter((j) => j.chain === 'INPUT').map((j) => j.rule.replace(/^(.* )?-j /, ''))).toEqual([
      'KUBE-FIREWALL',
      'KUBE-PROXY-FIREWALL',
      'KUBE-NODEPORTS',
      'KUBE-EXTERNAL-SERVICES',
    ]);
    expect(chain('nat', 'KUBE-SERVICES')).toEqual([
      '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
    ]);
    expect(chain('nat', 'KUBE-MARK-MASQ')).toEqual(['-j MARK --set-xmark 0x4000/0x4000']);
    expect(chain('nat', 'KUBE-POSTROUTING')).toEqual([
      '-m mark ! --mark 0x4000/0x4000 -j RETURN',
      '-j MARK --set-xmark 0x4000/0x0',
      '-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    ]);
    expect(chain('filter', 'KUBE-FORWARD')?.[0]).toBe('-m conntrack --ctstate INVALID -j DROP');

    const off = renderIptables(
      { ...bareState([]), masqueradeMark: 0x8000 },
      { localhostNodePorts: false, dropInvalid: false },
    ).ruleset;
    expect(off.chains.some((c) => c.name === 'KUBE-FIREWALL')).toBe(false);
    expect(off.jumps.some((j) => j.rule.includes('KUBE-FIREWALL'))).toBe(false);
    const nat = off.chains.find((c) => c.table === 'nat' && c.name === 'KUBE-SERVICES')?.rules;
    expect(nat?.at(-1)).toMatch(/^! -d 127\.0\.0\.0\/8 -m comment .* -j KUBE-NODEPORTS$/);
    expect(off.chains.find((c) => c.name === 'KUBE-FORWARD')?.rules).toEqual([
      '-m comment --comment "kubernetes forwarding rules" -m mark --mark 0x8000/0x8000 -j ACCEPT',
      '-m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    ]);
    const v6 = renderIptables(bareState([], 'ipv6'), OPTIONS).ruleset;
    expect(v6.chains.find((c) => c.table === 'nat' && c.name === 'KUBE-SERVICES')?.rules.at(-1)).toMatch(
      /^! -d ::1\/128 -m comment/,
    );
  });

  it('nodePortAddresses CIDRs: one jump per CIDR (local addresses in it); /0 means all; loopback skipped when off', () => {
    const natServices = (c: Cidr[], localhostNodePorts = true) =>
      renderIptables(
        { ...bareState([]), nodePortDestinations: { kind: 'cidrs', cidrs: c } },
        { localhostNodePorts, dropInvalid: true },
      ).ruleset.chains.find((x) => x.table === 'nat' && x.name === 'KUBE-SERVICES')?.rules;
    const comment =
      '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain"';
    expect(natServices([cidr('192.0.2.1', 32), cidr('10.0.0.0', 8)])).toEqual([
      `-d 192.0.2.1/32 ${comment} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`,
      `-d 10.0.0.0/8 ${comment} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`,
    ]);
    expect(natServices([])).toEqual([]);
    expect(natServices([cidr('0.0.0.0', 0)])).toEqual([`${comment} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`]);
    expect(natServices([cidr('0.0.0.0', 0)], false)).toEqual([
      `! -d 127.0.0.0/8 ${comment} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`,
    ]);
    expect(natServices([cidr('127.0.0.0', 8)], false)).toEqual([
      '-d 127.0.0.0/8 -m comment --comment "no NodePorts on loopback addresses" -j RETURN',
      `-d 127.0.0.0/8 ${comment} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`,
    ]);
  });

  it('service ports go in key order whatever the input order, before the NodePort jump', () => {
    const a = svc('a', { clusterIP: '10.96.0.1', internal: { kind: 'reject' } });
    const b = svc('b', { clusterIP: '10.96.0.2', internal: { kind: 'cluster', endpoints: [ep('10.244.1.1')] } });
    const c = svc('c', { clusterIP: '10.96.0.3', internal: { kind: 'cluster', endpoints: [ep('10.244.1.2')] } });
    const ctx = ctxOf();
    const rs = assembleRuleset(
      ctx,
      [c, a, b].map((sp) => renderServicePort(sp, ctx)),
    );
    const nat = rs.chains.find((x) => x.table === 'nat' && x.name === 'KUBE-SERVICES')?.rules ?? [];
    expect(nat.map((r) => /-d (\S+)/.exec(r)?.[1] ?? r.slice(0, 20))).toEqual([
      '10.96.0.2/32',
      '10.96.0.3/32',
      '-m comment --comment',
    ]);
    expect(rs.chains.find((x) => x.table === 'filter' && x.name === 'KUBE-SERVICES')?.rules).toHaveLength(1);
  });

  it('a frontend claimed twice keeps the first port’s rules only, and the conflict is reported', () => {
    const owner = svc('aaa', {
      clusterIP: '10.96.0.1',
      externalIPs: ['192.0.2.50'],
      internal: { kind: 'reject' },
      external: { kind: 'reject' },
    });
    const thief = svc('zzz', {
      clusterIP: '10.96.0.2',
      externalIPs: ['192.0.2.50'],
      internal: { kind: 'cluster', endpoints: [ep('10.244.1.1')] },
      external: { kind: 'cluster', endpoints: [ep('10.244.1.1')] },
    });
    const { ruleset, problems } = renderIptables({ ...bareState([thief, owner]) }, OPTIONS);
    const all = ruleset.chains.flatMap((c) => c.rules.map((r) => `${c.table} ${c.name} ${r}`));
    expect(all.filter((l) => l.includes('192.0.2.50'))).toEqual([
      'filter KUBE-EXTERNAL-SERVICES -d 192.0.2.50/32 -p tcp -m comment --comment "ns/aaa:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable',
    ]);
    expect(problems).toEqual([
      {
        kind: 'Service',
        object: 'ns/zzz',
        path: '',
        message: '192.0.2.50 . tcp . 80 is already used by Service port ns/aaa:http; this port does not get it',
      },
    ]);
  });

  it('reports a detector with more than one CIDR (iptables matches one)', () => {
    const { problems, ruleset } = renderIptables(
      {
        ...sampleStateV4(),
        localDetector: { kind: 'cidrs', cidrs: [cidr('10.244.0.0', 16), cidr('10.245.0.0', 16)] },
      },
      OPTIONS,
    );
    expect(problems.map((p) => p.message)).toEqual([
      'iptables mode matches one pod CIDR per family, like upstream: 10.244.0.0/16 is used, 10.245.0.0/16 ignored',
    ]);
    expect(ruleset.chains.flatMap((c) => c.rules).some((r) => r.includes('10.245.0.0'))).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------

describe('the template', () => {
  const parse = (body: string) => parseTemplate(body, 't.rules');
  const values = templateValues(ctxOf());

  it('the shipped template parses and names the fixed chains', () => {
    const tpl = loadTemplate();
    expect(tpl.tables.map((t) => t.table)).toEqual(['filter', 'nat', 'mangle']);
    expect(
      skeleton(ctxOf())
        .chains.filter((c) => c.servicePorts)
        .map((c) => `${c.table} ${c.name}`),
    ).toEqual([
      'filter KUBE-SERVICES',
      'filter KUBE-EXTERNAL-SERVICES',
      'filter KUBE-NODEPORTS',
      'filter KUBE-PROXY-FIREWALL',
      'nat KUBE-SERVICES',
      'nat KUBE-NODEPORTS',
    ]);
  });

  it('refuses malformed templates, naming the line', () => {
    const bad: [string, RegExp][] = [
      [
        '*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -d {{NODE_IP}}/32 -j RETURN\nCOMMIT',
        /t\.rules:3: unknown placeholder \{\{NODE_IP\}\}/,
      ],
      ['*nat\n{{#if IPV4}}\n:KUBE-SERVICES - [0:0]\nCOMMIT', /t\.rules:4: COMMIT inside \{\{#if\}\} opened at line 2/],
      [
        '*nat\n{{#if IPV4}}\n:KUBE-SERVICES - [0:0]\n{{/each}}\nCOMMIT',
        /t\.rules:4: \{\{\/each\}\} closes \{\{#if\}\}/,
      ],
      ['*nat\n{{/if}}\nCOMMIT', /t\.rules:2: \{\{\/if\}\} without an open section/],
      ['*nat\n{{#if SOMETIMES}}\n{{/if}}\nCOMMIT', /t\.rules:2: unknown flag "SOMETIMES"/],
      ['*nat\n{{#for X}}\nCOMMIT', /t\.rules:2: unknown directive/],
      ['*nat\n{{#each NODEPORT_CIDRS}}\n:KUBE-SERVICES - [0:0]\n', /never closed/],
      ['*nat\n:KUBE-SERVICES - [0:0]\n', /t\.rules:3: table \*nat opened at line 1 has no COMMIT/],
      ['*raw\nCOMMIT', /t\.rules:1: unknown table "raw"/],
      ['*nat\n:MY-CHAIN - [0:0]\nCOMMIT', /t\.rules:2: chain MY-CHAIN is not one of kproxy's fixed chains/],
      ['*nat\n-A KUBE-SERVICES -j RETURN\nCOMMIT', /t\.rules:2: -A KUBE-SERVICES: not declared above/],
      [
        '*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -d {{NODEPORT_CIDRS}} -j RETURN\nCOMMIT',
        /t\.rules:3: \{\{NODEPORT_CIDRS\}\} outside \{\{#each NODEPORT_CIDRS\}\}/,
      ],
      [
        '*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j ACCEPT\nCOMMIT',
        /t\.rules:3: a rule in built-in chain PREROUTING must be a jump/,
      ],
      [
        '*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING {{SERVICE_RULES}}\nCOMMIT',
        /t\.rules:3: \{\{SERVICE_RULES\}\} in built-in chain/,
      ],
      ['*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j RETURN {{MASQ_MARK}\nCOMMIT', /t\.rules:3: unbalanced/],
      ['-A INPUT -j KUBE-SERVICES', /t\.rules:1: .* outside a table/],
      ['*nat\n  :KUBE-SERVICES - [0:0]\nCOMMIT', /t\.rules:2: lines must not be indented/],
      ['*nat\nCOMMIT\n*nat\nCOMMIT', /t\.rules:3: table nat appears twice/],
    ];
    for (const [text, why] of bad) expect(() => parse(text), text).toThrow(why);
  });

  it('refuses a filled rule that is not in iptables-save form, naming the line', () => {
    const tpl = parse(
      '*nat\n:KUBE-SERVICES - [0:0]\n\n-A KUBE-SERVICES -m addrtype --dst-type LOCAL -d {{LOOPBACK}} -j RETURN\nCOMMIT',
    );
    expect(() => fillTemplate(tpl, 'ipv4', values)).toThrow(/t\.rules:4: -d out of iptables-save's order/);
    const quoted = parse(
      '*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -m comment --comment "plain" -j RETURN\nCOMMIT',
    );
    expect(() => fillTemplate(quoted, 'ipv4', values)).toThrow(/t\.rules:3: comment "plain" is not quoted/);
    const jump = parse('*nat\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT');
    expect(() => fillTemplate(jump, 'ipv4', values)).toThrow(
      /t\.rules:2: jump to KUBE-SERVICES, which is not declared/,
    );
  });

  it('fills conditionals and repetitions', () => {
    const tpl = parse(
      [
        '*nat',
        ':KUBE-SERVICES - [0:0]',
        '-A PREROUTING -j KUBE-SERVICES',
        '-A KUBE-SERVICES -j MARK --set-xmark {{MASQ_MARK}}/0x0',
        '-A KUBE-SERVICES {{SERVICE_RULES}}',
        '{{#unless IPV4}}',
        '-A KUBE-SERVICES -j ACCEPT',
        '{{/unless}}',
        '{{#each NODEPORT_CIDRS}}',
        '{{#if DROP_INVALID}}',
        '-A KUBE-SERVICES -d {{NODEPORT_CIDRS}} -j RETURN',
        '{{/if}}',
        '{{/each}}',
        'COMMIT',
      ].join('\n'),
    );
    const filled = fillTemplate(tpl, 'ipv4', {
      ...values,
      lists: { NODEPORT_CIDRS: ['192.0.2.0/24', '10.0.0.0/8'] },
    });
    expect(filled.jumps).toEqual([{ table: 'nat', chain: 'PREROUTING', rule: '-j KUBE-SERVICES' }]);
    expect(filled.chains).toEqual([
      {
        table: 'nat',
        name: 'KUBE-SERVICES',
        head: ['-j MARK --set-xmark 0x4000/0x0'],
        tail: ['-d 192.0.2.0/24 -j RETURN', '-d 10.0.0.0/8 -j RETURN'],
        servicePorts: true,
      },
    ]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('restore text, save parsing and the sync plan', () => {
  const rs = (): IptRuleset => renderIptables(sampleStateV4(), OPTIONS).ruleset;

  /** What iptables-save would print for a ruleset, with a built-in chain's other rules around ours. */
  function saveOf(r: IptRuleset, extra = ''): string {
    const out: string[] = ['# Generated by iptables-save v1.8.9'];
    for (const table of ['filter', 'nat', 'mangle', 'raw'] as const) {
      out.push(`*${table}`, ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [12:3400]');
      for (const c of r.chains.filter((x) => x.table === table)) out.push(`:${c.name} - [0:0]`);
      for (const j of r.jumps.filter((x) => x.table === table)) out.push(`[3:120] -A ${j.chain} ${j.rule}`);
      out.push(`-A INPUT -s 192.0.2.0/24 -j ACCEPT`);
      for (const c of r.chains.filter((x) => x.table === table)) for (const x of c.rules) out.push(`-A ${c.name} ${x}`);
      out.push('COMMIT');
    }
    return `${out.join('\n')}\n${extra}`;
  }

  it('parses save output: counters and comments ignored, empty chains kept, other tables left out', () => {
    const saved = parseIptablesSave(saveOf(rs()));
    expect([...saved.keys()]).toEqual(['filter', 'nat', 'mangle']);
    expect(saved.get('mangle')?.get('KUBE-PROXY-CANARY')).toEqual([]);
    expect(saved.get('filter')?.get('INPUT')?.at(-1)).toBe('-s 192.0.2.0/24 -j ACCEPT');
    expect(saved.get('filter')?.get('INPUT')?.[0]).toBe(rs().jumps[0]?.rule);
  });

  it('a kernel that holds exactly the ruleset needs nothing', () => {
    const plan = planSync(rs(), parseIptablesSave(saveOf(rs())), 'all-differing');
    expect(plan).toEqual({ text: '', changes: 0, chainsWritten: 0, chainsDeleted: 0, jumpsAdded: 0, jumpsDeleted: 0 });
  });

  it('an empty kernel gets everything; the restore declares chains first, rules, jumps in order, COMMIT', () => {
    const plan = planSync(rs(), parseIptablesSave(''), 'all-differing');
    expect(plan.chainsWritten).toBe(rs().chains.length);
    expect(plan.jumpsAdded).toBe(rs().jumps.length);
    const nat = plan.text.slice(plan.text.indexOf('*nat'), plan.text.indexOf('*mangle'));
    const kinds = nat
      .trim()
      .split('\n')
      .map((l) => l.split(' ')[0]?.replace(/^:.*/, ':'));
    expect(kinds.join(' ')).toMatch(/^\*nat (: )+(-A )+(-I )+COMMIT$/);
    // Inserted at the top in reverse, the jumps end up in the listed order.
    expect(nat).toContain(
      '-I POSTROUTING 1 -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING\n-I OUTPUT 1',
    );
    expect(plan.text.endsWith('*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n')).toBe(true);
  });

  it('writes only what differs, deletes stale per-service chains, restores and de-duplicates jumps', () => {
    const desired = rs();
    const stale = '-A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-SEP-BBBBBBBBBBBBBBBB\n';
    let text = saveOf(desired)
      .replace('-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n', '')
      .replace(/\[3:120\] -A PREROUTING .*\n/, '');
    // Someone's duplicate of our FORWARD jump, a stale service chain, and an unknown chain we leave alone.
    const forward = desired.jumps.find((j) => j.chain === 'FORWARD');
    text = text.replace(
      '*nat\n',
      `*nat\n:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\n:KUBE-SEP-BBBBBBBBBBBBBBBB - [0:0]\n:KUBE-MARK-DROP - [0:0]\n${stale}`,
    );
    text = text.replace('*filter\n', `*filter\n-A FORWARD ${forward?.rule}\n`);
    const plan = planSync(desired, parseIptablesSave(text), 'all-differing');
    expect(plan).toMatchObject({ chainsWritten: 1, chainsDeleted: 2, jumpsAdded: 1, jumpsDeleted: 1, changes: 5 });
    expect(plan.text).toBe(
      [
        '*filter',
        `-D FORWARD ${forward?.rule}`,
        'COMMIT',
        '*nat',
        ':KUBE-MARK-MASQ - [0:0]',
        ':KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]',
        ':KUBE-SEP-BBBBBBBBBBBBBBBB - [0:0]',
        '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
        '-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-X KUBE-SVC-AAAAAAAAAAAAAAAA',
        '-X KUBE-SEP-BBBBBBBBBBBBBBBB',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  it('partial: writes exactly the named chains and deletes the named stale ones, without reading', () => {
    const desired = rs();
    const svcChain = desired.chains.find((c) => c.name.startsWith('KUBE-SVC-'));
    const plan = planSync(desired, undefined, {
      chains: new Set(['KUBE-SERVICES', svcChain?.name ?? '']),
      deleteChains: new Set(['KUBE-SEP-BBBBBBBBBBBBBBBB']),
    });
    expect(plan).toMatchObject({ chainsWritten: 3, chainsDeleted: 1, jumpsAdded: 0 });
    expect(plan.text).toContain(`*filter\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES`);
    expect(plan.text).toContain(`-X KUBE-SEP-BBBBBBBBBBBBBBBB\nCOMMIT`);
    expect(() => planSync(desired, undefined, { chains: new Set(), deleteChains: new Set(['KUBE-FOO']) })).toThrow(
      /not a per-service chain/,
    );
  });

  it('restoreText refuses a chain both written and deleted, a jump from a non-built-in chain, line breaks', () => {
    const chain = { table: 'nat' as const, name: 'KUBE-SVC-AAAAAAAAAAAAAAAA', rules: ['-j RETURN'] };
    expect(() => restoreText('ipv4', [chain], { deleteChains: [chain] })).toThrow(/also elsewhere/);
    expect(() =>
      restoreText('ipv4', [], { addJumps: [{ table: 'nat', chain: 'KUBE-SERVICES', rule: '-j KUBE-SVC-A' }] }),
    ).toThrow(/not a built-in chain/);
    expect(() => restoreText('ipv4', [{ ...chain, rules: ['-j RETURN\nCOMMIT'] }])).toThrow(/line break/);
    expect(() => restoreText('ipv4', [{ ...chain, name: 'KUBE SVC' }])).toThrow(/chain name/);
    // Jumps may be deleted from other software's chains too (cleanup), never with a hostile name.
    expect(
      restoreText('ipv4', [], { deleteJumps: [{ table: 'filter', chain: 'cali-INPUT', rule: '-j KUBE-SERVICES' }] }),
    ).toBe('*filter\n-D cali-INPUT -j KUBE-SERVICES\nCOMMIT\n');
    expect(() =>
      restoreText('ipv4', [], { deleteJumps: [{ table: 'filter', chain: 'X\n-F', rule: '-j KUBE-SERVICES' }] }),
    ).toThrow(/unsupported iptables chain name/);
    expect(restoreText('ipv4', [])).toBe('');
    expect(restoreText('ipv4', [], { declareOnly: [{ table: 'mangle', name: 'KUBE-PROXY-CANARY' }] })).toBe(
      '*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n',
    );
  });

  it('dumpText: a header per family, then its restore input with jumps appended in order', () => {
    const text = dumpText([rs(), renderIptables(bareState([], 'ipv6'), OPTIONS).ruleset]);
    expect(text.startsWith('# IPv4 (iptables-restore)\n*filter\n:KUBE-SERVICES - [0:0]\n')).toBe(true);
    expect(text).toContain('COMMIT\n# IPv6 (ip6tables-restore)\n*filter\n');
    expect(text).toContain(
      '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n',
    );
    expect(text.endsWith('COMMIT\n')).toBe(true);
  });
});
