/**
 * @module backends/nftables/kernel/monitor
 * `nft monitor` as a long-running child: every line it prints (ruleset events and trace events of
 * this network namespace) goes to `onLine`. It dies with kproxy (setpriv), so a killed `kproxy
 * trace` leaves no monitor behind.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { diesWithKproxy } from '../../../kernel/exec.ts';

export interface NftMonitor {
  /** Settles when nft ends (stopped, or failed), with why. */
  readonly ended: Promise<string>;
  stop(): void;
}

export function startNftMonitor(onLine: (line: string) => void): NftMonitor {
  const [cmd, argv] = diesWithKproxy('nft', ['monitor']);
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  createInterface({ input: child.stdout }).on('line', onLine);
  const ended = new Promise<string>((resolve) => {
    child.once('error', (err) => resolve(`nft monitor could not start: ${err.message}`));
    child.once('close', (code, signal) =>
      resolve(`nft monitor ended (${signal ?? `exit code ${code}`})${stderr.trim() ? `: ${stderr.trim()}` : ''}`),
    );
  });
  return {
    ended,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    },
  };
}
