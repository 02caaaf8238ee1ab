import { describe, expect, it } from 'vitest';
import { BoundedFrequencyRunner, type Timers } from '../../src/daemon/runner.ts';

/** Lets every pending promise continuation run. */
const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

class FakeTimers implements Timers {
  t = 0;
  #next = 1;
  readonly #timers = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }
  /** Moves time forward, firing due timers in order and letting async work settle after each. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    await flush();
    for (;;) {
      let due: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.#timers) if (e[1].at <= end && (due === undefined || e[1].at < due[1].at)) due = e;
      if (due === undefined) break;
      this.#timers.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
      await flush();
    }
    this.t = end;
    await flush();
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A runner whose fn records start times and, while `hold` is set, waits on it. */
function setup(opts: { min?: number; max?: number; retry?: number; burst?: number } = {}) {
  const timers = new FakeTimers();
  const starts: number[] = [];
  let concurrent = 0;
  let maxConcurrent = 0;
  const h: { hold?: Promise<void>; fail?: number } = {};
  const runner = new BoundedFrequencyRunner({
    name: 'test',
    minIntervalMs: opts.min ?? 1000,
    maxIntervalMs: opts.max ?? 30_000,
    ...(opts.retry !== undefined ? { retryIntervalMs: opts.retry } : {}),
    burstRuns: opts.burst ?? 2,
    timers,
    fn: async () => {
      starts.push(timers.now());
      concurrent++;
      maxConcurrent = Math.max(maxConcurrent, concurrent);
      try {
        if (h.hold) await h.hold;
        if (h.fail !== undefined && h.fail > 0) {
          h.fail--;
          throw new Error('sync failed');
        }
      } finally {
        concurrent--;
      }
    },
  });
  return { timers, runner, starts, h, maxConcurrent: () => maxConcurrent };
}

describe('BoundedFrequencyRunner', () => {
  it('runs on request, bursts twice, then at most once per minInterval', async () => {
    const { timers, runner, starts } = setup({ min: 1000 });
    runner.start();
    runner.run();
    await timers.advance(0);
    runner.run();
    await timers.advance(0);
    expect(starts).toEqual([0, 0]);
    runner.run(); // burst spent: waits for a token
    await timers.advance(999);
    expect(starts).toEqual([0, 0]);
    await timers.advance(1);
    expect(starts).toEqual([0, 0, 1000]);
    // Tokens refill one per minInterval, up to the burst.
    await timers.advance(5000);
    runner.run();
    runner.run();
    await timers.advance(0);
    expect(starts).toEqual([0, 0, 1000, 6000, 6000]);
    await runner.stop();
  });

  it('coalesces requests made while a run is in flight into one more run', async () => {
    const { timers, runner, starts, h, maxConcurrent } = setup({ min: 1000 });
    runner.start();
    const d = deferred();
    h.hold = d.promise;
    runner.run();
    await timers.advance(10);
    expect(runner.running).toBe(true);
    for (let i = 0; i < 5; i++) runner.run();
    await timers.advance(100);
    expect(starts).toEqual([0]); // serialised: nothing starts while the first run is in flight
    delete h.hold;
    d.resolve();
    await timers.advance(0);
    expect(starts).toEqual([0, 110]); // one follow-up run (the burst token), not five
    await timers.advance(10_000);
    expect(starts).toHaveLength(2);
    expect(maxConcurrent()).toBe(1);
    await runner.stop();
  });

  it('coalesces requests made before the next permitted run', async () => {
    const { timers, runner, starts } = setup({ min: 1000, burst: 1 });
    runner.start();
    runner.run();
    await timers.advance(0);
    for (let i = 0; i < 10; i++) {
      runner.run();
      await timers.advance(50);
    }
    await timers.advance(2000);
    expect(starts).toEqual([0, 1000]);
    await runner.stop();
  });

  it('runs at least once per maxInterval after the last run', async () => {
    const { timers, runner, starts } = setup({ min: 1000, max: 30_000 });
    runner.start();
    await timers.advance(29_999);
    expect(starts).toEqual([]);
    await timers.advance(1);
    expect(starts).toEqual([30_000]);
    await timers.advance(10_000);
    runner.run();
    await timers.advance(0);
    expect(starts).toEqual([30_000, 40_000]);
    await timers.advance(29_999); // the periodic deadline moved: 30s after the last run
    expect(starts).toEqual([30_000, 40_000]);
    await timers.advance(1);
    expect(starts).toEqual([30_000, 40_000, 70_000]);
    await runner.stop();
  });

  it('retries a failed run after retryInterval, then returns to normal', async () => {
    const { timers, runner, starts, h } = setup({ min: 1000, max: 60_000, retry: 5000 });
    runner.start();
    h.fail = 2;
    runner.run();
    await timers.advance(0);
    expect(starts).toEqual([0]);
    await timers.advance(4999);
    expect(starts).toEqual([0]);
    await timers.advance(1);
    expect(starts).toEqual([0, 5000]);
    await timers.advance(5000);
    expect(starts).toEqual([0, 5000, 10_000]); // third run succeeds
    await timers.advance(59_999);
    expect(starts).toHaveLength(3);
    await timers.advance(1);
    expect(starts).toEqual([0, 5000, 10_000, 70_000]);
    await runner.stop();
  });

  it('reports failures to onError and defaults retryInterval to minInterval', async () => {
    const timers = new FakeTimers();
    const errors: unknown[] = [];
    let n = 0;
    const runner = new BoundedFrequencyRunner({
      name: 'x',
      minIntervalMs: 2000,
      maxIntervalMs: 60_000,
      timers,
      onError: (e) => errors.push(e),
      fn: () => (n++ === 0 ? Promise.reject(new Error('boom')) : Promise.resolve()),
    });
    runner.start();
    runner.run();
    await timers.advance(1999);
    expect(n).toBe(1);
    expect(errors).toHaveLength(1);
    await timers.advance(1);
    expect(n).toBe(2);
    await runner.stop();
  });

  it('honours a request made before start once started', async () => {
    const { timers, runner, starts } = setup();
    runner.run();
    await timers.advance(100);
    expect(starts).toEqual([]);
    runner.start();
    await timers.advance(0);
    expect(starts).toEqual([100]);
    await runner.stop();
  });

  it('stop waits for the run in flight and then nothing more runs', async () => {
    const { timers, runner, starts, h } = setup({ min: 0, max: 1000 });
    const loopDone = runner.loop();
    const d = deferred();
    h.hold = d.promise;
    runner.run();
    await timers.advance(0);
    expect(runner.running).toBe(true);
    let stopped = false;
    const stopping = runner.stop().then(() => (stopped = true));
    runner.run();
    await timers.advance(100);
    expect(stopped).toBe(false);
    d.resolve();
    await stopping;
    await loopDone;
    expect(runner.running).toBe(false);
    await timers.advance(10_000);
    runner.run();
    await timers.advance(0);
    expect(starts).toEqual([0]);
  });

  it('gives the token back when a run did nothing (caches still filling): the first real run is not rate limited', async () => {
    const timers = new FakeTimers();
    const starts: { at: number; real: boolean }[] = [];
    let ready = false;
    const runner = new BoundedFrequencyRunner({
      name: 'test',
      minIntervalMs: 1000,
      maxIntervalMs: 30_000,
      timers,
      fn: async () => {
        starts.push({ at: timers.now(), real: ready });
        return ready ? undefined : false;
      },
    });
    runner.start();
    // As the daemon sees it at start: one request per cache that lists, all before they are all synced.
    for (let i = 0; i < 4; i++) {
      runner.run();
      await timers.advance(5);
    }
    ready = true;
    runner.run();
    await timers.advance(0);
    expect(starts.filter((s) => !s.real).length).toBe(4);
    expect(starts.at(-1)).toEqual({ at: 20, real: true });
    // Real runs still spend tokens: the burst of 2 (the first real run included), then one per minInterval.
    runner.run();
    await timers.advance(0);
    runner.run();
    await timers.advance(2000);
    expect(starts.filter((s) => s.real).map((s) => s.at)).toEqual([20, 20, 1020]);
    await runner.stop();
  });

  it('a refund never raises the bucket above the burst', async () => {
    const timers = new FakeTimers();
    const real: number[] = [];
    let noop = true;
    const runner = new BoundedFrequencyRunner({
      name: 'test',
      minIntervalMs: 1000,
      maxIntervalMs: 30_000,
      timers,
      fn: async () => {
        if (noop) return false;
        real.push(timers.now());
        return true;
      },
    });
    runner.start();
    for (let i = 0; i < 5; i++) {
      runner.run();
      await timers.advance(0);
    }
    noop = false;
    for (let i = 0; i < 3; i++) {
      runner.run();
      await timers.advance(0);
    }
    await timers.advance(2000);
    // Five refunds on a full bucket still leave a burst of 2, then one per minInterval.
    expect(real).toEqual([0, 0, 1000]);
    await runner.stop();
  });

  it('rejects maxInterval < minInterval', () => {
    expect(
      () => new BoundedFrequencyRunner({ name: 'bad', fn: async () => {}, minIntervalMs: 10, maxIntervalMs: 5 }),
    ).toThrow(/maxInterval/);
  });
});
