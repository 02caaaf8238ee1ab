/**
 * `nft` runs served in-process by the spawner's child through libnftables (src/kernel/libnftables.ts),
 * in a network namespace of their own: the same answers as the `nft` tool for every argument
 * vector kproxy uses — a transaction, a check, listings (JSON, terse), a delete — a refused
 * transaction named by its failing line, and what it does not serve still reaching the tool.
 */
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseNftArgv } from '../../src/kernel/libnftables.ts';
import { startSpawner, type Spawner } from '../../src/kernel/spawner.ts';

const isRoot = process.getuid?.() === 0;
const NS = `kplibnft${process.pid}`;

const TABLE = `add table ip kplib
add map ip kplib addrs { type ipv4_addr : ipv4_addr; }
add chain ip kplib out { type nat hook output priority -100; }
add rule ip kplib out dnat to ip daddr map @addrs
add element ip kplib addrs { 10.0.0.1 : 10.1.0.1, 10.0.0.2 : 10.1.0.2 }
`;

const cli = async (args: string[], input?: string) =>
  execa('ip', ['netns', 'exec', NS, 'nft', ...args], { reject: false, ...(input !== undefined ? { input } : {}) });

describe('parseNftArgv: the argument vectors served in-process', () => {
  it('serves transactions, checks, listings and deletes', () => {
    expect(parseNftArgv(['-f', '-'], 'add table ip t\n')).toMatchObject({ commands: 'add table ip t\n', check: false });
    expect(parseNftArgv(['--check', '-f', '-'], 'x')).toMatchObject({ check: true, listing: false });
    expect(parseNftArgv(['-j', '-t', 'list', 'maps', 'ip'], undefined)).toMatchObject({
      commands: 'list maps ip',
      json: true,
      terse: true,
      listing: true,
    });
    expect(parseNftArgv(['delete', 'table', 'ip', 'kproxy'], undefined)).toMatchObject({ listing: false });
  });

  it('leaves everything else to the nft tool', () => {
    for (const args of [
      ['-i'],
      ['monitor', 'trace'],
      ['--version'],
      ['-f', 'file.nft'],
      ['list', 'table', 'ip', 'a b'],
      ['-a', 'list', 'ruleset'],
      ['add', 'table', 'ip', 'x'],
    ]) {
      expect(parseNftArgv(args, undefined), args.join(' ')).toBeUndefined();
    }
    expect(parseNftArgv(['-f', '-'], undefined)).toBeUndefined();
  });
});

describe.skipIf(!isRoot)('nft through libnftables in the spawner child', () => {
  let spawner: Spawner;
  const channels: string[] = [];

  beforeAll(async () => {
    await execa('ip', ['netns', 'add', NS]);
    spawner = startSpawner(['ip', 'netns', 'exec', NS], (c) => channels.push(c));
  });
  afterAll(async () => {
    spawner?.stop();
    await execa('ip', ['netns', 'del', NS], { reject: false });
  });

  it('commits a transaction in the namespace, and lists it as the nft tool does', async () => {
    expect(await spawner.exec('nft', ['-f', '-'], TABLE)).toMatchObject({ exitCode: 0 });
    expect(channels).toEqual(['libnftables']);
    const lib = await spawner.exec('nft', ['-j', 'list', 'table', 'ip', 'kplib']);
    const tool = await cli(['-j', 'list', 'table', 'ip', 'kplib']);
    expect(lib.exitCode).toBe(0);
    expect(JSON.parse(lib.stdout)).toEqual(JSON.parse(tool.stdout));
    // Not in the test's own namespace.
    expect((await execa('nft', ['list', 'table', 'ip', 'kplib'], { reject: false })).exitCode).not.toBe(0);
  });

  it('a terse listing has no elements; a check commits nothing', async () => {
    const terse = await spawner.exec('nft', ['-j', '-t', 'list', 'maps', 'ip']);
    expect(terse.stdout).toContain('"addrs"');
    expect(terse.stdout).not.toContain('10.1.0.1');
    const checked = await spawner.exec(
      'nft',
      ['--check', '-f', '-'],
      'add element ip kplib addrs { 10.0.0.3 : 10.1.0.3 }\n',
    );
    expect(checked.exitCode).toBe(0);
    expect((await cli(['list', 'map', 'ip', 'kplib', 'addrs'])).stdout).not.toContain('10.0.0.3');
  });

  it('a refused transaction changes nothing and its error names the failing line', async () => {
    const tx = 'add element ip kplib addrs { 10.0.0.4 : 10.1.0.4 }\nadd rule ip kplib out jump no-such-chain\n';
    const r = await spawner.exec('nft', ['-f', '-'], tx);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/\/dev\/stdin:2:/);
    expect((await cli(['list', 'map', 'ip', 'kplib', 'addrs'])).stdout).not.toContain('10.0.0.4');
  });

  it('deleting a missing table says so as the tool does; unserved runs reach the tool', async () => {
    expect(await spawner.exec('nft', ['delete', 'table', 'ip', 'kplib'])).toMatchObject({ exitCode: 0 });
    const again = await spawner.exec('nft', ['delete', 'table', 'ip', 'kplib']);
    expect(again.exitCode).not.toBe(0);
    expect(again.stderr).toContain('No such file or directory');
    expect((await spawner.exec('nft', ['--version'])).stdout).toMatch(/^nftables v/);
  });
});
