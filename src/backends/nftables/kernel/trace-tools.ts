/**
 * @module backends/nftables/kernel/trace-tools
 * The two long-running nft processes of `kproxy trace`, both killed when kproxy dies (setpriv):
 *  - `nft monitor`: every line it prints (ruleset and trace events of this network namespace);
 *  - `nft -i`: a session whose commands all go through ONE netlink socket that lives as long as the
 *    process. A table added with `flags owner` (kernel 5.12+) belongs to that socket, and the kernel
 *    deletes it when the socket closes — however the process ends, kill -9 included — and refuses
 *    it to anyone else meanwhile. One input line is one transaction.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { diesWithKproxy } from '../../../kernel/tool-command.ts';
import { type Transaction, transactionText } from '../render/ruleset.ts';

export interface NftProcess {
  /** Settles when nft ends (stopped, or failed), with why. */
  readonly ended: Promise<string>;
  stop(): void;
}

export interface NftSession extends NftProcess {
  /** Sends the transaction as one line; nft's complaints arrive through `onError`. */
  run(tx: Transaction): void;
}

export function startNftMonitor(onLine: (line: string) => void): NftProcess {
  const p = startNft(['monitor']);
  createInterface({ input: p.child.stdout }).on('line', onLine);
  return { ended: p.ended, stop: p.stop };
}

/** `onError`: each line nft says on stderr (a refused command: `Error: …` first). */
export function startNftSession(onError: (text: string) => void): NftSession {
  const p = startNft(['-i']);
  // By lines: nft's message is its first line, and stderr may arrive cut anywhere.
  createInterface({ input: p.child.stderr }).on('line', onError);
  return {
    ended: p.ended,
    run: (tx) => {
      // Commands are newline-separated in a transaction's text, `;`-separated on one line.
      p.child.stdin.write(`${transactionText(tx).trim().split('\n').join(' ; ')}\n`);
    },
    // Closing its input ends nft -i; the kernel drops the tables it owns.
    stop: () => p.child.stdin.end(),
  };
}

function startNft(args: readonly string[]): NftProcess & { child: ChildProcessWithoutNullStreams } {
  const [cmd, argv] = diesWithKproxy('nft', args);
  const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const ended = new Promise<string>((resolve) => {
    child.once('error', (err) => resolve(`nft ${args.join(' ')} could not start: ${err.message}`));
    child.once('close', (code, signal) =>
      resolve(
        `nft ${args.join(' ')} ended (${signal ?? `exit code ${code}`})${stderr.trim() ? `: ${stderr.trim()}` : ''}`,
      ),
    );
  });
  return {
    child,
    ended,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    },
  };
}
