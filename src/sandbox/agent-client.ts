// Harness side of agent.ts: spawns one long-lived agent in a namespace and talks JSON lines to it.
import { execa, type ResultPromise } from 'execa';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { AgentRequest, AgentResponse, ProbeResult, ProbeSpec } from './protocol.ts';

const AGENT_PATH = fileURLToPath(new URL('./agent.ts', import.meta.url));

type Pending = { resolve: (r: AgentResponse & { ok: true }) => void; reject: (e: Error) => void };
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export class Agent {
  readonly ns: string;
  readonly name: string;
  readonly pid: number;
  readonly #proc: ResultPromise<{ stdin: 'pipe'; stdout: 'pipe'; stderr: 'pipe'; buffer: false; reject: false }>;
  readonly #pending = new Map<number, Pending>();
  readonly #ready: Promise<void>;
  #nextId = 1;
  #stderr = '';
  #exited = false;
  readonly #exitPromise: Promise<unknown>;

  /** @param cpu pin the agent to this CPU (see cpuPlan() in topology.ts), or undefined. */
  constructor(ns: string, name: string, cpu?: number) {
    this.ns = ns;
    this.name = name;
    const major = Number(process.versions.node.split('.')[0]);
    if (major < 24) throw new Error(`flow-test agent needs Node >= 24 (type stripping); this is ${process.version}`);
    const node = [process.execPath, '--disable-warning=ExperimentalWarning', AGENT_PATH, name];
    const cmd = cpu === undefined ? node : ['taskset', '-c', String(cpu), ...node];
    this.#proc = execa('ip', ['netns', 'exec', ns, ...cmd], {
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: 'pipe',
      buffer: false,
      reject: false,
      cleanup: true,
    });
    if (this.#proc.pid === undefined) throw new Error(`could not spawn agent in ${ns}`);
    this.pid = this.#proc.pid;
    this.#proc.stderr.setEncoding('utf8');
    this.#proc.stderr.on('data', (d: string) => {
      if (this.#stderr.length < 8192) this.#stderr += d;
    });
    this.#proc.stdin.on('error', () => {});
    let readyResolve!: () => void;
    let readyReject!: (e: Error) => void;
    this.#ready = new Promise<void>((res, rej) => {
      readyResolve = res;
      readyReject = rej;
    });
    this.#ready.catch(() => {});
    this.#pending.set(0, { resolve: () => readyResolve(), reject: readyReject });
    const rl = createInterface({ input: this.#proc.stdout, crlfDelay: Infinity });
    rl.on('line', (line) => {
      let res: AgentResponse;
      try {
        res = JSON.parse(line) as AgentResponse;
      } catch {
        return;
      }
      const p = this.#pending.get(res.id);
      if (p === undefined) return;
      this.#pending.delete(res.id);
      if (res.ok) p.resolve(res);
      else p.reject(new Error(`agent ${name}@${ns}: ${res.error}`));
    });
    this.#exitPromise = this.#proc.then((r) => {
      this.#exited = true;
      const err = new Error(`agent ${name}@${ns} exited (code ${r.exitCode ?? r.signal}): ${this.#stderr.trim()}`);
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
    });
  }

  /** Resolves once the agent process runs and answers. */
  ready(): Promise<void> {
    return this.#ready;
  }

  get exited(): boolean {
    return this.#exited;
  }

  async request(req: DistributiveOmit<AgentRequest, 'id'>): Promise<AgentResponse & { ok: true }> {
    await this.#ready;
    if (this.#exited) throw new Error(`agent ${this.name}@${this.ns} is not running: ${this.#stderr.trim()}`);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#proc.stdin.write(`${JSON.stringify({ ...req, id })}\n`);
    });
  }

  async listen(tcp: readonly number[], udp: readonly number[]): Promise<void> {
    await this.request({ op: 'listen', tcp: [...tcp], udp: [...udp] });
  }

  async unlisten(tcp: readonly number[], udp: readonly number[]): Promise<void> {
    await this.request({ op: 'unlisten', tcp: [...tcp], udp: [...udp] });
  }

  async probe(spec: ProbeSpec, count: number, concurrency: number): Promise<ProbeResult[]> {
    const res = await this.request({ op: 'probe', spec, count, concurrency });
    return res.results ?? [];
  }

  /** Close stdin (the agent exits by itself), then SIGKILL it by pid if it lingers. */
  async stop(graceMs = 500): Promise<void> {
    if (this.#exited) return;
    this.#proc.stdin.end();
    const timer = setTimeout(() => {
      if (!this.#exited) this.#proc.kill('SIGKILL');
    }, graceMs);
    await this.#exitPromise;
    clearTimeout(timer);
  }

  /** Synchronous last-resort kill (process 'exit' handler). */
  killNow(): void {
    if (!this.#exited) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
}
