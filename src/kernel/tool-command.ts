/**
 * @module kernel/tool-command
 * The command line that starts a kernel tool so that it dies with kproxy. A tool fed on stdin runs
 * under `setpriv --pdeathsig KILL` (util-linux, where present): if kproxy dies (kill -9, OOM) while
 * still writing a transaction, the tool dies with it instead of reading the end of its input early.
 * Without that, `nft -f -` would commit a transaction cut after the 64 KiB a pipe holds whenever the
 * cut fell on a line boundary: half a sync. Kept apart from exec.ts so the spawner's small child
 * can use it without loading execa.
 */
import { existsSync } from 'node:fs';

/** util-linux's setpriv, when the system has it (Debian's util-linux is essential: always). */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** `file args`, run so that it is killed when kproxy dies (where setpriv exists). */
export function diesWithKproxy(file: string, args: readonly string[]): [string, readonly string[]] {
  return SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', file, ...args]] : [file, args];
}

/** The command line that runs a tool: one fed on stdin must not outlive kproxy (see the module comment). */
export function toolCommand(file: string, args: readonly string[], stdin?: string): [string, readonly string[]] {
  return stdin !== undefined ? diesWithKproxy(file, args) : [file, args];
}
