/**
 * @module demo/http-backend
 * A tiny HTTP server for the demo's backend pods: answers every request with its pod name.
 * Usage (inside a pod's namespace): node http-backend.ts NAME PORT
 */
import { createServer } from 'node:http';

const [name = 'backend', port = '8080'] = process.argv.slice(2);
createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(`${name}\n`);
}).listen(Number(port), '::', () => process.stdout.write('ready\n'));
