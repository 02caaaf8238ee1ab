/**
 * @module backends/ipvs/kernel/ipvsadm
 * The one place that runs `ipvsadm` and reads its errors. A batch goes to the kernel in a single
 * `ipvsadm -R` (restore) call, which applies its lines one by one — and goes on after a line that
 * fails. IPVS has no transactions, so the caller orders the batch (plan.ts) and a batch with any
 * error is a failed sync.
 */
import type { Exec, ExecResult } from '../../../kernel/exec.ts';
import { KernelToolError, type KernelToolErrorCode } from '../../../kernel/errors.ts';
import type { IpvsScheduler } from '../../../model/ipvs-schedulers.ts';
import { checkScheduler, timeoutArgs } from '../render/syntax.ts';

export class IpvsadmError extends KernelToolError {
  constructor(code: KernelToolErrorCode, message: string, stderr: string) {
    super(code, message, stderr);
    this.name = 'IpvsadmError';
  }
}

/** A firewall mark no Service gets (marks are allocated from 1): probes a scheduler for a moment. */
const PROBE_MARK = 0xffffffff;

export interface IpvsTimeouts {
  readonly tcp: number;
  readonly tcpFin: number;
  readonly udp: number;
}

export class Ipvsadm {
  private readonly exec: Exec;
  constructor(exec: Exec) {
    this.exec = exec;
  }

  /** `ipvsadm -Sn`: every virtual server and real server, in restore syntax. */
  async save(): Promise<string> {
    return (await this.run(['-Sn'])).stdout;
  }

  /** `ipvsadm -Ln`: the same with each real server's active and inactive connections. */
  async list(): Promise<string> {
    return (await this.run(['-Ln'])).stdout;
  }

  /** Applies a batch with `ipvsadm -R`; throws naming the line that failed. */
  async restore(lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return;
    for (const l of lines) if (l.includes('\n')) throw new Error(`ipvsadm line with a newline: ${JSON.stringify(l)}`);
    const input = `${lines.join('\n')}\n`;
    const r = await this.exec('ipvsadm', ['-R'], input);
    // ipvsadm -R goes on after a failing line and exits 0 for some failures ("Service already
    // exists"): any error output is a failed batch (the next sync re-plans from the kernel).
    if (r.exitCode !== 0 || r.stderr.trim() !== '') throw classify(r, 'ipvsadm -R', lines);
  }

  async timeouts(): Promise<IpvsTimeouts | undefined> {
    const r = await this.exec('ipvsadm', ['-L', '--timeout']);
    const m = /(\d+)\s+(\d+)\s+(\d+)\s*$/.exec(r.stdout.trim());
    if (r.exitCode !== 0 || !m) return undefined;
    return { tcp: Number(m[1]), tcpFin: Number(m[2]), udp: Number(m[3]) };
  }

  async setTimeouts(t: IpvsTimeouts): Promise<void> {
    await this.run(timeoutArgs(t));
  }

  /**
   * Whether the kernel offers a scheduler: a fwmark service is created with it and deleted again
   * in one batch (the kernel loads `ip_vs_<name>` on demand), as upstream probes its scheduler.
   */
  async offersScheduler(name: IpvsScheduler): Promise<boolean> {
    checkScheduler(name);
    const r = await this.exec('ipvsadm', ['-R'], `-A -f ${PROBE_MARK} -s ${name}\n-D -f ${PROBE_MARK}\n`);
    if (r.exitCode === 0) return true;
    // Never leave the probe behind, whatever failed.
    await this.exec('ipvsadm', ['-D', '-f', String(PROBE_MARK)]);
    return false;
  }

  private async run(args: readonly string[]): Promise<ExecResult> {
    const r = await this.exec('ipvsadm', args);
    if (r.exitCode !== 0) throw classify(r, `ipvsadm ${args.join(' ')}`);
    return r;
  }
}

function classify(r: ExecResult, what: string, lines?: readonly string[]): IpvsadmError {
  const stderr = `${r.stderr}${r.stdout}`.trim();
  if (r.exitCode === 127 || /ENOENT|command not found/.test(stderr)) {
    return new IpvsadmError('Unavailable', `ipvsadm is not available: ${stderr}`, stderr);
  }
  if (/Protocol not available|Can't initialize ipvs|Module ip_vs not found|Operation not supported/i.test(stderr)) {
    return new IpvsadmError('Unavailable', `this kernel offers no IPVS (module ip_vs): ${firstLine(stderr)}`, stderr);
  }
  if (/Permission denied|Operation not permitted/.test(stderr)) {
    return new IpvsadmError('Unavailable', `ipvsadm needs CAP_NET_ADMIN (run as root): ${firstLine(stderr)}`, stderr);
  }
  // ipvsadm -R names the failing line's number in some versions; quote the first lines otherwise.
  const lineNo = /line (\d+)/.exec(stderr)?.[1];
  const failing = lines && lineNo !== undefined ? lines[Number(lineNo) - 1] : undefined;
  const where = failing ? ` (line: ${failing})` : lines ? ` (batch of ${lines.length} lines starting ${lines[0]})` : '';
  return new IpvsadmError('Rejected', `${what} failed: ${firstLine(stderr)}${where}`, stderr);
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}
