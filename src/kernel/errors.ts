/**
 * @module kernel/errors
 * One error type for every kernel tool (nft, iptables-restore, ipvsadm): a stable code the callers
 * branch on, the message for the log, and the tool's own output for debugging.
 */
export type KernelToolErrorCode = 'NotFound' | 'Rejected' | 'Unavailable';

export class KernelToolError extends Error {
  readonly code: KernelToolErrorCode;
  readonly stderr: string;
  constructor(code: KernelToolErrorCode, message: string, stderr: string) {
    super(message);
    this.name = 'KernelToolError';
    this.code = code;
    this.stderr = stderr;
  }
}
