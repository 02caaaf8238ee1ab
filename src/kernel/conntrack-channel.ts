/**
 * @module kernel/conntrack-channel
 * A persistent channel to `conntrack -D`: a few long-lived `sh` helpers (started once, in the
 * node's network namespace) that each read one deletion per line on stdin and run it at once.
 * Since ADR 0010 this is the fallback: the daemon deletes stale entries by exact tuple through
 * ctnetlink (`ctnetlink-client.ts`) and starts these helpers only when libmnl
 * cannot be loaded (or the ctnetlink channel gave up).
 *
 * Why: a stale UDP entry keeps steering a client's datagrams to the old endpoint until it is
 * deleted, so the deletion must follow the commit that made it stale as closely as possible.
 * Starting `conntrack` from Node costs a fork of a large process plus, in a namespace, `ip netns
 * exec` (setns, a private mount of /sys): 5–20 ms before conntrack even runs, more on a busy
 * machine. conntrack-tools has no streaming mode for deletions (`conntrack -R -` reads the whole
 * file first, and not from a socket), so the helpers keep the expensive part (the namespace, the
 * shell) warm and pay only a fork+exec of the small `conntrack` binary per deletion (measured:
 * ~2 ms), plus the kernel's walk of the whole conntrack table that every filtered `-D` costs.
 *
 * Each helper runs deletions one after another in the foreground, so the shell reaps them (no
 * orphans: in a container kproxy may be PID 1, which reaps nothing it did not start); several
 * helpers give parallelism. A request line is `ID ARG...`; arguments come from
 * `deletionArgs` (validated addresses, ports and fixed flags: no spaces, quotes or newlines), the
 * shell splits them on spaces with globbing off and never evaluates them. The answer line is
 * `ID EXITCODE OUTPUT` (conntrack's output with newlines folded into spaces).
 *
 * A helper that dies is restarted on the next request; the requests it held are re-run through
 * the ordinary exec. Closing stdin ends a helper (and kproxy's death closes it too).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import type { Exec, ExecResult } from './exec.ts';

/** The helper: one deletion per input line, answered by one line; exits at end of input. */
const HELPER_SCRIPT = `set -f
while IFS= read -r line; do
  id=\${line%% *}; args=\${line#* }
  out=$(conntrack $args 2>&1 </dev/null); rc=$?
  set -- $out
  printf "%s %s %s\\n" "$id" "$rc" "$*"
done`;

/** Only what `deletionArgs` produces: flags, family and protocol names, addresses, ports. */
const SAFE_ARG = /^[-A-Za-z0-9.:]+$/;

export interface ConntrackChannelOptions {
  /** Command prefix that enters the node's network namespace, e.g. `['ip', 'netns', 'exec', NS]`; default none. */
  readonly prefix?: readonly string[];
  /** Helpers (deletions run in parallel up to this many). Default 4. */
  readonly helpers?: number;
  /** Runs a request the channel cannot take (helper gone, unexpected arguments). */
  readonly fallback: Exec;
  /** A request not answered within this long is re-run through `fallback`. Default 10 s. */
  readonly timeoutMs?: number;
}

interface Pending {
  readonly args: readonly string[];
  readonly resolve: (r: ExecResult) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

class Helper {
  readonly proc: ChildProcessWithoutNullStreams;
  readonly pending = new Map<number, Pending>();
  alive = true;
  #buffer = '';

  constructor(prefix: readonly string[], onAnswer: (id: number, r: ExecResult) => void, onExit: () => void) {
    const argv = [...prefix, 'sh', '-c', HELPER_SCRIPT];
    this.proc = spawn(argv[0] as string, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stdout.setEncoding('utf8');
    this.proc.stdout.on('data', (chunk: string) => {
      this.#buffer += chunk;
      let nl: number;
      while ((nl = this.#buffer.indexOf('\n')) >= 0) {
        const line = this.#buffer.slice(0, nl);
        this.#buffer = this.#buffer.slice(nl + 1);
        const m = /^(\d+) (\d+) ?(.*)$/.exec(line);
        if (m) onAnswer(Number(m[1]), { exitCode: Number(m[2]), stdout: '', stderr: m[3] ?? '' });
      }
    });
    this.proc.stderr.resume();
    this.proc.stdin.on('error', () => {});
    const gone = (): void => {
      if (!this.alive) return;
      this.alive = false;
      onExit();
    };
    this.proc.on('exit', gone);
    this.proc.on('error', gone);
    // Idle helpers must not keep an otherwise finished process alive; a request in flight does (hold).
    this.proc.unref();
    for (const s of [this.proc.stdin, this.proc.stdout, this.proc.stderr]) (s as { unref?: () => void }).unref?.();
  }

  /** Keeps the event loop alive while requests are outstanding. */
  hold(on: boolean): void {
    const s = this.proc.stdout as { ref?: () => void; unref?: () => void };
    if (on) s.ref?.();
    else s.unref?.();
  }
}

export class ConntrackChannel {
  readonly #prefix: readonly string[];
  readonly #size: number;
  readonly #fallback: Exec;
  readonly #timeoutMs: number;
  readonly #helpers: (Helper | undefined)[];
  #next = 0;
  #nextId = 1;
  #closed = false;
  /** Helpers that died soon after starting; past a few, the channel gives up and uses the fallback. */
  #earlyDeaths = 0;

  constructor(options: ConntrackChannelOptions) {
    this.#prefix = options.prefix ?? [];
    this.#size = Math.max(1, options.helpers ?? 4);
    this.#fallback = options.fallback;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#helpers = Array.from({ length: this.#size }, () => undefined);
  }

  /** Starts the helpers now, so the first deletion does not pay for it. */
  warm(): this {
    for (let i = 0; i < this.#size; i++) this.#helper(i);
    return this;
  }

  /** An Exec that sends `conntrack -D ...` through the channel and everything else to the fallback. */
  readonly exec: Exec = (file, args, stdin) => {
    if (file !== 'conntrack' || stdin !== undefined || args[0] !== '-D' || !args.every((a) => SAFE_ARG.test(a))) {
      return this.#fallback(file, args, stdin);
    }
    return this.run(args);
  };

  /** Runs `conntrack ARGS` in a helper; resolves like an Exec (stdout empty, conntrack's output in stderr). */
  run(args: readonly string[]): Promise<ExecResult> {
    if (this.#closed || this.#earlyDeaths >= 3) return this.#fallback('conntrack', args);
    const index = this.#next;
    this.#next = (this.#next + 1) % this.#size;
    const helper = this.#helper(index);
    if (!helper) return this.#fallback('conntrack', args);
    const id = this.#nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        if (!helper.pending.delete(id)) return;
        if (helper.pending.size === 0) helper.hold(false);
        void this.#fallback('conntrack', args).then(resolve);
      }, this.#timeoutMs);
      timer.unref();
      helper.pending.set(id, { args, resolve, timer });
      if (helper.pending.size === 1) helper.hold(true);
      helper.proc.stdin.write(`${id} ${args.join(' ')}\n`);
    });
  }

  /** Ends the helpers (they finish the deletion in hand); later requests go to the fallback. */
  close(): void {
    this.#closed = true;
    for (const h of this.#helpers) h?.proc.stdin.end();
  }

  #helper(index: number): Helper | undefined {
    const existing = this.#helpers[index];
    if (existing?.alive) return existing;
    if (this.#closed) return undefined;
    const started = performance.now();
    let helper: Helper;
    try {
      helper = new Helper(
        this.#prefix,
        (id, r) => {
          const p = helper.pending.get(id);
          if (!p) return;
          helper.pending.delete(id);
          if (helper.pending.size === 0) helper.hold(false);
          clearTimeout(p.timer);
          p.resolve(r);
        },
        () => {
          if (performance.now() - started < 1000) this.#earlyDeaths++;
          // Re-run what the helper held: a deletion is idempotent (0 entries deleted is success).
          for (const p of helper.pending.values()) {
            clearTimeout(p.timer);
            void this.#fallback('conntrack', p.args).then(p.resolve);
          }
          helper.pending.clear();
        },
      );
    } catch {
      return undefined;
    }
    this.#helpers[index] = helper;
    return helper;
  }
}
