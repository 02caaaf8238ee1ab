/**
 * @module bench/scenarios/ipvs
 * IPVS mode's sync cost beside nftables mode's, both measured inside the IPVS VM
 * (scripts/ipvs-vm/run.sh: this kernel has no IPVS): `kproxy sync --manifests` cold and again
 * (a restart that must write nothing), whole processes, through src/bench/ipvs-guest.ts. The VM
 * emulates its CPU (QEMU TCG), so only the ratio between the modes carries over to real hardware.
 */
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { ms, ratio, secs } from '../format.ts';
import type { BenchContext, Scenario, ScenarioResult } from '../scenario.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const RUNNER = `${ROOT}scripts/ipvs-vm/run.sh`;
/** The runner's exit codes for a VM it could not run (scripts/ipvs-vm/README.md). */
const VM_UNAVAILABLE: Record<number, string> = {
  120: 'QEMU is not installed (make ipvs-vm-setup)',
  121: 'the IPVS guest kernel is missing (make ipvs-vm-setup)',
  124: 'the VM timed out',
  125: 'the VM failed',
};

interface Figures {
  readonly wallS: number;
  readonly syncMs?: number;
  readonly changes?: number;
  readonly rssMiB: number | null;
  readonly timedOut: boolean;
}

interface GuestLine {
  readonly size: string;
  readonly mode: 'nftables' | 'ipvs';
  readonly cold: Figures;
  readonly restart: Figures;
  readonly upToDate: boolean;
}

export const ipvs: Scenario = {
  name: 'ipvs',
  description: 'kproxy sync in IPVS mode beside nftables mode, both inside the IPVS VM (emulated: read the ratios)',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const sizes = ctx.options.ipvsSizes.join(',');
    ctx.log(`ipvs: booting the IPVS VM for ${sizes} (nftables and ipvs, cold and restart)`);
    const command = `NODE_COMPILE_CACHE=${ROOT}.cache/node-compile-cache ${process.execPath} src/bench/ipvs-guest.ts --sizes ${sizes} --timeout ${Math.round(ctx.options.kproxyTimeoutMs / 1000)}`;
    const r = await execa(RUNNER, [command], { cwd: ROOT, reject: false, all: true });
    const why = VM_UNAVAILABLE[r.exitCode ?? 0];
    if (why) throw new Error(`ipvs: ${why}; skip this scenario with --skip ipvs\n${String(r.all).slice(-2000)}`);
    const rows = String(r.stdout)
      .split('\n')
      .filter((l) => l.startsWith('IPVSBENCH '))
      .map((l) => JSON.parse(l.slice('IPVSBENCH '.length)) as GuestLine);
    if (r.exitCode !== 0 || rows.length === 0)
      throw new Error(`ipvs: the guest failed (exit ${r.exitCode})\n${String(r.all).slice(-3000)}`);
    const find = (size: string, mode: GuestLine['mode']) => rows.find((x) => x.size === size && x.mode === mode);
    const sizesSeen = [...new Set(rows.map((x) => x.size))];
    return {
      title: 'IPVS mode beside nftables mode: `kproxy sync --manifests` inside the IPVS VM (QEMU TCG)',
      tables: [
        {
          columns: [
            'size',
            'mode',
            'cold wall s',
            'cold sync ms',
            'changes',
            'restart wall s',
            'restart sync ms',
            'up to date',
            'RSS MiB',
          ],
          rows: rows.map((x) => [
            x.size,
            x.mode,
            `${x.cold.timedOut ? '>' : ''}${secs(x.cold.wallS)}`,
            ms(x.cold.syncMs),
            String(x.cold.changes ?? ''),
            secs(x.restart.wallS),
            ms(x.restart.syncMs),
            x.upToDate ? 'yes' : 'NO',
            x.cold.rssMiB === null ? '' : String(Math.round(x.cold.rssMiB)),
          ]),
        },
        {
          columns: ['size', 'ipvs ÷ nftables: cold wall', 'cold sync', 'restart wall', 'restart sync'],
          rows: sizesSeen.flatMap((size) => {
            const n = find(size, 'nftables');
            const v = find(size, 'ipvs');
            if (!n || !v) return [];
            const div = (a?: number, b?: number) => (a !== undefined && b ? a / b : Number.NaN);
            return [
              [
                size,
                ratio(div(v.cold.wallS, n.cold.wallS)),
                ratio(div(v.cold.syncMs, n.cold.syncMs)),
                ratio(div(v.restart.wallS, n.restart.wallS)),
                ratio(div(v.restart.syncMs, n.restart.syncMs)),
              ],
            ];
          }),
        },
      ],
      notes: [
        'Both modes in the same emulated kernel, one after the other, each in a fresh network namespace; wall = the whole process (Node start, manifests, model, the kernel tools); sync = what kproxy logs as the sync (for ipvs: ipvsadm -R batches, kube-ipvs0 addresses, the helper nftables table).',
        'restart = the same command again on the loaded kernel: it must write nothing.',
      ],
      data: { rows },
    };
  },
};
