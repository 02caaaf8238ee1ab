/**
 * @module backends/ipvs/kernel/links
 * The `ip` commands of IPVS mode: the dummy interface kube-ipvs0, its addresses (changed in one
 * `ip -batch -`), the node's local addresses, and the sysctls IPVS needs.
 */
import type { Exec, ExecResult } from '../../../kernel/exec.ts';
import { KernelToolError } from '../../../kernel/errors.ts';
import { parseAddresses, type InterfaceAddress } from '../render/observed.ts';
import { DUMMY_INTERFACE } from '../render/syntax.ts';

export class Links {
  private readonly exec: Exec;
  constructor(exec: Exec) {
    this.exec = exec;
  }

  /** Every address of every interface (`ip -o addr show`). */
  async addresses(): Promise<InterfaceAddress[]> {
    return parseAddresses((await this.run(['-o', 'addr', 'show'])).stdout);
  }

  async dummyExists(): Promise<boolean> {
    const r = await this.exec('ip', ['-o', 'link', 'show', 'dev', DUMMY_INTERFACE]);
    return r.exitCode === 0;
  }

  /**
   * Creates kube-ipvs0; true if it was missing. A dummy interface, left down as upstream leaves it:
   * its addresses still get their local routes (both families), which is all it is for.
   */
  async ensureDummy(): Promise<boolean> {
    if (await this.dummyExists()) return false;
    await this.run(['link', 'add', DUMMY_INTERFACE, 'type', 'dummy']);
    return true;
  }

  /** Removes kube-ipvs0 with its addresses; false when it did not exist. */
  async deleteDummy(): Promise<boolean> {
    if (!(await this.dummyExists())) return false;
    await this.run(['link', 'del', DUMMY_INTERFACE]);
    return true;
  }

  /** Runs `ip -batch -` (stops at the first failing line). */
  async batch(lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return;
    const r = await this.exec('ip', ['-batch', '-'], `${lines.join('\n')}\n`);
    if (r.exitCode !== 0) throw new KernelToolError('Rejected', `ip -batch failed: ${oneLine(r)}`, r.stderr);
  }

  /** A sysctl's value, or undefined when the kernel has no such key. */
  async sysctl(name: string): Promise<string | undefined> {
    const r = await this.exec('sysctl', ['-n', name]);
    return r.exitCode === 0 ? r.stdout.trim() : undefined;
  }

  async setSysctl(name: string, value: string): Promise<void> {
    const r = await this.exec('sysctl', ['-w', `${name}=${value}`]);
    if (r.exitCode !== 0)
      throw new KernelToolError('Rejected', `sysctl -w ${name}=${value} failed: ${oneLine(r)}`, r.stderr);
  }

  /** `modprobe MODULE`; false when it failed (no such module, no modprobe). */
  async modprobe(module: string): Promise<boolean> {
    return (await this.exec('modprobe', [module])).exitCode === 0;
  }

  private async run(args: readonly string[]): Promise<ExecResult> {
    const r = await this.exec('ip', args);
    if (r.exitCode !== 0) {
      const code = r.exitCode === 127 ? 'Unavailable' : 'Rejected';
      throw new KernelToolError(code, `ip ${args.join(' ')} failed: ${oneLine(r)}`, r.stderr);
    }
    return r;
  }
}

function oneLine(r: ExecResult): string {
  return (r.stderr.trim() || r.stdout.trim()).split('\n').slice(0, 3).join(' | ');
}
