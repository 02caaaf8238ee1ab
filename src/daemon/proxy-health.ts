/**
 * @module daemon/proxy-health
 * The proxy's health state, as upstream's ProxyHealthServer keeps it (pkg/proxy/healthcheck/
 * proxy_health.go), without the HTTP part (`healthz-server.ts`). Per IP family: when the oldest
 * not-yet-applied change was queued, and when rules were last applied. A family is unhealthy when
 * a change has been queued for at least healthTimeout (2 × syncPeriod) without an update since.
 * Node eligibility (the Node exists, is not being deleted, has no ToBeDeletedByClusterAutoscaler
 * taint) is kept beside it and only `/healthz` uses it.
 */
import type { Family } from '../model/cluster.ts';
import { ipFamilyLabel, type IpFamilyLabel } from './metrics.ts';

/** Taint the Cluster Autoscaler puts on a Node it is about to delete. */

/** Upstream: `healthzTimeout = 2 * syncPeriod`. */
export function healthTimeoutForSyncPeriod(syncPeriodMs: number): number {
  return 2 * syncPeriodMs;
}

export interface ProxierHealth {
  /** Epoch ms of the family's last successful update. */
  readonly lastUpdated: number;
  readonly healthy: boolean;
}

export interface ProxyHealthSnapshot {
  /** Epoch ms of the most recent update of any family; undefined before the first. */
  readonly lastUpdated: number | undefined;
  readonly currentTime: number;
  /** All families healthy (node eligibility not included). */
  readonly healthy: boolean;
  /** Only families that have been updated at least once appear, as upstream. */
  readonly status: Partial<Record<IpFamilyLabel, ProxierHealth>>;
}

export interface ProxyHealthOptions {
  readonly healthTimeoutMs: number;
  /** Wall-clock epoch ms (shown in the JSON bodies). Default Date.now. */
  readonly now?: () => number;
  /** Eligibility until setNodeEligible is first called. Default true (healthy while starting up). */
  readonly nodeEligible?: boolean;
}

export class ProxyHealth {
  readonly healthTimeoutMs: number;
  readonly now: () => number;
  readonly #lastUpdated = new Map<Family, number>();
  readonly #oldestPendingQueued = new Map<Family, number>();
  #nodeEligible: boolean;

  constructor(opts: ProxyHealthOptions) {
    this.healthTimeoutMs = opts.healthTimeoutMs;
    this.now = opts.now ?? Date.now;
    this.#nodeEligible = opts.nodeEligible ?? true;
  }

  /** A change for `family` was received and not yet applied (keeps the oldest such time). */
  queuedUpdate(family: Family): void {
    if (!this.#oldestPendingQueued.has(family)) this.#oldestPendingQueued.set(family, this.now());
  }

  /** `family`'s rules now reflect everything queued so far. */
  updated(family: Family): void {
    this.#oldestPendingQueued.delete(family);
    this.#lastUpdated.set(family, this.now());
  }

  setNodeEligible(eligible: boolean): void {
    this.#nodeEligible = eligible;
  }

  get nodeEligible(): boolean {
    return this.#nodeEligible;
  }

  health(): ProxyHealthSnapshot {
    const currentTime = this.now();
    const status: Partial<Record<IpFamilyLabel, ProxierHealth>> = {};
    let healthy = true;
    let lastUpdated: number | undefined;
    // As upstream: only families that have updated once are judged (a proxier is healthy while
    // starting up); a queued change at least healthTimeout old makes its family unhealthy.
    for (const [family, updatedAt] of this.#lastUpdated) {
      if (lastUpdated === undefined || updatedAt > lastUpdated) lastUpdated = updatedAt;
      const queuedAt = this.#oldestPendingQueued.get(family);
      const familyHealthy = queuedAt === undefined || currentTime - queuedAt < this.healthTimeoutMs;
      if (!familyHealthy) healthy = false;
      status[ipFamilyLabel(family)] = { lastUpdated: updatedAt, healthy: familyHealthy };
    }
    return { lastUpdated, currentTime, healthy, status };
  }

  /** Proxy health alone, ignoring the Node (what per-Service health checks report). */
  isHealthy(): boolean {
    return this.health().healthy;
  }
}
