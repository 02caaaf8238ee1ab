/**
 * @module backends/nftables/kernel/nft
 * The one place that runs `nft`. A transaction goes to the kernel in a single `nft -f -` call, so
 * the kernel commits all of it or none of it; `--check` runs the same transaction through the
 * kernel's validation without committing. nft's error output is read here and nowhere else.
 */
import { EXIT_TIMED_OUT, execProgram, type Exec, type ExecResult } from '../../../kernel/exec.ts';
import { KernelToolError, type KernelToolErrorCode } from '../../../kernel/errors.ts';
import type { Transaction } from '../render/ruleset.ts';
import { transactionText } from '../render/ruleset.ts';
import type { NftFamily } from '../render/syntax.ts';

/** nft's failures; the code is classified here, from nft's output, and nowhere else. */
export class NftError extends KernelToolError {
  constructor(code: KernelToolErrorCode, message: string, stderr: string) {
    super(code, message, stderr);
    this.name = 'NftError';
  }
}

export class Nft {
  private readonly exec: Exec;
  constructor(exec: Exec = execProgram) {
    this.exec = exec;
  }

  /** Commits the transaction atomically; throws NftError (with nft's message and the failing lines). */
  async apply(tx: Transaction, options: { check?: boolean } = {}): Promise<void> {
    if (tx.length === 0) return;
    const text = transactionText(tx);
    const args = options.check ? ['--check', '-f', '-'] : ['-f', '-'];
    const r = await this.exec('nft', args, text);
    if (r.exitCode === 0) return;
    throw classify(r, text);
  }

  /** `nft -j list table`, or undefined when the table does not exist. */
  async listTable(family: NftFamily, table: string): Promise<unknown> {
    const r = await this.exec('nft', ['-j', 'list', 'table', family, table]);
    if (r.exitCode === 0) return JSON.parse(r.stdout) as unknown;
    const err = classify(r);
    if (err.code === 'NotFound') return undefined;
    throw err;
  }

  /**
   * `nft -j list chains|sets|maps FAMILY`: every table's objects of that kind, without rules;
   * `terse` (`-t`) also without set elements (listing 100k endpoint elements takes seconds).
   */
  async listObjects(kind: 'chains' | 'sets' | 'maps', family: NftFamily, terse = false): Promise<unknown> {
    const r = await this.exec('nft', ['-j', ...(terse ? ['-t'] : []), 'list', kind, family]);
    if (r.exitCode === 0) return JSON.parse(r.stdout) as unknown;
    throw classify(r);
  }

  async deleteTable(family: NftFamily, table: string): Promise<boolean> {
    const r = await this.exec('nft', ['delete', 'table', family, table]);
    if (r.exitCode === 0) return true;
    const err = classify(r);
    if (err.code === 'NotFound') return false;
    throw err;
  }
}

function classify(r: ExecResult, input?: string): NftError {
  const stderr = r.stderr.trim();
  if (r.exitCode === 127 || /ENOENT|not found: nft|command not found/.test(stderr)) {
    return new NftError('Unavailable', `nft is not available: ${stderr}`, stderr);
  }
  if (r.exitCode === EXIT_TIMED_OUT) return new NftError('Unavailable', stderr, stderr);
  if (/No such file or directory|does not exist/.test(stderr) && !input) {
    return new NftError('NotFound', stderr, stderr);
  }
  if (/Operation not permitted/.test(stderr)) {
    return new NftError('Unavailable', `nft needs CAP_NET_ADMIN (run as root): ${firstLine(stderr)}`, stderr);
  }
  return new NftError('Rejected', `nft rejected the transaction: ${summarise(stderr, input)}`, stderr);
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

/** nft names failing input lines as `/dev/stdin:LINE:COL`: quote them so the log shows what failed. */
function summarise(stderr: string, input: string | undefined): string {
  const lines = stderr.split('\n').filter((l) => l.startsWith('/dev/stdin:') || /Error/.test(l));
  const head = lines.slice(0, 6).join(' | ');
  if (!input) return head || stderr;
  const m = /\/dev\/stdin:(\d+):/.exec(stderr);
  const failing = m ? input.split('\n')[Number(m[1]) - 1] : undefined;
  return failing ? `${head} (line: ${failing.slice(0, 300)})` : head || stderr;
}
