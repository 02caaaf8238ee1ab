/**
 * @module daemon/rules-endpoint
 * `/rules` on the metrics address: the desired state this node last applied, per family, as the
 * reconciler handed it to the backend. `?format=json` (default): node states with every service
 * port and its decided routes and endpoints; `?format=text`: the mode's dump of that state (what an
 * empty kernel would be given: nft text, iptables-restore input, …). `?service=NS/NAME`: only that
 * Service's ports; `?family=ipv4|ipv6`: one family.
 */
import type { ServerResponse } from 'node:http';
import type { ProxyConfig } from '../config/proxy-config.ts';
import type { NodeState } from '../model/node-state.ts';
import { type FamilyState, nodeStateOf, type ProxyModeDefinition } from '../proxy/backend.ts';

export interface RulesSource {
  readonly mode: ProxyModeDefinition;
  readonly config: ProxyConfig;
  /** The last applied desired state per family; empty before the first applied sync. */
  lastApplied(): readonly FamilyState[];
}

const TEXT = { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' };
const JSON_TYPE = { 'Content-Type': 'application/json; charset=utf-8', 'X-Content-Type-Options': 'nosniff' };

export function serveRules(source: RulesSource, query: URLSearchParams, res: ServerResponse): void {
  const format = query.get('format') ?? 'json';
  const service = query.get('service');
  const family = query.get('family');
  const fail = (code: number, message: string) => {
    res.writeHead(code, TEXT);
    res.end(`${message}\n`);
  };
  if (format !== 'json' && format !== 'text') return fail(400, 'format: json or text');
  if (family !== null && family !== 'ipv4' && family !== 'ipv6') return fail(400, 'family: ipv4 or ipv6');
  if (service !== null && !/^[^/\s]+\/[^/\s]+$/.test(service)) return fail(400, 'service: NAMESPACE/NAME');
  const applied = source.lastApplied();
  if (applied.length === 0) return fail(503, 'no sync applied yet');
  const states: NodeState[] = applied
    .filter((fs) => family === null || fs.context.family === family)
    .map((fs) =>
      service === null ? nodeStateOf(fs) : { ...fs.context, servicePorts: [...(fs.services.get(service) ?? [])] },
    );
  if (service !== null && states.every((s) => s.servicePorts.length === 0))
    return fail(404, `no service ports of ${service} in the applied state`);
  if (format === 'text') {
    const { text } = source.mode.dump({ states, config: source.config, format: source.mode.dumpFormats[0] });
    res.writeHead(200, TEXT);
    res.end(text);
    return;
  }
  res.writeHead(200, JSON_TYPE);
  res.end(
    `${JSON.stringify({ mode: source.mode.mode, ...(service ? { service } : {}), families: states }, null, 1)}\n`,
  );
}
