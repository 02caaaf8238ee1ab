/**
 * A TCP listener relaying every connection to a Unix socket, for a process inside a network
 * namespace to reach a server outside it without any address outside the namespace (a Unix
 * socket is a file, not a network address):
 *
 *   ip netns exec NS node test/support/unix-relay.ts 127.0.0.1:6443 /tmp/dir/api.sock
 *
 * Prints `ready` once listening; exits on SIGTERM.
 */
import { connect, createServer } from 'node:net';

const [listenAt = '', socketPath = ''] = process.argv.slice(2);
const sep = listenAt.lastIndexOf(':');
const server = createServer((inbound) => {
  const outbound = connect(socketPath);
  inbound.pipe(outbound).pipe(inbound);
  const close = (): void => {
    inbound.destroy();
    outbound.destroy();
  };
  inbound.on('error', close);
  outbound.on('error', close);
});
server.listen(Number(listenAt.slice(sep + 1)), listenAt.slice(0, sep), () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
