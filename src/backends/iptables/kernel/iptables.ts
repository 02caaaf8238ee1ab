/**
 * @module backends/iptables/kernel/iptables
 * The one place that runs iptables tools. Every change goes through `iptables-restore --noflush`
 * (one process per family: the kernel takes the whole input or none of it), every read through
 * `iptables-save`. The flavor (iptables-nft or iptables-legacy) is fixed per process and never
 * mixed; the tools' error output is classified here and nowhere else.
 */
import type { Family } from '../../../model/cluster.ts';
import { EXIT_TIMED_OUT, type Exec, type ExecResult } from '../../../kernel/exec.ts';
import { KernelToolError, type KernelToolErrorCode } from '../../../kernel/errors.ts';

/** The iptables variant in use: `nft` (nf_tables underneath) or `legacy` (x_tables). */
export type Flavor = 'nft' | 'legacy';

export class IptablesError extends KernelToolError {
  constructor(code: KernelToolErrorCode, message: string, stderr: string) {
    super(code, message, stderr);
    this.name = 'IptablesError';
  }
}

/** Wait up to 5 s for the xtables lock (legacy), polling every 100 ms, as upstream does. */
const LOCK_WAIT = ['-w', '5', '-W', '100000'];

export class Iptables {
  readonly flavor: Flavor;
  private readonly exec: Exec;

  constructor(exec: Exec, flavor: Flavor) {
    this.exec = exec;
    this.flavor = flavor;
  }

  /** The tool for a family: `iptables-nft-restore`, `ip6tables-legacy-save`, … */
  tool(family: Family, what: 'restore' | 'save' | ''): string {
    const base = family === 'ipv4' ? 'iptables' : 'ip6tables';
    return `${base}-${this.flavor}${what === '' ? '' : `-${what}`}`;
  }

  /** Applies restore input atomically, leaving every chain it does not name alone. */
  async restore(family: Family, input: string, options: { test?: boolean } = {}): Promise<void> {
    if (input === '') return;
    const args = ['--noflush', ...LOCK_WAIT, ...(options.test ? ['--test'] : [])];
    const r = await this.exec(this.tool(family, 'restore'), args, input);
    if (r.exitCode !== 0) throw classify(this.tool(family, 'restore'), r, input);
  }

  /** `iptables-save` of one table, or of every table when none is given. */
  async save(family: Family, table?: string): Promise<string> {
    const r = await this.exec(this.tool(family, 'save'), table ? ['-t', table] : []);
    if (r.exitCode !== 0) throw classify(this.tool(family, 'save'), r);
    return r.stdout;
  }

  /** True when the chain exists (`iptables -t TABLE -S CHAIN` succeeds). */
  async chainExists(family: Family, table: string, chain: string): Promise<boolean> {
    const r = await this.exec(this.tool(family, ''), [...LOCK_WAIT.slice(0, 2), '-t', table, '-S', chain]);
    if (r.exitCode === 0) return true;
    const err = classify(this.tool(family, ''), r);
    if (err.code === 'NotFound') return false;
    throw err;
  }
}

function classify(tool: string, r: ExecResult, input?: string): IptablesError {
  const stderr = r.stderr.trim();
  if (r.exitCode === 127 || /ENOENT|command not found/.test(stderr)) {
    return new IptablesError('Unavailable', `${tool} is not available: ${stderr}`, stderr);
  }
  if (r.exitCode === EXIT_TIMED_OUT) return new IptablesError('Unavailable', stderr, stderr);
  if (/Permission denied|Operation not permitted|must be root/.test(stderr)) {
    return new IptablesError('Unavailable', `${tool} needs CAP_NET_ADMIN (run as root): ${firstLine(stderr)}`, stderr);
  }
  // iptables-nft reports a missing chain as "incompatible, use 'nft' tool"; legacy as "No chain/target/match".
  if (!input && /No chain\/target\/match by that name|does not exist|is incompatible, use 'nft' tool/.test(stderr)) {
    return new IptablesError('NotFound', `${tool}: ${firstLine(stderr)}`, stderr);
  }
  return new IptablesError('Rejected', `${tool} rejected the input: ${summarise(stderr, input)}`, stderr);
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

/** iptables-restore names the failing input line (`line N failed`): quote it so the log shows what failed. */
function summarise(stderr: string, input: string | undefined): string {
  const head = stderr.split('\n').slice(0, 4).join(' | ');
  if (!input) return head;
  const m = /line:? (\d+) failed|Error occurred at line: (\d+)/.exec(stderr);
  const n = m ? Number(m[1] ?? m[2]) : undefined;
  const failing = n !== undefined ? input.split('\n')[n - 1] : undefined;
  return failing ? `${head} (line ${n}: ${failing.slice(0, 300)})` : head;
}
