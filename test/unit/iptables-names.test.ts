/**
 * iptables mode's chain names are upstream's, bit for bit: a node that ran upstream's iptables
 * mode keeps its chains, and kproxy recognises (and garbage-collects) only its own kinds.
 */
import { describe, expect, it } from 'vitest';
import {
  base32,
  endpointChainName,
  isKproxyServiceChain,
  serviceChainNames,
  servicePortName,
  SKELETON_CHAINS,
} from '../../src/backends/iptables/render/names.ts';
import type { ServicePortRef } from '../../src/model/node-state.ts';

const ref = (portName: string, protocol: ServicePortRef['protocol'] = 'TCP'): ServicePortRef => ({
  namespace: 'ns1',
  name: 'svc1',
  portName,
  protocol,
});

describe('iptables chain names', () => {
  it('base32 is RFC 4648 (standard alphabet)', () => {
    const enc = (s: string) => base32(new TextEncoder().encode(s));
    // RFC 4648 section 10 test vectors, without the padding.
    expect(['', 'f', 'fo', 'foo', 'foob', 'fooba', 'foobar'].map(enc)).toEqual([
      '',
      'MY',
      'MZXQ',
      'MZXW6',
      'MZXW6YQ',
      'MZXW6YTB',
      'MZXW6YTBOI',
    ]);
  });

  it('upstream test vector: ns1/svc1:p80 tcp', () => {
    const names = serviceChainNames(ref('p80'));
    expect(names.svc).toBe('KUBE-SVC-XPGD46QRK7WJZT7O');
    expect(names).toEqual({
      svc: 'KUBE-SVC-XPGD46QRK7WJZT7O',
      svl: 'KUBE-SVL-XPGD46QRK7WJZT7O',
      ext: 'KUBE-EXT-XPGD46QRK7WJZT7O',
      fw: 'KUBE-FW-XPGD46QRK7WJZT7O',
    });
  });

  it('upstream test vector: the endpoint 10.180.0.1:80 of ns1/svc1:p80 tcp', () => {
    expect(endpointChainName(ref('p80'), { ip: '10.180.0.1', port: 80 })).toBe('KUBE-SEP-SXIVWICOYRO3J4NJ');
  });

  it('the service port name leaves out the colon of an unnamed port; protocol and port name change the hash', () => {
    expect(servicePortName(ref(''))).toBe('ns1/svc1');
    expect(servicePortName(ref('http'))).toBe('ns1/svc1:http');
    const hashes = new Set(
      [ref(''), ref('p80'), ref('p80', 'UDP'), ref('p80', 'SCTP')].map((r) => serviceChainNames(r).svc),
    );
    expect(hashes.size).toBe(4);
  });

  it('IPv6 endpoints hash as [ip]:port', () => {
    const a = endpointChainName(ref('p80'), { ip: 'fd00::1', port: 80 });
    expect(a).toMatch(/^KUBE-SEP-[A-Z2-7]{16}$/);
    expect(a).not.toBe(endpointChainName(ref('p80'), { ip: 'fd00::1', port: 81 }));
  });

  it('recognises exactly the per-service chain kinds', () => {
    for (const name of [
      'KUBE-SVC-XPGD46QRK7WJZT7O',
      'KUBE-SVL-XPGD46QRK7WJZT7O',
      'KUBE-EXT-XPGD46QRK7WJZT7O',
      'KUBE-FW-XPGD46QRK7WJZT7O',
      'KUBE-SEP-SXIVWICOYRO3J4NJ',
    ])
      expect(isKproxyServiceChain(name), name).toBe(true);
    for (const name of [
      'KUBE-SERVICES',
      'KUBE-NODEPORTS',
      'KUBE-MARK-MASQ',
      'KUBE-SVC-XPGD46QRK7WJZT7',
      'KUBE-SVC-XPGD46QRK7WJZT7OX',
      'KUBE-SVC-XPGD46QRK7WJZT71',
      'KUBE-SVC-xpgd46qrk7wjzt7o',
      'KUBE-XLB-XPGD46QRK7WJZT7O',
      'CILIUM-SVC-XPGD46QRK7WJZT7O',
      'KUBE-SEP-SXIVWICOYRO3J4NJ ',
    ])
      expect(isKproxyServiceChain(name), name).toBe(false);
    for (const name of SKELETON_CHAINS) expect(isKproxyServiceChain(name)).toBe(false);
  });
});
