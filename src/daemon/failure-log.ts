/**
 * @module daemon/failure-log
 * Logs a repeating failure once, not on every retry: while syncs keep failing, each distinct error
 * message is logged once at error level (the first time it is seen in this run of failures) and
 * every repeat only at debug; the first success after failures logs one line saying how many
 * attempts failed and for how long. A kernel tool that stays broken for an hour writes one error
 * line, not thousands (upstream kube-proxy logs each failed restore; at kproxy's 1 s retry that is a
 * log storm).
 */
import type { Logger } from '../util/log.ts';

export interface FailureLogOptions {
  readonly log: Logger;
  /** What failed, as the first words of each line (`sync`). */
  readonly what: string;
  /** Epoch ms; injectable for tests. */
  readonly now?: () => number;
  /** At most this many distinct messages are remembered per run of failures. Default 32. */
  readonly maxDistinct?: number;
}

export class FailureLog {
  readonly #log: Logger;
  readonly #what: string;
  readonly #now: () => number;
  readonly #maxDistinct: number;
  readonly #seen = new Set<string>();
  #failures = 0;
  #since = 0;

  constructor(o: FailureLogOptions) {
    this.#log = o.log;
    this.#what = o.what;
    this.#now = o.now ?? Date.now;
    this.#maxDistinct = o.maxDistinct ?? 32;
  }

  /** Consecutive failures so far (0 after a success). */
  get failures(): number {
    return this.#failures;
  }

  failed(err: unknown, detail: Readonly<Record<string, unknown>> = {}): void {
    if (this.#failures === 0) this.#since = this.#now();
    this.#failures++;
    const message = err instanceof Error ? err.message : String(err);
    if (this.#seen.has(message) || this.#seen.size >= this.#maxDistinct) {
      this.#log.debug({ err: message, failures: this.#failures, ...detail }, `${this.#what} failed again`);
      return;
    }
    this.#seen.add(message);
    this.#log.error(
      { err: message, failures: this.#failures, ...detail },
      `${this.#what} failed; the kernel keeps the previous rules, retrying (repeats of this error are logged at debug level)`,
    );
  }

  succeeded(): void {
    if (this.#failures === 0) return;
    this.#log.info(
      { failures: this.#failures, failingForMs: this.#now() - this.#since },
      `${this.#what} recovered after ${this.#failures} failed attempt(s)`,
    );
    this.#failures = 0;
    this.#seen.clear();
  }
}
