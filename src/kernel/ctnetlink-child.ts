/**
 * @module kernel/ctnetlink-child
 * The long-lived process that holds kproxy's ctnetlink sockets (`ctnetlink.ts`), started by
 * `ctnetlink-client.ts` in the node's network namespace: a netlink socket reaches the conntrack
 * table of the namespace its process was in when it opened it, and the daemon itself may run
 * elsewhere (test harnesses run it in the host namespace). It runs nothing else, so a dump that
 * blocks it never delays a tool run of the spawner (`spawner-child.ts`).
 *
 * One JSON object per line each way, on stdin and stdout:
 *   out, first: {"ready":true}  or  {"ready":false,"error":"cannot load libmnl.so.0: …"} (then it exits)
 *   in:  {"id":1,"op":"list","family":"ipv4","protocol":"UDP"}
 *        {"id":2,"op":"destroy","entries":[{family, protocol, original:{src,dst,sport,dport}, id?, zone?}]}
 *   out: {"id":1,"entries":[…]}  {"id":2,"deleted":1,"missing":0,"errors":[]}  {"id":3,"error":"…"}
 * Answers may come out of order: a dump waits for the kernel on a worker thread while deletions
 * are served. When stdin closes (the daemon is gone) it exits.
 */
import { createInterface } from 'node:readline';
import { type Ctnetlink, openCtnetlink } from './ctnetlink.ts';

interface Request {
  readonly id: number;
  readonly op: string;
  readonly family?: unknown;
  readonly protocol?: unknown;
  readonly entries?: unknown;
}

const write = (o: object): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

let ct: Ctnetlink;
try {
  ct = openCtnetlink();
} catch (err) {
  write({ ready: false, error: err instanceof Error ? err.message : String(err) });
  process.exit(0);
}
write({ ready: true });

async function serve(req: Request): Promise<object> {
  switch (req.op) {
    case 'list':
      if ((req.family !== 'ipv4' && req.family !== 'ipv6') || (req.protocol !== 'UDP' && req.protocol !== 'SCTP')) {
        return { id: req.id, error: `invalid list request ${JSON.stringify([req.family, req.protocol])}` };
      }
      // The kernel walks its table on a worker thread: deletions are served meanwhile.
      return { id: req.id, entries: await ct.list(req.family, req.protocol) };
    case 'destroy':
      // Each entry is validated by ctnetlink.ts before anything is encoded.
      if (!Array.isArray(req.entries)) return { id: req.id, error: 'destroy without entries' };
      return { id: req.id, ...ct.destroy(req.entries) };
    default:
      return { id: req.id, error: `unknown op ${JSON.stringify(req.op)}` };
  }
}

const lines = createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY });
lines.on('line', (line) => {
  let req: Request;
  try {
    req = JSON.parse(line) as Request;
  } catch {
    return;
  }
  if (typeof req?.id !== 'number') return;
  serve(req).then(write, (err: unknown) =>
    write({ id: req.id, error: err instanceof Error ? err.message : String(err) }),
  );
});
lines.on('close', () => {
  ct.close();
  process.exit(0);
});
