/**
 * A pod for the IPVS kernel tests (run in a pod's namespace): on TCP it says its name when a
 * connection opens and then echoes every line, so a test can hold a connection open across syncs;
 * on UDP it answers each datagram with its name. Prints "ready" once both listen.
 *
 *   ip netns exec POD node test/ipvs/echo-server.ts NAME TCP_PORT UDP_PORT
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';

const [name = 'pod', tcpPort = '8080', udpPort = '5353'] = process.argv.slice(2);
let waiting = 2;
const ready = () => {
  if (--waiting === 0) process.stdout.write('ready\n');
};
net
  .createServer((sock) => {
    sock.on('error', () => {});
    sock.write(`${name}\n`);
    sock.on('data', (d) => sock.write(d));
  })
  .listen({ port: Number(tcpPort), host: '::', ipv6Only: false }, ready);
const udp = dgram.createSocket({ type: 'udp6', ipv6Only: false });
udp.on('message', (_m, r) => udp.send(`${name}\n`, r.port, r.address));
udp.bind({ port: Number(udpPort), address: '::' }, ready);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
