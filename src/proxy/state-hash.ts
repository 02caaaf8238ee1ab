/**
 * @module proxy/state-hash
 * A hash of the desired state (both families' contexts and every Service's ports) kept up to date
 * in O(change): each Service's ports hash on their own, the family's digest combines them by
 * addition modulo 2^128 (order-independent), so a partial sync re-hashes only the Services it
 * re-derived. Two equal desired states have equal digests, however they were reached.
 */
import { createHash } from 'node:crypto';
import type { Family } from '../model/cluster.ts';
import type { FamilyState } from './backend.ts';

const MOD = 1n << 128n;

function hash128(text: string): bigint {
  return BigInt(`0x${createHash('sha256').update(text).digest('hex').slice(0, 32)}`);
}

export class DesiredStateHash {
  /** `family \0 service` → that Service's hash. */
  private readonly services = new Map<string, bigint>();
  private readonly sums = new Map<Family, bigint>();
  private readonly contexts = new Map<Family, string>();

  /** Takes the families' state: every Service when `keys` is 'all', else only these Services. */
  update(families: readonly FamilyState[], keys: ReadonlySet<string> | 'all'): void {
    for (const fs of families) {
      const family = fs.context.family;
      this.contexts.set(family, JSON.stringify(fs.context));
      if (keys === 'all') {
        for (const k of [...this.services.keys()]) if (k.startsWith(`${family}\u0000`)) this.services.delete(k);
        let sum = 0n;
        for (const [key, ports] of fs.services) {
          const h = hash128(`${key}\u0000${JSON.stringify(ports)}`);
          this.services.set(`${family}\u0000${key}`, h);
          sum += h;
        }
        this.sums.set(family, sum % MOD);
        continue;
      }
      let sum = this.sums.get(family) ?? 0n;
      for (const key of keys) {
        const id = `${family}\u0000${key}`;
        sum -= this.services.get(id) ?? 0n;
        const ports = fs.services.get(key);
        if (ports) {
          const h = hash128(`${key}\u0000${JSON.stringify(ports)}`);
          this.services.set(id, h);
          sum += h;
        } else this.services.delete(id);
      }
      this.sums.set(family, ((sum % MOD) + MOD) % MOD);
    }
  }

  /** `sha256:` and the hex digest of the whole desired state. */
  digest(): string {
    const h = createHash('sha256');
    for (const family of [...this.contexts.keys()].sort())
      h.update(`${family}\u0000${this.contexts.get(family)}\u0000${(this.sums.get(family) ?? 0n).toString(16)}\n`);
    return `sha256:${h.digest('hex')}`;
  }
}
