/**
 * What every reliability test shares: which modes run, how long (the short version in `make test`,
 * the full one under `npm run reliability`), and where the figures go.
 *
 * KPROXY_RELIABILITY=full       the full-length versions (set by `npm run reliability`)
 * KPROXY_RELIABILITY_LONG=1     also the long run's full version (`npm run reliability -- --long`)
 * KPROXY_RELIABILITY_MODES=a,b  the modes (default: nftables,iptables — the modes this host's kernel has)
 * KPROXY_RELIABILITY_OUT=DIR    each test writes its figures there as DIR/<test>-<mode>.json
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ProxyMode } from '../../../src/config/proxy-config.ts';

export const FULL = process.env['KPROXY_RELIABILITY'] === 'full';
export const LONG = process.env['KPROXY_RELIABILITY_LONG'] === '1';

export const MODES: readonly ProxyMode[] = (process.env['KPROXY_RELIABILITY_MODES'] ?? 'nftables,iptables')
  .split(',')
  .filter((m): m is ProxyMode => m === 'nftables' || m === 'iptables' || m === 'ipvs');

/** `short` in make test, `full` under `npm run reliability`. */
export function pick<T>(short: T, full: T): T {
  return FULL ? full : short;
}

/** One row of the README's reliability table, and whatever else the test measured. */
export interface Figures {
  /** Test name (`churn`, `crash`, …). */
  readonly test: string;
  readonly mode: ProxyMode | 'any';
  /** The load, in words. */
  readonly load: string;
  /** The faults injected, in words. */
  readonly faults: string;
  /** The result, in words (the figures that matter). */
  readonly result: string;
  /** Did it meet the targets. */
  readonly pass: boolean;
  readonly data?: Readonly<Record<string, unknown>>;
}

/** Prints the figures and, under `npm run reliability`, writes them for the table. */
export function report(f: Figures): void {
  const line = `[reliability] ${f.test} (${f.mode}) ${f.pass ? 'PASS' : 'FAIL'} — ${f.result}`;
  process.stdout.write(`${line}\n`);
  const dir = process.env['KPROXY_RELIABILITY_OUT'];
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${f.test}-${f.mode}.json`), `${JSON.stringify({ ...f, full: FULL }, null, 2)}\n`);
}
