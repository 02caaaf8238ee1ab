/**
 * @module daemon/service-health
 * Per-Service health-check servers (upstream pkg/proxy/healthcheck/service_health.go): one HTTP
 * listener per healthCheckNodePort (Services with externalTrafficPolicy Local), answering 200 when
 * this node has local endpoints for the Service and the proxy is healthy, else 503, so cloud load
 * balancers send external traffic only to nodes that can serve it locally. A port that cannot be
 * bound is logged, reported through `onListenError`, and retried on the next syncServices.
 */
import { createServer, type Server } from 'node:http';
import type { Logger } from '../util/log.ts';
import { joinHostPort, listen, type RunningServer } from './http-listen.ts';

export interface ServiceRef {
  readonly namespace: string;
  readonly name: string;
}

/** `namespace/name`, the key of syncEndpoints' map. */
export function serviceKey(ref: ServiceRef): string {
  return `${ref.namespace}/${ref.name}`;
}

export interface ServiceHealthListenError {
  readonly service: ServiceRef;
  readonly port: number;
  readonly error: Error;
  /** Upstream's Event reason, for a Warning Event on the Service. */
  readonly reason: 'FailedToStartServiceHealthcheck';
  /** Upstream's Event message: `node N failed to start healthcheck "ns/name" on port P: err`. */
  readonly message: string;
}

export interface ServiceHealthServerOptions {
  /** This node's name, used in messages. */
  readonly nodeName: string;
  /**
   * IPs to listen on (each port is bound on every one); undefined or empty: every address of
   * both families, as upstream when nodePortAddresses matches all.
   */
  readonly addresses?: readonly string[];
  /** The proxy's own health (ProxyHealth.isHealthy, node eligibility not included). */
  readonly proxyHealthy: () => boolean;
  readonly onListenError?: (e: ServiceHealthListenError) => void;
  readonly logger?: Logger;
}

export interface ServiceHealthBody {
  readonly service: ServiceRef;
  readonly localEndpoints: number;
  readonly serviceProxyHealthy: boolean;
}

interface Instance {
  ref: ServiceRef;
  readonly servers: readonly RunningServer[];
}

export class ServiceHealthServer {
  readonly #opts: ServiceHealthServerOptions;
  readonly #hosts: readonly (string | undefined)[];
  /** Open listeners by port. */
  readonly #instances = new Map<number, Instance>();
  #endpoints: ReadonlyMap<string, number> = new Map();
  /** Serialises syncServices/close. */
  #queue: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(opts: ServiceHealthServerOptions) {
    this.#opts = opts;
    this.#hosts = opts.addresses && opts.addresses.length > 0 ? [...opts.addresses] : [undefined];
  }

  /**
   * Makes the open ports exactly `services` (healthCheckNodePort → Service): closes ports no longer
   * wanted, opens new ones, retries ports that failed before. Never rejects: bind failures go to
   * onListenError. Calls are serialised.
   */
  syncServices(services: ReadonlyMap<number, ServiceRef>): Promise<void> {
    const snapshot = new Map(services);
    return this.#enqueue(() => this.#syncServices(snapshot));
  }

  /** Replaces the local endpoint counts (`namespace/name` → count); absent Services count 0. */
  syncEndpoints(localEndpoints: ReadonlyMap<string, number>): void {
    this.#endpoints = new Map(localEndpoints);
  }

  /** Ports currently listening, ascending. */
  openPorts(): number[] {
    return [...this.#instances.keys()].sort((a, b) => a - b);
  }

  /** Closes every listener; later syncServices calls do nothing. */
  close(): Promise<void> {
    this.#closed = true;
    return this.#enqueue(() => this.#syncServices(new Map()));
  }

  #enqueue(task: () => Promise<void>): Promise<void> {
    this.#queue = this.#queue
      .then(task)
      .catch((err: unknown) => this.#opts.logger?.error({ err }, 'healthcheck sync failed'));
    return this.#queue;
  }

  /** The answer for the Service on `port` now, or undefined when the port is not served. */
  responseFor(port: number): { statusCode: 200 | 503; localEndpoints: number; body: ServiceHealthBody } | undefined {
    const inst = this.#instances.get(port);
    if (!inst) return undefined;
    const count = this.#endpoints.get(serviceKey(inst.ref)) ?? 0;
    const proxyHealthy = this.#opts.proxyHealthy();
    return {
      statusCode: count !== 0 && proxyHealthy ? 200 : 503,
      localEndpoints: count,
      body: {
        service: { namespace: inst.ref.namespace, name: inst.ref.name },
        localEndpoints: count,
        serviceProxyHealthy: proxyHealthy,
      },
    };
  }

  async #syncServices(wanted: ReadonlyMap<number, ServiceRef>): Promise<void> {
    const log = this.#opts.logger;
    const closing: Promise<void>[] = [];
    for (const [port, inst] of this.#instances) {
      const ref = wanted.get(port);
      if (ref === undefined) {
        log?.info({ service: serviceKey(inst.ref), port }, 'Closing healthcheck');
        this.#instances.delete(port);
        closing.push(...inst.servers.map((s) => s.close()));
      } else if (serviceKey(ref) !== serviceKey(inst.ref)) {
        // The port now belongs to another Service: keep the listener, answer for the new one.
        log?.info({ service: serviceKey(ref), previous: serviceKey(inst.ref), port }, 'Retargeting healthcheck');
        inst.ref = { namespace: ref.namespace, name: ref.name };
      }
    }
    await Promise.all(closing);
    if (this.#closed) wanted = new Map();
    await Promise.all(
      [...wanted]
        .filter(([port]) => !this.#instances.has(port))
        .map(([port, ref]) => this.#open(port, { namespace: ref.namespace, name: ref.name })),
    );
  }

  async #open(port: number, ref: ServiceRef): Promise<void> {
    const log = this.#opts.logger;
    log?.info({ service: serviceKey(ref), port }, 'Opening healthcheck');
    const settled = await Promise.allSettled(
      this.#hosts.map((host) =>
        listen(this.#httpServer(port), { host, port }, (err) =>
          log?.error({ err, service: serviceKey(ref), port }, 'Healthcheck server error'),
        ),
      ),
    );
    const opened = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed === undefined) {
      this.#instances.set(port, { ref, servers: opened });
      return;
    }
    // Close whatever did open, so a later sync can retry the whole port cleanly.
    await Promise.all(opened.map((s) => s.close()));
    const error = failed.reason instanceof Error ? failed.reason : new Error(String(failed.reason));
    const where =
      this.#hosts.length === 1 && this.#hosts[0] === undefined
        ? port
        : this.#hosts.map((h) => joinHostPort(h, port)).join(',');
    const message = `node ${this.#opts.nodeName} failed to start healthcheck "${serviceKey(ref)}" on port ${port}: ${error.message}`;
    log?.error(
      { err: error, node: this.#opts.nodeName, service: serviceKey(ref), port, address: where },
      'Failed to start healthcheck',
    );
    try {
      this.#opts.onListenError?.({ service: ref, port, error, reason: 'FailedToStartServiceHealthcheck', message });
    } catch (err) {
      log?.error({ err }, 'onListenError callback failed');
    }
  }

  #httpServer(port: number): Server {
    return createServer((_req, res) => {
      const r = this.responseFor(port);
      if (!r) {
        // Closed between accept and request: upstream logs and writes nothing.
        this.#opts.logger?.error({ port }, 'Received request for closed healthcheck');
        res.end();
        return;
      }
      res.writeHead(r.statusCode, {
        'Content-Type': 'application/json',
        'X-Content-Type-Options': 'nosniff',
        'X-Load-Balancing-Endpoint-Weight': String(r.localEndpoints),
      });
      // Upstream prints the body indented with tabs; same bytes.
      res.end(JSON.stringify(r.body, null, '\t'));
    });
  }
}
