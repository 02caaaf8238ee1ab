/**
 * @module daemon/runner
 * A bounded-frequency runner, like upstream's `BoundedFrequencyRunner` (pkg/util/async, the
 * burst-capable version kube-proxy used through 1.32): requests to run coalesce; runs never
 * overlap; at most `burstRuns` back-to-back, then at most one per `minInterval` (a token bucket
 * refilling one token per minInterval); at least one per `maxInterval` after the last run
 * finished; a run that throws is retried after `retryInterval` (unless something runs it sooner).
 * A run that reports it did nothing (fn resolves to `false`: the proxier while the caches are still
 * filling) gives its token back, so the first real sync is never rate limited by no-op runs.
 * Time and timers are injected so tests drive it with a fake clock.
 */
import type { Logger } from '../util/log.ts';

/** The clock and timer functions the runner uses; `now` must be monotonic. */
export interface Timers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimers: Timers = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export interface BoundedFrequencyRunnerOptions {
  readonly name: string;
  /**
   * The work; a rejection counts as a failure and schedules a retry. Resolving to `false` means the
   * run found nothing it could do yet (any other value: it did work): its token is refunded (it still counts as a run).
   */
  readonly fn: () => Promise<unknown>;
  /** Minimum spacing of runs once the burst is spent; 0 disables rate limiting. */
  readonly minIntervalMs: number;
  /** A run happens at most this long after the previous one finished, requested or not. */
  readonly maxIntervalMs: number;
  /** Runs allowed back-to-back before minInterval applies (upstream kube-proxy uses 2). Default 2. */
  readonly burstRuns?: number;
  /** Delay before retrying a failed run. Default: minIntervalMs. */
  readonly retryIntervalMs?: number;
  readonly timers?: Timers;
  readonly logger?: Logger;
  /** Called with whatever a failed run threw (after logging). */
  readonly onError?: (err: unknown) => void;
}

/** setTimeout's ceiling; longer waits are re-armed on firing. */
const MAX_TIMER_MS = 2_147_483_647;
const EPSILON = 1e-9;

export class BoundedFrequencyRunner {
  readonly name: string;
  readonly #fn: () => Promise<unknown>;
  readonly #minIntervalMs: number;
  readonly #maxIntervalMs: number;
  readonly #burstRuns: number;
  readonly #retryIntervalMs: number;
  readonly #timers: Timers;
  readonly #logger: Logger | undefined;
  readonly #onError: ((err: unknown) => void) | undefined;

  #started = false;
  #stopped = false;
  /** A run was requested (by run(), the periodic deadline or a retry) and has not started yet. */
  #pending = false;
  /** Set before fn is called, so a run() from inside a synchronous stretch of fn cannot start another. */
  #busy = false;
  #inFlight: Promise<void> | undefined;
  #tokens: number;
  #lastRefill = 0;
  /** The run in flight took a token (false when rate limiting is off). */
  #charged = false;
  /** When the maxInterval run is due (absolute, timers.now() scale). */
  #periodicAt = Infinity;
  /** When a retry is due; Infinity when none. */
  #retryAt = Infinity;
  #timer: unknown;
  #timerArmed = false;
  #runs = 0;
  readonly #done: Promise<void>;
  #resolveDone: () => void = () => {};

  constructor(opts: BoundedFrequencyRunnerOptions) {
    if (!(opts.minIntervalMs >= 0) || !(opts.maxIntervalMs >= opts.minIntervalMs)) {
      throw new Error(
        `${opts.name}: maxInterval (${opts.maxIntervalMs}ms) must be >= minInterval (${opts.minIntervalMs}ms) >= 0`,
      );
    }
    const burst = opts.burstRuns ?? 2;
    if (!Number.isInteger(burst) || burst < 1)
      throw new Error(`${opts.name}: burstRuns must be a positive integer, got ${burst}`);
    this.name = opts.name;
    this.#fn = opts.fn;
    this.#minIntervalMs = opts.minIntervalMs;
    this.#maxIntervalMs = opts.maxIntervalMs;
    this.#burstRuns = burst;
    this.#retryIntervalMs = opts.retryIntervalMs ?? opts.minIntervalMs;
    this.#timers = opts.timers ?? realTimers;
    this.#logger = opts.logger;
    this.#onError = opts.onError;
    this.#tokens = burst;
    this.#done = new Promise<void>((resolve) => (this.#resolveDone = resolve));
  }

  /** Runs completed so far (successful or not). */
  get runs(): number {
    return this.#runs;
  }

  /** True while fn is executing. */
  get running(): boolean {
    return this.#busy;
  }

  /**
   * Requests a run as soon as the rate limit allows. Requests made before the next run starts
   * coalesce into it; a request made during a run causes one more run after it. Before start()
   * the request is remembered and honoured on start; after stop() it is ignored.
   */
  run(): void {
    if (this.#stopped) return;
    this.#pending = true;
    this.#evaluate();
  }

  /** Ensures a run no later than `ms` from now (earliest request wins). */
  retryAfter(ms: number): void {
    if (this.#stopped) return;
    this.#retryAt = Math.min(this.#retryAt, this.#timers.now() + ms);
    this.#evaluate();
  }

  /** Starts the timers: the first periodic run is due maxInterval from now. Idempotent. */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    const now = this.#timers.now();
    this.#lastRefill = now;
    this.#periodicAt = now + this.#maxIntervalMs;
    this.#logger?.debug({ runner: this.name }, 'Loop running');
    this.#evaluate();
  }

  /** start(), then resolves once stop() has completed. */
  loop(): Promise<void> {
    this.start();
    return this.#done;
  }

  /** Stops scheduling; resolves when the run in flight (if any) has finished. Idempotent. */
  async stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      this.#pending = false;
      this.#disarm();
      this.#logger?.debug({ runner: this.name }, 'Loop stopping');
    }
    await this.#inFlight;
    this.#resolveDone();
  }

  /** Decides whether to run now, and otherwise when to look again. */
  #evaluate(): void {
    if (this.#stopped || !this.#started || this.#busy) return;
    const now = this.#timers.now();
    if (now >= this.#periodicAt || now >= this.#retryAt) this.#pending = true;
    let wakeAt = Math.min(this.#periodicAt, this.#retryAt);
    if (this.#pending) {
      if (this.#minIntervalMs === 0) return this.#startRun(false);
      this.#refill(now);
      if (this.#tokens >= 1 - EPSILON) {
        this.#tokens = Math.max(0, this.#tokens - 1);
        return this.#startRun(true);
      }
      const nextToken = now + Math.max(1, Math.ceil((1 - this.#tokens) * this.#minIntervalMs));
      this.#logger?.trace({ runner: this.name, inMs: nextToken - now }, 'rate limited, next possible run');
      wakeAt = Math.min(wakeAt, nextToken);
    }
    this.#arm(wakeAt - now);
  }

  #refill(now: number): void {
    this.#tokens = Math.min(this.#burstRuns, this.#tokens + (now - this.#lastRefill) / this.#minIntervalMs);
    this.#lastRefill = now;
  }

  #startRun(charged: boolean): void {
    this.#charged = charged;
    this.#pending = false;
    this.#retryAt = Infinity;
    this.#disarm();
    this.#busy = true;
    this.#inFlight = this.#execute();
  }

  async #execute(): Promise<void> {
    let failed = false;
    let didNothing = false;
    try {
      didNothing = (await this.#fn()) === false;
    } catch (err) {
      failed = true;
      this.#logger?.error({ runner: this.name, err, retryInMs: this.#retryIntervalMs }, 'run failed, will retry');
      try {
        this.#onError?.(err);
      } catch {
        // a faulty callback must not stop the loop
      }
    }
    const now = this.#timers.now();
    this.#runs++;
    if (didNothing && this.#charged) {
      // Nothing was done: give the token back (refill first, so the refund is capped at the burst).
      this.#refill(now);
      this.#tokens = Math.min(this.#burstRuns, this.#tokens + 1);
    }
    this.#charged = false;
    this.#periodicAt = now + this.#maxIntervalMs;
    if (failed) this.#retryAt = Math.min(this.#retryAt, now + this.#retryIntervalMs);
    this.#busy = false;
    this.#inFlight = undefined;
    this.#logger?.trace(
      { runner: this.name, periodicInMs: this.#maxIntervalMs, ...(didNothing ? { noop: true } : {}) },
      'ran',
    );
    this.#evaluate();
  }

  #arm(delayMs: number): void {
    this.#disarm();
    if (!Number.isFinite(delayMs)) return;
    this.#timerArmed = true;
    this.#timer = this.#timers.setTimeout(
      () => {
        this.#timerArmed = false;
        this.#evaluate();
      },
      Math.min(MAX_TIMER_MS, Math.max(0, delayMs)),
    );
  }

  #disarm(): void {
    if (this.#timerArmed) this.#timers.clearTimeout(this.#timer);
    this.#timerArmed = false;
  }
}
