/**
 * The conntrack table seam (`ConntrackTable`, the ctnetlink channel in the daemon) and its
 * fallback to the `conntrack` tool: exact deletions of what the listing judged stale while the
 * table works, the tool's listing and filters the moment it does not; and a channel that cannot
 * open ctnetlink, or whose requests fail, says so and refuses requests, so callers fall back.
 */
import { describe, expect, it } from 'vitest';
import { bareState, udpServicePort } from '../support/states.ts';
import { cleanupStaleConntrack, type ConntrackTable } from '../../src/kernel/conntrack.ts';
import { CtnetlinkUnavailable, ctnetlinkOver } from '../../src/kernel/ctnetlink-client.ts';
import type { Exec } from '../../src/kernel/exec.ts';
import type { ConntrackEntry } from '../../src/model/conntrack-plan.ts';
import type { EndpointTarget } from '../../src/model/node-state.ts';

const ep = (ip: string): EndpointTarget => ({ ip, port: 5353, isLocal: false });
const b = ep('10.244.0.3');
const sp = udpServicePort('10.96.0.10', 53, b);
const state = bareState([sp], 'ipv4');

const flow = (sport: number, to: string, id: number): ConntrackEntry => ({
  family: 'ipv4',
  protocol: 'UDP',
  original: { src: '10.244.0.9', dst: '10.96.0.10', sport, dport: 53 },
  reply: { src: to, dst: '10.244.0.9', sport: 5353, dport: sport },
  id,
});
/** Two flows to the old endpoint a (stale), one to b (not). */
const listed = [flow(40001, '10.244.0.2', 11), flow(40002, '10.244.0.2', 12), flow(40003, '10.244.0.3', 13)];
const asText = (es: readonly ConntrackEntry[]) =>
  es
    .map(
      (e) =>
        `udp 17 29 src=${e.original.src} dst=${e.original.dst} sport=${e.original.sport} dport=${e.original.dport} src=${e.reply.src} dst=${e.reply.dst} sport=${e.reply.sport} dport=${e.reply.dport} mark=0 use=1`,
    )
    .join('\n');

/** The tool, faked: `-L` prints `listed`, `-D` deletes what matches; every call recorded. */
function fakeTool() {
  const calls: string[][] = [];
  const run: Exec = async (file, args) => {
    calls.push([file, ...args]);
    if (args[0] === '-L') return { exitCode: 0, stdout: asText(listed), stderr: '' };
    return { exitCode: 0, stdout: '', stderr: 'conntrack v1.4.7 (conntrack-tools): 2 flow entries have been deleted.' };
  };
  return { run, calls };
}

function fakeTable(fail: { list?: boolean; destroy?: boolean } = {}) {
  const destroyed: ConntrackEntry[][] = [];
  const table: ConntrackTable = {
    async list() {
      if (fail.list) throw new CtnetlinkUnavailable('ctnetlink helper exited (9)');
      return { entries: listed, unparsed: 0 };
    },
    async destroy(entries) {
      if (fail.destroy) throw new CtnetlinkUnavailable('ctnetlink helper exited (9)');
      destroyed.push([...entries]);
      return { deleted: entries.length, missing: 0, errors: [] };
    },
  };
  return { table, destroyed };
}

describe('stale conntrack cleanup through a ConntrackTable', () => {
  it('deletes exactly the stale entries listed, with their ids, and never runs the tool', async () => {
    const tool = fakeTool();
    const { table, destroyed } = fakeTable();
    const r = await cleanupStaleConntrack(tool.run, { state, table });
    expect(tool.calls).toEqual([]);
    expect(destroyed).toEqual([[listed[0], listed[1]]]);
    expect(r).toMatchObject({ deleted: 2, deletions: 2, failedDeletions: 0 });
    expect(r.stale['endpoint-gone']).toBe(2);
  });

  it('lists and deletes with the tool when the table cannot list', async () => {
    const tool = fakeTool();
    const { table, destroyed } = fakeTable({ list: true });
    const r = await cleanupStaleConntrack(tool.run, { state, table });
    expect(destroyed).toEqual([]);
    expect(tool.calls.map((c) => c.slice(0, 2))).toEqual([
      ['conntrack', '-L'],
      ['conntrack', '-D'],
    ]);
    expect(tool.calls[1]).toContain('10.244.0.2');
    expect(r).toMatchObject({ deleted: 2, deletions: 1 });
  });

  it("runs the same plan's filters with the tool when the table cannot delete", async () => {
    const tool = fakeTool();
    const { table } = fakeTable({ destroy: true });
    const r = await cleanupStaleConntrack(tool.run, { state, table });
    expect(tool.calls.map((c) => c.slice(0, 2))).toEqual([['conntrack', '-D']]);
    expect(r).toMatchObject({ deleted: 2, deletions: 1 });
  });

  it('leaves an unavailable table alone', async () => {
    const tool = fakeTool();
    const { table, destroyed } = fakeTable();
    const r = await cleanupStaleConntrack(tool.run, { state, table: { ...table, available: () => false } });
    expect(destroyed).toEqual([]);
    expect(tool.calls.map((c) => c[1])).toEqual(['-L', '-D']);
    expect(r.deleted).toBe(2);
  });
});

describe('ctnetlink channel', () => {
  it('that cannot open ctnetlink says why and refuses requests (callers fall back)', async () => {
    const ct = ctnetlinkOver(
      async <T>(name: string) => (name === 'conntrackOpen' ? 'cannot load libmnl.so.0' : []) as T,
    );
    expect(await ct.ready).toBe('cannot load libmnl.so.0');
    await expect(ct.list('ipv4', 'UDP')).rejects.toBeInstanceOf(CtnetlinkUnavailable);
    expect(ct.available()).toBe(false);
    await expect(ct.destroy([listed[0] as ConntrackEntry])).rejects.toBeInstanceOf(CtnetlinkUnavailable);
  });

  it('whose request fails (the child died with it) refuses that request, and serves the next', async () => {
    let dies = true;
    const ct = ctnetlinkOver(async <T>(name: string) => {
      if (name === 'conntrackOpen') return null as T;
      if (dies) {
        dies = false;
        throw new Error("kproxy's tool spawner exited (9)");
      }
      return [] as T;
    });
    expect(await ct.ready).toBeUndefined();
    await expect(ct.list('ipv4', 'UDP')).rejects.toBeInstanceOf(CtnetlinkUnavailable);
    expect(ct.available()).toBe(true);
    expect(await ct.list('ipv4', 'UDP')).toEqual({ entries: [], unparsed: 0 });
    ct.close();
    expect(ct.available()).toBe(false);
  });
});
