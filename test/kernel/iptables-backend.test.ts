/**
 * iptables mode's backend against the real kernel, in throw-away namespaces, with both iptables
 * flavors: partial syncs leave exactly what a fresh load gives, a restart adopts the rules (writes
 * nothing), a flush by someone else is seen through the canary and repaired, drift is repaired,
 * a refused restore leaves the old rules, and cleanup removes kproxy's rules and nothing else.
 */
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { IptablesProxyBackend } from '../../src/backends/iptables/backend.ts';
import { loadProxyConfig } from '../../src/config/load.ts';
import { inNetns, type Exec } from '../../src/kernel/exec.ts';
import type { NodeState } from '../../src/model/node-state.ts';
import { familyStateOf } from '../../src/proxy/backend.ts';
import { createLogger } from '../../src/util/log.ts';
import { withNetns } from '../support/netns.ts';
import { bareState, sampleStateV4, STATE_CHANGES } from '../support/states.ts';

const log = createLogger(0, { write: () => true } as never);

function backend(flavor: 'nft' | 'legacy', exec: Exec): IptablesProxyBackend {
  const { config } = loadProxyConfig({
    argv: ['--proxy-mode=iptables', `--iptables-flavor=${flavor}`, '--hostname-override=node-a'],
    hostname: 'node-a',
    readFile: () => '',
  });
  return new IptablesProxyBackend({ config, exec, log });
}

/** iptables-save without counters and comments: what a fresh load and an updated kernel must share. */
async function saved(ns: string, flavor: string, table?: string): Promise<string> {
  const r = await execa('ip', ['netns', 'exec', ns, `iptables-${flavor}-save`, ...(table ? ['-t', table] : [])]);
  return r.stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/ \[\d+:\d+\]$/, ''))
    .join('\n');
}

async function iptables(ns: string, flavor: string, args: string[]): Promise<void> {
  await execa('ip', ['netns', 'exec', ns, `iptables-${flavor}`, ...args]);
}

/** Services whose ports differ between two states: what the reconciler would report as changed. */
function changedServices(a: NodeState, b: NodeState): Set<string> {
  const ports = (s: NodeState) => {
    const m = new Map<string, string>();
    for (const sp of s.servicePorts) {
      const key = `${sp.ref.namespace}/${sp.ref.name}`;
      m.set(key, (m.get(key) ?? '') + JSON.stringify(sp));
    }
    return m;
  };
  const pa = ports(a);
  const pb = ports(b);
  return new Set([...pa.keys(), ...pb.keys()].filter((k) => pa.get(k) !== pb.get(k)));
}

const full = (state: NodeState) => ({ families: [familyStateOf(state)], full: true, changed: new Set<string>() });
const base = sampleStateV4();

for (const flavor of ['nft', 'legacy'] as const) {
  describe(`iptables backend (iptables-${flavor})`, () => {
    const freshSave = (state: NodeState) =>
      withNetns(async (ns) => {
        await backend(flavor, inNetns(ns)).sync(full(state));
        return saved(ns, flavor);
      });

    for (const [label, change] of Object.entries(STATE_CHANGES)) {
      it(`${label}: a partial sync leaves exactly what a fresh load gives`, async () => {
        const next = change(base);
        const fresh = await freshSave(next);
        await withNetns(async (ns) => {
          const b = backend(flavor, inNetns(ns));
          await b.sync(full(base));
          const report = await b.sync({
            families: [familyStateOf(next)],
            full: false,
            changed: changedServices(base, next),
          });
          // A context change (detector, mark) makes the backend render everything.
          const contextChanged =
            next.masqueradeMark !== base.masqueradeMark || next.masqueradeAll !== base.masqueradeAll;
          expect(report.kind).toBe(contextChanged ? 'full' : 'partial');
          expect(await saved(ns, flavor)).toEqual(fresh);
          expect(await b.matches([familyStateOf(next)])).toBe(true);
        });
      });
    }

    it('a partial sync writes nothing in a family where nothing that changed has ports', async () => {
      await withNetns(async (ns) => {
        const v6 = familyStateOf(bareState([], 'ipv6'));
        const b = backend(flavor, inNetns(ns));
        await b.sync({ families: [familyStateOf(base), v6], full: true, changed: new Set() });
        const next = STATE_CHANGES['endpoints changed']!(base);
        const report = await b.sync({
          families: [familyStateOf(next), v6],
          full: false,
          changed: changedServices(base, next),
        });
        expect(report.kind).toBe('partial');
        const written = report.detail?.['chainsWritten'] as number[] | undefined;
        expect(written?.[0]).toBeGreaterThan(0);
        expect(written?.[1]).toBe(0);
      });
    });

    it('a restarted kproxy adopts the rules: its first (full) sync writes nothing', async () => {
      await withNetns(async (ns) => {
        await backend(flavor, inNetns(ns)).sync(full(base));
        const before = await saved(ns, flavor);
        const report = await backend(flavor, inNetns(ns)).sync(full(base));
        expect(report.changes).toBe(0);
        expect(await saved(ns, flavor)).toEqual(before);
      });
    });

    it('drift: a deleted rule and a deleted chain are restored by the next full sync', async () => {
      await withNetns(async (ns) => {
        const b = backend(flavor, inNetns(ns));
        await b.sync(full(base));
        const want = await saved(ns, flavor);
        await iptables(ns, flavor, ['-t', 'nat', '-F', 'KUBE-SERVICES']);
        await iptables(ns, flavor, ['-t', 'filter', '-D', 'FORWARD', '1']);
        expect(await b.matches([familyStateOf(base)])).toBe(false);
        const report = await b.sync(full(base));
        expect(report.drift).toBe(true);
        expect(await saved(ns, flavor)).toEqual(want);
      });
    });

    it('a flush by someone else is seen through the canary and repaired by a full sync', async () => {
      await withNetns(async (ns) => {
        const b = backend(flavor, inNetns(ns));
        await b.sync(full(base));
        const want = await saved(ns, flavor);
        let lost = 0;
        const stop = b.watchForFlush(() => lost++, 50);
        try {
          await new Promise((r) => setTimeout(r, 300));
          expect(lost).toBe(0);
          // What a firewalld reload does: every table flushed, every user chain deleted.
          for (const table of ['mangle', 'nat', 'filter']) {
            await iptables(ns, flavor, ['-t', table, '-F']);
            await iptables(ns, flavor, ['-t', table, '-X']);
          }
          for (let i = 0; i < 100 && lost === 0; i++) await new Promise((r) => setTimeout(r, 50));
          expect(lost).toBe(1);
        } finally {
          stop();
        }
        await b.sync(full(base));
        expect(await saved(ns, flavor)).toEqual(want);
      });
    });

    it('a refused restore leaves the previous rules in place, and the next sync is full', async () => {
      await withNetns(async (ns) => {
        const real = inNetns(ns);
        let refuse = false;
        const exec: Exec = (file, args, stdin) =>
          refuse && file.endsWith('-restore')
            ? real(file, [...args, '--no-such-option'], stdin)
            : real(file, args, stdin);
        const b = backend(flavor, exec);
        await b.sync(full(base));
        const before = await saved(ns, flavor);
        refuse = true;
        const next = STATE_CHANGES['endpoints changed']!(base);
        await expect(
          b.sync({ families: [familyStateOf(next)], full: false, changed: changedServices(base, next) }),
        ).rejects.toThrow(/rejected/);
        expect(await saved(ns, flavor)).toEqual(before);
        refuse = false;
        const report = await b.sync({ families: [familyStateOf(next)], full: false, changed: new Set() });
        expect(report.kind).toBe('full');
        expect(await b.matches([familyStateOf(next)])).toBe(true);
      });
    });

    it("cleanup removes kproxy's chains and jumps and leaves other software's rules", async () => {
      await withNetns(async (ns) => {
        await iptables(ns, flavor, ['-t', 'filter', '-N', 'OTHER-FW']);
        await iptables(ns, flavor, ['-t', 'filter', '-A', 'OTHER-FW', '-s', '192.0.2.9/32', '-j', 'DROP']);
        await iptables(ns, flavor, ['-t', 'filter', '-A', 'INPUT', '-j', 'OTHER-FW']);
        await iptables(ns, flavor, ['-t', 'nat', '-A', 'POSTROUTING', '-s', '192.0.2.0/24', '-j', 'MASQUERADE']);
        const foreign = { filter: await saved(ns, flavor, 'filter'), nat: await saved(ns, flavor, 'nat') };
        const b = backend(flavor, inNetns(ns));
        await b.sync(full(base));
        const removed = await b.cleanup();
        expect(removed.length).toBeGreaterThan(0);
        expect(await saved(ns, flavor)).not.toMatch(
          /KUBE-(SERVICES|SVC-|SEP-|EXT-|FW-|NODEPORTS|POSTROUTING|MARK-MASQ|PROXY-CANARY|FORWARD|PROXY-FIREWALL)/,
        );
        // Upstream's cleanup keeps KUBE-FIREWALL (the kubelet shares it); everything else is as before.
        const withoutFirewall = (s: string) =>
          s
            .split('\n')
            .filter((l) => !l.includes('KUBE-FIREWALL'))
            .join('\n');
        expect(withoutFirewall(await saved(ns, flavor, 'filter'))).toEqual(withoutFirewall(foreign.filter));
        expect(await saved(ns, flavor, 'nat')).toEqual(foreign.nat);
      });
    });
  });
}
