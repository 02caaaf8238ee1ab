/**
 * @module kernel/exec
 * How every kernel tool (nft, iptables-restore, ipvsadm, conntrack, ip) is run: an argument
 * vector, never a shell, with optional standard input. Injectable, so tests run the same code in
 * a network namespace or against a fake.
 */
import { execa } from 'execa';

export interface ExecResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a program with an argument vector (never a shell); injectable for tests and netns use. */
export type Exec = (file: string, args: readonly string[], stdin?: string) => Promise<ExecResult>;

export const execProgram: Exec = async (file, args, stdin) => {
  try {
    const r = await execa(file, args, {
      input: stdin ?? '',
      reject: false,
      stripFinalNewline: false,
      maxBuffer: 1 << 30,
    });
    return { exitCode: r.exitCode ?? 1, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    // Spawning failed (ENOENT, EACCES): report as nft's absence.
    return { exitCode: 127, stdout: '', stderr: err instanceof Error ? err.message : String(err) };
  }
};

/** Runs nft inside another network namespace, through `ip netns exec`. */
export function inNetns(netns: string, exec: Exec = execProgram): Exec {
  return (file, args, stdin) => exec('ip', ['netns', 'exec', netns, file, ...args], stdin);
}
