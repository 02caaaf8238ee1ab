/**
 * A table the kernel does not hold yet is created in stages (kernel/apply.ts `createStaged`):
 * the table without base chains, then most elements over netlink (kernel/netlink-elements.ts),
 * then the base chains. Packets must never meet a half-built table; a failed netlink load falls
 * back to nft creating the table whole, and a failure nft reports leaves the kernel as it was (no
 * kproxy table), with the error classified as nft's.
 * That the result equals a plain `nft -f` load is test/kernel/golden-nft.test.ts.
 */
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NftablesApplier } from '../../src/backends/nftables/kernel/apply.ts';
import { Nft, NftError } from '../../src/backends/nftables/kernel/nft.ts';
import { renderNftables } from '../../src/backends/nftables/render/layout.ts';
import type { Exec } from '../../src/kernel/exec.ts';
import { inNetns } from '../../src/kernel/exec.ts';
import type { KernelCall } from '../../src/kernel/kernel-calls.ts';
import { startSpawner, type Spawner } from '../../src/kernel/spawner.ts';
import { withNetns } from '../support/netns.ts';
import { sampleStateV4, sampleStateV6 } from '../support/states.ts';

const { ruleset } = renderNftables(sampleStateV4());
const { ruleset: ruleset6 } = renderNftables(sampleStateV6());

async function tables(ns: string): Promise<string> {
  return (await execa('ip', ['netns', 'exec', ns, 'nft', 'list', 'tables'])).stdout;
}

/** Creates the sample table and checks the kernel then holds exactly it. */
async function createsTheTable(applier: NftablesApplier, ns: string): Promise<void> {
  await applier.apply([], [ruleset]);
  expect(await applier.matches([ruleset])).toBe(true);
  expect(await tables(ns)).toContain('table ip kproxy');
}

/** Runs `fn` with an applier on a fresh namespace; `wrap` may interpose on nft and the kernel calls. */
async function withApplier(
  fn: (applier: NftablesApplier, ns: string, spawner: Spawner) => Promise<void>,
  wrap: {
    exec?: (inner: Exec) => Exec;
    call?: (inner: KernelCall, ns: string) => KernelCall;
    log?: { warn: (o: unknown) => void };
  } = {},
): Promise<void> {
  await withNetns(async (ns) => {
    const spawner = startSpawner(['ip', 'netns', 'exec', ns]);
    try {
      const exec = wrap.exec ? wrap.exec(inNetns(ns)) : inNetns(ns);
      const call = wrap.call ? wrap.call(spawner.call, ns) : spawner.call;
      await fn(new NftablesApplier(new Nft(exec), call, wrap.log), ns, spawner);
    } finally {
      spawner.stop();
    }
  });
}

describe('staged create of a new table', () => {
  it('no base chain exists while the elements are loaded; all of them exist after', async () => {
    const seenDuringLoad: string[] = [];
    await withApplier(
      async (applier, ns) => {
        await createsTheTable(applier, ns);
      },
      {
        call: (inner, ns) => async (name, args) => {
          if (name === 'loadNftElements')
            seenDuringLoad.push((await execa('ip', ['netns', 'exec', ns, 'nft', 'list', 'chains', 'ip'])).stdout);
          return inner(name, args);
        },
      },
    );
    expect(seenDuringLoad).toHaveLength(1);
    expect(seenDuringLoad[0]).toContain('chain services');
    expect(seenDuringLoad[0]).not.toMatch(/hook/);
    expect(ruleset.chains.some((c) => c.base)).toBe(true);
  });

  it("the other family's changes go in the first commit, the new table's hooks in the last", async () => {
    const seenDuringLoad: string[] = [];
    await withApplier(
      async (applier, ns) => {
        await applier.apply([], [ruleset6]);
        const probe = { text: 'add chain ip6 kproxy probe-chain', json: {} };
        await applier.apply([probe], [ruleset]);
        expect(await applier.matches([ruleset])).toBe(true);
        expect((await execa('ip', ['netns', 'exec', ns, 'nft', 'list', 'chains', 'ip6'])).stdout).toContain(
          'probe-chain',
        );
      },
      {
        call: (inner, ns) => async (name, args) => {
          if (name === 'loadNftElements' && (args as { family: string }).family === 'ip') {
            const chains = (family: string) => execa('ip', ['netns', 'exec', ns, 'nft', 'list', 'chains', family]);
            seenDuringLoad.push((await chains('ip')).stdout, (await chains('ip6')).stdout);
          }
          return inner(name, args);
        },
      },
    );
    const [ip, ip6] = seenDuringLoad;
    expect(seenDuringLoad).toHaveLength(2);
    expect(ip).toContain('chain services');
    expect(ip).not.toMatch(/hook/);
    expect(ip6).toContain('probe-chain');
  });

  it('a refused last commit (the base chains) leaves no table behind', async () => {
    await withApplier(
      async (applier, ns) => {
        const err = await applier.apply([], [ruleset]).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(NftError);
        expect(await tables(ns)).not.toContain('kproxy');
      },
      { exec: refuseHooks },
    );
  });

  it('a refused element load: nft creates the table whole instead, and the log says why', async () => {
    const warnings: unknown[] = [];
    await withApplier(
      async (applier, ns) => {
        await createsTheTable(applier, ns);
      },
      {
        call: refuseElementLoad,
        log: { warn: (o: unknown) => warnings.push(o) },
      },
    );
    // The kernel's own refusal (ENOENT: a set it does not hold), not a simulated one.
    expect(JSON.stringify(warnings)).toMatch(/errno 2/);
  });

  it('when nft then fails too, no table is left and the error is nft-classified', async () => {
    await withApplier(
      async (applier, ns) => {
        const err = await applier.apply([], [ruleset]).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(NftError);
        expect((err as NftError).code).toBe('Rejected');
        expect(await tables(ns)).not.toContain('kproxy');
      },
      { call: refuseElementLoad, exec: refuseHooks },
    );
  });
});

/** The element load with a set added that the kernel does not hold, so the kernel refuses the batch. */
function refuseElementLoad(inner: KernelCall): KernelCall {
  return async (name, args) => {
    if (name !== 'loadNftElements') return inner(name, args);
    const load = args as { sets: { name: string }[] };
    return inner(name, { ...load, sets: [...load.sets, { ...load.sets[0], name: 'no-such-set' }] });
  };
}

/** nft refusing every transaction that adds a base chain (and only those). */
function refuseHooks(inner: Exec): Exec {
  return async (file, args, stdin, options) =>
    stdin?.includes(' hook ') && !args.includes('delete')
      ? { exitCode: 1, stdout: '', stderr: 'Error: injected refusal' }
      : inner(file, args, stdin, options);
}

describe('netlink element batches', () => {
  let spawner: Spawner;
  const NS = `kpstaged${process.pid % 100000}`;
  beforeAll(async () => {
    await execa('ip', ['netns', 'add', NS]);
    spawner = startSpawner(['ip', 'netns', 'exec', NS]);
  });
  afterAll(async () => {
    spawner.stop();
    await execa('ip', ['netns', 'del', NS], { reject: false });
  });

  const nft = (...args: string[]) => execa('ip', ['netns', 'exec', NS, 'nft', ...args]);

  it('one batch is one transaction: a refused message leaves the sets it also filled empty', async () => {
    await execa('ip', ['netns', 'exec', NS, 'nft', '-f', '-'], {
      input: 'add table ip t\nadd set ip t a { type ipv4_addr ; }\nadd map ip t m { type inet_service : verdict ; }\n',
    });
    const good = { name: 'a', keyType: ['ipv4_addr'], verdictMap: false, elements: ['10.0.0.1', '10.0.0.2'] };
    const bad = { name: 'm', keyType: ['inet_service'], verdictMap: true, elements: ['80 : goto missing-chain'] };
    await expect(spawner.call('loadNftElements', { family: 'ip', table: 't', sets: [good, bad] })).rejects.toThrow(
      /refused/,
    );
    expect((await nft('list', 'set', 'ip', 't', 'a')).stdout).not.toContain('10.0.0.1');
    expect(await spawner.call('loadNftElements', { family: 'ip', table: 't', sets: [good] })).toBe(2);
    expect((await nft('list', 'set', 'ip', 't', 'a')).stdout).toMatch(/10\.0\.0\.1, 10\.0\.0\.2/);
  });

  it('many messages in one batch: 20,000 elements, a few hundred kilobytes', async () => {
    await execa('ip', ['netns', 'exec', NS, 'nft', '-f', '-'], {
      input: 'add table ip big\nadd map ip big m { type ipv4_addr . inet_proto . inet_service : inet_service ; }\n',
    });
    const elements = Array.from(
      { length: 20_000 },
      (_, i) => `10.${i >> 16}.${(i >> 8) & 255}.${i & 255} . tcp . 80 : ${1000 + (i % 5000)}`,
    );
    const set = {
      name: 'm',
      keyType: ['ipv4_addr', 'inet_proto', 'inet_service'],
      dataType: ['inet_service'],
      verdictMap: false,
      elements,
    };
    expect(await spawner.call('loadNftElements', { family: 'ip', table: 'big', sets: [set] })).toBe(20_000);
    const listed = (await nft('list', 'map', 'ip', 'big', 'm')).stdout;
    expect(listed.match(/ : \d+/g)).toHaveLength(20_000);
    expect(listed).toContain('10.0.78.31 . tcp . 80 : 5999');
  });
});
