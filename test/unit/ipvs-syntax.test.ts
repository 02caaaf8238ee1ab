/**
 * IPVS mode's line writer (src/backends/ipvs/render/syntax.ts): the exact `ipvsadm -R` and
 * `ip -batch` lines, and hostile or malformed values refused before they reach any line.
 */
import { describe, expect, it } from 'vitest';
import {
  addressLine,
  hostPort,
  keyText,
  line,
  timeoutArgs,
  type VirtualServer,
  type VirtualServerKey,
} from '../../src/backends/ipvs/render/syntax.ts';

const tcp = (ip: string, port: number): VirtualServerKey => ({ kind: 'address', protocol: 'TCP', ip, port });
const vs = (key: VirtualServerKey, extra: Partial<VirtualServer> = {}): VirtualServer => ({
  key,
  scheduler: 'rr',
  flags: [],
  ...extra,
});

describe('ipvsadm lines', () => {
  it('services of each protocol and family, fwmark services, scheduler flags and persistence', () => {
    expect(line.addService(vs(tcp('10.96.0.10', 80)))).toBe('-A -t 10.96.0.10:80 -s rr');
    expect(
      line.addService(vs({ kind: 'address', protocol: 'UDP', ip: '10.96.0.10', port: 53 }, { persistence: 600 })),
    ).toBe('-A -u 10.96.0.10:53 -s rr -p 600');
    expect(
      line.addService(
        vs({ kind: 'address', protocol: 'SCTP', ip: 'fd00::a', port: 9000 }, { scheduler: 'mh', flags: ['mh-port'] }),
      ),
    ).toBe('-A --sctp-service [fd00::a]:9000 -s mh -b mh-port');
    expect(line.addService(vs({ kind: 'fwmark', family: 'ipv4', mark: 5 }, { scheduler: 'wlc' }))).toBe(
      '-A -f 5 -s wlc',
    );
    expect(line.editService(vs({ kind: 'fwmark', family: 'ipv6', mark: 6 }))).toBe('-E -f 6 -6 -s rr');
    expect(line.deleteService(tcp('10.96.0.10', 80))).toBe('-D -t 10.96.0.10:80');
  });

  it('real servers: masquerading, a weight; deletion names only the address', () => {
    const key = tcp('10.96.0.10', 80);
    expect(line.addServer(key, { ip: '10.244.0.11', port: 8080, weight: 1 })).toBe(
      '-a -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 1',
    );
    expect(line.editServer(key, { ip: '10.244.0.11', port: 8080, weight: 0 })).toBe(
      '-e -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 0',
    );
    expect(line.deleteServer({ kind: 'fwmark', family: 'ipv6', mark: 3 }, { ip: 'fd00::11', port: 8080 })).toBe(
      '-d -f 3 -6 -r [fd00::11]:8080',
    );
    expect(keyText(key)).toBe('TCP/10.96.0.10:80');
    expect(keyText({ kind: 'fwmark', family: 'ipv6', mark: 3 })).toBe('FWM/6/3');
    expect(hostPort('2001:db8::1', 30080)).toBe('[2001:db8::1]:30080');
  });

  it('kube-ipvs0 addresses as host routes', () => {
    expect(addressLine.add('10.96.0.10')).toBe('address add 10.96.0.10/32 dev kube-ipvs0');
    expect(addressLine.add('fd00::a')).toBe('address add fd00::a/128 dev kube-ipvs0 nodad');
    expect(addressLine.delete('fd00::a')).toBe('address del fd00::a/128 dev kube-ipvs0');
    expect(timeoutArgs({ tcp: 900, tcpFin: 0, udp: 30 })).toEqual(['--set', '900', '0', '30']);
  });

  describe('refuses hostile and malformed values', () => {
    const hostileIps = [
      '10.96.0.10 -s rr',
      '10.96.0.10\n-C',
      '10.96.0.010',
      '10.96.0.256',
      'FD00::A',
      'fd00:0::a',
      '[fd00::a]',
      '',
      'localhost',
      '10.96.0.10:80',
    ];
    it.each(hostileIps)('address %j', (ip) => {
      expect(() => line.addService(vs(tcp(ip, 80)))).toThrow(/invalid IP address/);
      expect(() => line.addServer(tcp('10.96.0.10', 80), { ip, port: 80, weight: 1 })).toThrow(/invalid IP address/);
      expect(() => addressLine.add(ip)).toThrow(/invalid IP address/);
    });

    it.each([0, -1, 65536, 80.5, Number.NaN])('port %s', (port) => {
      expect(() => line.addService(vs(tcp('10.96.0.10', port)))).toThrow(/invalid port/);
      expect(() => line.addServer(tcp('10.96.0.10', 80), { ip: '10.244.0.1', port, weight: 1 })).toThrow(
        /invalid port/,
      );
    });

    it.each(['RR', 'rr -p 1', 'rr\n-C', 'nosuch', ''])('scheduler %j', (scheduler) => {
      expect(() => line.addService(vs(tcp('10.96.0.10', 80), { scheduler: scheduler as 'rr' }))).toThrow(
        /invalid IPVS scheduler/,
      );
    });

    it('timeouts, marks, weights, flags, protocols, families', () => {
      expect(() => line.addService(vs(tcp('10.96.0.10', 80), { persistence: 0 }))).toThrow(/invalid IPVS timeout/);
      expect(() => line.addService(vs(tcp('10.96.0.10', 80), { persistence: 2_147_484 }))).toThrow(
        /invalid IPVS timeout/,
      );
      expect(() => timeoutArgs({ tcp: -1, tcpFin: 0, udp: 0 })).toThrow(/invalid IPVS timeout/);
      expect(() => line.addService(vs({ kind: 'fwmark', family: 'ipv4', mark: 0 }))).toThrow(/invalid firewall mark/);
      expect(() => line.addService(vs({ kind: 'fwmark', family: 'ipv4', mark: 2 ** 32 }))).toThrow(
        /invalid firewall mark/,
      );
      expect(() => line.addService(vs({ kind: 'fwmark', family: 'ipv5' as 'ipv4', mark: 1 }))).toThrow(
        /invalid family/,
      );
      expect(() => line.addServer(tcp('10.96.0.10', 80), { ip: '10.244.0.1', port: 80, weight: -1 })).toThrow(
        /invalid weight/,
      );
      expect(() => line.addService(vs(tcp('10.96.0.10', 80), { flags: ['sh-port -p 1' as 'mh-port'] }))).toThrow(
        /invalid scheduler flag/,
      );
      expect(() =>
        line.addService(vs({ kind: 'address', protocol: 'ICMP' as 'TCP', ip: '10.96.0.10', port: 80 })),
      ).toThrow(/invalid protocol/);
      expect(() => line.addServer(tcp('10.96.0.10', 80), { ip: 'fd00::1', port: 80, weight: 1 })).toThrow(
        /another family/,
      );
    });
  });
});
