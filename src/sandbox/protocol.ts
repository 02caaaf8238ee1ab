// Wire protocol between the harness (test process) and agent.ts (one process per namespace).
// One JSON object per line on the agent's stdin (requests) and stdout (responses).
// Type-only module: agent.ts imports it with `import type`, so it is erased at run time.

export type Proto = 'tcp' | 'udp';

/** What a server writes back, one JSON line per TCP connection / UDP datagram. */
export interface ServerReply {
  /** Name of the serving agent (the pod name, or whatever name `serve()` got). */
  pod: string;
  /** Client address as the server saw it (IPv4-mapped prefix stripped). */
  peer: string;
  peerPort: number;
  /** Local (destination) address/port the server saw: the DNAT result. */
  local: string;
  localPort: number;
  proto: Proto;
}

export interface ProbeSpec {
  proto: Proto;
  host: string;
  port: number;
  /** Time to wait for an answer before calling it a drop. */
  timeoutMs?: number;
  /** Fixed client source port (forces sequential probing when count > 1). */
  sourcePort?: number;
  /** Fixed client source address (must be an address of the probing namespace). */
  sourceAddress?: string;
}

export type ProbeResult =
  | ({ kind: 'answered' } & ServerReply)
  | { kind: 'rejected' }
  | { kind: 'timeout' }
  | { kind: 'error'; code: string; message: string };

export type AgentRequest =
  | { id: number; op: 'ping' }
  | { id: number; op: 'listen'; tcp: number[]; udp: number[] }
  | { id: number; op: 'unlisten'; tcp: number[]; udp: number[] }
  | { id: number; op: 'probe'; spec: ProbeSpec; count: number; concurrency: number };

export type AgentResponse =
  | { id: number; ok: true; results?: ProbeResult[]; tcp?: number[]; udp?: number[] }
  | { id: number; ok: false; error: string };
