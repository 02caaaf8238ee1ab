/**
 * Reading the kernel's IPVS state back: `ipvsadm -Sn`, `ipvsadm -Ln` and `ip -o addr show`, as
 * ipvsadm 1.31 / iproute2 6.1 print them on Linux 6.1 (captured in the IPVS VM).
 */
import { describe, expect, it } from 'vitest';
import { parseAddresses, parseIpvsList, parseIpvsSave } from '../../src/backends/ipvs/render/observed.ts';

const SAVE = `-A -t 10.96.0.10:80 -s rr
-a -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 1
-a -t 10.96.0.10:80 -r 10.244.0.12:8080 -m -w 0
-A -u 10.96.0.10:53 -s wrr -p 600
-a -u 10.96.0.10:53 -r 10.244.0.11:5353 -m -w 1
-A --sctp-service 10.96.0.10:9000 -s mh -b mh-port
-A -t [fd00::a]:80 -s lc
-a -t [fd00::a]:80 -r [fd00:244::11]:8080 -m -w 1
-A -f 5 -s rr -p 10800
-a -f 5 -r 10.244.0.11:8080 -m -w 1
-A -f 6 -6 -s rr
-a -f 6 -6 -r [fd00:244::11]:8080 -m -w 1
-A -t 192.0.2.9:443 -s wlc -p 300 -M 255.255.255.0 --pe sip
-a -t 192.0.2.9:443 -r 192.0.2.20:443 -g -w 3 -x 100 -y 10
`;

const LIST = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.10:80 rr
  -> 10.244.0.11:8080             Masq    1      2          0         
  -> 10.244.0.12:8080             Masq    0      0          7         
UDP  10.96.0.10:53 wrr persistent 600
  -> 10.244.0.11:5353             Masq    1      0          0         
SCTP 10.96.0.10:9000 mh (mh-port)
TCP  [fd00::a]:80 lc
  -> [fd00:244::11]:8080          Masq    1      0          0         
FWM  5 rr persistent 10800
  -> 10.244.0.11:8080             Masq    1      1          1         
FWM  6 IPv6 rr
  -> [fd00:244::11]:8080          Masq    1      0          3         
`;

describe('ipvsadm -Sn', () => {
  const o = parseIpvsSave(SAVE);

  it('reads every service with its scheduler, flags, persistence and real servers', () => {
    expect([...o.virtualServers.keys()]).toEqual([
      'TCP/10.96.0.10:80',
      'UDP/10.96.0.10:53',
      'SCTP/10.96.0.10:9000',
      'TCP/[fd00::a]:80',
      'FWM/4/5',
      'FWM/6/6',
      'TCP/192.0.2.9:443',
    ]);
    const web = o.virtualServers.get('TCP/10.96.0.10:80');
    expect(web?.scheduler).toBe('rr');
    expect([...(web?.realServers.values() ?? [])]).toEqual([
      { ip: '10.244.0.11', port: 8080, weight: 1, method: 'm', other: [] },
      { ip: '10.244.0.12', port: 8080, weight: 0, method: 'm', other: [] },
    ]);
    expect(o.virtualServers.get('UDP/10.96.0.10:53')?.persistence).toBe(600);
    expect(o.virtualServers.get('SCTP/10.96.0.10:9000')?.flags).toEqual(['mh-port']);
    expect(o.virtualServers.get('FWM/6/6')?.key).toEqual({ kind: 'fwmark', family: 'ipv6', mark: 6 });
    expect([...(o.virtualServers.get('FWM/6/6')?.realServers.keys() ?? [])]).toEqual(['[fd00:244::11]:8080']);
    expect(o.unreadable).toEqual([]);
  });

  it("keeps options kproxy never writes, so such a service never counts as kproxy's shape", () => {
    const foreign = o.virtualServers.get('TCP/192.0.2.9:443');
    expect(foreign?.other).toEqual(['-M 255.255.255.0', '--pe sip']);
    expect(foreign?.realServers.get('192.0.2.20:443')).toEqual({
      ip: '192.0.2.20',
      port: 443,
      weight: 3,
      method: 'g',
      other: ['-x 100', '-y 10'],
    });
  });

  it('reports lines it cannot read instead of guessing', () => {
    const bad = parseIpvsSave('-A -t 10.96.0.999:80 -s rr\n-a -t 10.9.9.9:80 -r 10.0.0.1:80 -m -w 1\n-Z\ngarbage\n');
    expect(bad.virtualServers.size).toBe(0);
    expect(bad.unreadable).toHaveLength(4);
  });
});

describe('ipvsadm -Ln', () => {
  it('active and inactive connections per real server', () => {
    const c = parseIpvsList(LIST);
    expect(c.get('TCP/10.96.0.10:80')?.get('10.244.0.11:8080')).toEqual({ active: 2, inactive: 0 });
    expect(c.get('TCP/10.96.0.10:80')?.get('10.244.0.12:8080')).toEqual({ active: 0, inactive: 7 });
    expect(c.get('SCTP/10.96.0.10:9000')?.size).toBe(0);
    expect(c.get('FWM/4/5')?.get('10.244.0.11:8080')).toEqual({ active: 1, inactive: 1 });
    expect(c.get('FWM/6/6')?.get('[fd00:244::11]:8080')).toEqual({ active: 0, inactive: 3 });
    expect(c.get('TCP/[fd00::a]:80')?.get('[fd00:244::11]:8080')).toEqual({ active: 0, inactive: 0 });
  });
});

describe('ip -o addr show', () => {
  it('interface, family, canonical address and scope of each address', () => {
    const text = [
      '1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever',
      '1: lo    inet6 ::1/128 scope host \\       valid_lft forever preferred_lft forever',
      '2: eth0@if7    inet 192.0.2.1/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever preferred_lft forever',
      '2: eth0@if7    inet6 2001:DB8:1::1/64 scope global \\       valid_lft forever preferred_lft forever',
      '2: eth0@if7    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever',
      '3: kube-ipvs0    inet 10.96.0.10/32 scope global kube-ipvs0\\       valid_lft forever preferred_lft forever',
      '3: kube-ipvs0    inet6 fd00::a/128 scope global nodad \\       valid_lft forever preferred_lft forever',
    ].join('\n');
    expect(parseAddresses(text)).toEqual([
      { ifname: 'lo', family: 'ipv4', ip: '127.0.0.1', scope: 'host' },
      { ifname: 'lo', family: 'ipv6', ip: '::1', scope: 'host' },
      { ifname: 'eth0', family: 'ipv4', ip: '192.0.2.1', scope: 'global' },
      { ifname: 'eth0', family: 'ipv6', ip: '2001:db8:1::1', scope: 'global' },
      { ifname: 'eth0', family: 'ipv6', ip: 'fe80::1', scope: 'link' },
      { ifname: 'kube-ipvs0', family: 'ipv4', ip: '10.96.0.10', scope: 'global' },
      { ifname: 'kube-ipvs0', family: 'ipv6', ip: 'fd00::a', scope: 'global' },
    ]);
  });
});
