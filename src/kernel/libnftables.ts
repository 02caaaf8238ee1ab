/**
 * @module kernel/libnftables
 * `nft` runs served in-process through the system's libnftables (`libnftables.so.1`, shipped with
 * Debian's nftables), called through koffi. A commit then costs what the kernel charges: one plain
 * map element at 10,000 Services took 2 ms this way against 30 ms for an `nft` process, which starts
 * and rebuilds its cache of the table every time (docs/adr/0010-libnftables.md).
 *
 * Loaded only by the spawner's child (spawner-child.ts), which runs in the node's network
 * namespace: a netlink socket talks to the namespace of the process that opened it. The `nft`
 * argument vectors kproxy uses are served here (`parseNftArgv`); anything else (`-i`, `monitor`,
 * options this module does not know) goes to the real `nft`, as do all runs when the library
 * cannot be loaded.
 *
 * Commits share one context: creating one costs ~25 ms (what made the `nft` process slow), and its
 * cache of declarations is refreshed by libnftables only when the kernel's generation moved.
 * Listings get a fresh context each. A context that handled a large input or output is freed
 * and the C heap trimmed: its cache and buffers hold every element it saw (at 10k × 10: the cold
 * transaction left the child at 335 MiB, a complete listing at 680 MiB; trimmed: see below).
 * Calls run on koffi's worker thread, one at a time, so the child keeps answering meanwhile.
 */
import { createRequire } from 'node:module';
import type { ExecResult } from './exec.ts';

/** Input or output past this many characters: the context is freed and the C heap trimmed after. */
const LARGE = 256 * 1024;

/** libnftables' output flags (nftables/libnftables.h). */
const OUTPUT_JSON = 1 << 4;
const OUTPUT_TERSE = 1 << 11;

export interface NftRun {
  /** Commands as nft reads them from a file or from its arguments. */
  readonly commands: string;
  readonly json: boolean;
  readonly terse: boolean;
  /** `--check`: validated by the kernel, not committed. */
  readonly check: boolean;
  /** A listing (gets its own context), not a change. */
  readonly listing: boolean;
}

/** Only words kproxy itself puts in an nft argument vector: families, names, verbs. */
const PLAIN_WORD = /^[A-Za-z0-9_.:-]+$/;

/**
 * The run an `nft` argument vector asks for, when it is one this module serves: options among
 * `-j`, `-t`, `-c` (long forms too), then `-f -` with the commands on stdin, or a command as words.
 */
export function parseNftArgv(args: readonly string[], stdin: string | undefined): NftRun | undefined {
  let json = false;
  let terse = false;
  let check = false;
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i];
    if (a === '-j' || a === '--json') json = true;
    else if (a === '-t' || a === '--terse') terse = true;
    else if (a === '-c' || a === '--check') check = true;
    else break;
  }
  const rest = args.slice(i);
  if (rest.length === 2 && rest[0] === '-f' && rest[1] === '-') {
    if (stdin === undefined) return undefined;
    return { commands: stdin, json, terse, check, listing: false };
  }
  if (rest.length === 0 || rest[0]?.startsWith('-') || !rest.every((w) => PLAIN_WORD.test(w))) return undefined;
  if (rest[0] !== 'list' && rest[0] !== 'delete') return undefined;
  return { commands: rest.join(' '), json, terse, check, listing: rest[0] === 'list' };
}

export interface NftLibrary {
  run(r: NftRun): Promise<ExecResult>;
}

type Ctx = unknown;
interface Bindings {
  ctxNew(flags: number): Ctx;
  ctxFree(ctx: Ctx): void;
  setOutputFlags(ctx: Ctx, flags: number): void;
  setDryRun(ctx: Ctx, on: boolean): void;
  bufferOutput(ctx: Ctx): number;
  bufferError(ctx: Ctx): number;
  outputBuffer(ctx: Ctx): string;
  errorBuffer(ctx: Ctx): string;
  runAsync(ctx: Ctx, commands: string): Promise<number>;
  /** glibc's malloc_trim(0): gives freed heap back to the system. */
  trimHeap(): void;
}

/** The library, or why it cannot be used (then every run goes to the `nft` tool). */
export function loadNftLibrary(): NftLibrary | string {
  let b: Bindings;
  try {
    b = bind();
  } catch (e) {
    return `libnftables could not be loaded: ${e instanceof Error ? e.message : String(e)}`;
  }
  const open = (): Ctx => {
    const ctx = b.ctxNew(0);
    if (!ctx) throw new Error('nft_ctx_new failed');
    b.bufferOutput(ctx);
    b.bufferError(ctx);
    return ctx;
  };
  let commitCtx: Ctx | undefined;
  let queue: Promise<unknown> = Promise.resolve();
  const runOne = async (r: NftRun): Promise<ExecResult> => {
    const ctx = r.listing ? open() : (commitCtx ??= open());
    let large = r.commands.length > LARGE;
    try {
      b.setOutputFlags(ctx, (r.json ? OUTPUT_JSON : 0) | (r.terse ? OUTPUT_TERSE : 0));
      b.setDryRun(ctx, r.check);
      const rc = await b.runAsync(ctx, r.commands);
      const stdout = b.outputBuffer(ctx) ?? '';
      large ||= stdout.length > LARGE;
      return { exitCode: rc === 0 ? 0 : 1, stdout, stderr: b.errorBuffer(ctx) ?? '' };
    } finally {
      if (r.listing || large) {
        b.ctxFree(ctx);
        if (ctx === commitCtx) commitCtx = undefined;
      }
      if (large) b.trimHeap();
    }
  };
  return {
    run(r) {
      const result = queue.then(() => runOne(r));
      queue = result.catch(() => undefined);
      return result.catch((e: unknown) => ({
        exitCode: 1,
        stdout: '',
        stderr: `libnftables: ${e instanceof Error ? e.message : String(e)}`,
      }));
    },
  };
}

function bind(): Bindings {
  // koffi is CommonJS with a native addon: loaded on demand, only by the process that uses it.
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  const lib = koffi.load('libnftables.so.1');
  const run = lib.func('int nft_run_cmd_from_buffer(void *ctx, const char *buf)');
  const mallocTrim = koffi.load('libc.so.6').func('int malloc_trim(size_t pad)');
  return {
    ctxNew: lib.func('void *nft_ctx_new(uint32_t flags)') as Bindings['ctxNew'],
    ctxFree: lib.func('void nft_ctx_free(void *ctx)') as Bindings['ctxFree'],
    setOutputFlags: lib.func('void nft_ctx_output_set_flags(void *ctx, uint32_t flags)') as Bindings['setOutputFlags'],
    setDryRun: lib.func('void nft_ctx_set_dry_run(void *ctx, bool dry)') as Bindings['setDryRun'],
    bufferOutput: lib.func('int nft_ctx_buffer_output(void *ctx)') as Bindings['bufferOutput'],
    bufferError: lib.func('int nft_ctx_buffer_error(void *ctx)') as Bindings['bufferError'],
    outputBuffer: lib.func('const char *nft_ctx_get_output_buffer(void *ctx)') as Bindings['outputBuffer'],
    errorBuffer: lib.func('const char *nft_ctx_get_error_buffer(void *ctx)') as Bindings['errorBuffer'],
    runAsync: (ctx, commands) =>
      new Promise((resolve, reject) => {
        run.async(ctx, commands, (err: unknown, rc: number) => (err ? reject(err) : resolve(rc)));
      }),
    trimHeap: () => void mallocTrim(0),
  };
}
