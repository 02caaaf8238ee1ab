import { describe, expect, it } from 'vitest';
import { Nft } from '../../src/backends/nftables/kernel/nft.ts';
import type { Exec } from '../../src/kernel/exec.ts';
import { NftablesApplier } from '../../src/backends/nftables/kernel/apply.ts';
import type { Ruleset } from '../../src/backends/nftables/render/ruleset.ts';
import { stmt } from '../../src/backends/nftables/render/syntax.ts';

describe('transactions larger than the call stack', () => {
  it('a 200,000-command plan reaches nft in one transaction (no spread of the whole list)', async () => {
    const accept = stmt.verdict({ kind: 'accept' });
    const rules = Array.from({ length: 200_000 }, () => ({ statements: [accept] }));
    const rs: Ruleset = { family: 'ip', table: 'kproxy', chains: [{ name: 'big', rules }], sets: [] };
    let lines = 0;
    const exec: Exec = async (_file, args, stdin) => {
      if (args.includes('list')) return { exitCode: 1, stdout: '', stderr: 'Error: No such file or directory' };
      lines = (stdin ?? '').split('\n').length - 1;
      return { exitCode: 0, stdout: '', stderr: '' };
    };
    const report = await new NftablesApplier(new Nft(exec)).sync([rs]);
    expect(report.commands).toBe(200_002);
    expect(lines).toBe(200_002);
  });
});
