/**
 * IPVS mode in a real IPVS kernel. This machine's kernel may have no IPVS, so this ONE host-side
 * test boots the IPVS VM (scripts/ipvs-vm/run.sh through test/ipvs-vm/run-in-vm.ts) and runs there,
 * in one boot and one vitest process: the IPVS kernel tests (test/ipvs/*.vmtest.ts: drain,
 * adoption, foreign virtual servers, cleanup, schedulers, affinity, timeouts, strictARP,
 * excludeCIDRs, the daemon) and the packet-flow suite through the ipvs backend (test/flows/packet-flows.test.ts,
 * `-t ipvs`). When the VM cannot start (no QEMU, no kernel package) this test FAILS with the
 * runner's reason: it never skips.
 *
 *   npx vitest run test/ipvs/ipvs-vm.test.ts          # ~7–8 min on 2 cores under emulation
 *   IPVS_VM_VERBOSE=1 npx vitest run test/ipvs/ipvs-vm.test.ts   # stream the VM's output
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  assertVmRan,
  COMPILE_CACHE,
  describeFailures,
  insideIpvsVm,
  NODE,
  REPO_ROOT,
  runInIpvsVm,
  type VitestReport,
} from '../ipvs-vm/run-in-vm.ts';

/** What must pass in the VM, at least: the kernel tests and the flows (both families). */
const MIN_KERNEL_TESTS = 6;
const MIN_FLOW_TESTS = 40;

describe('IPVS mode in a real IPVS kernel (one boot of the IPVS VM)', () => {
  it(
    'the IPVS kernel tests and the packet-flow suite in ipvs mode all pass',
    async () => {
      if (insideIpvsVm()) throw new Error('test/ipvs/ipvs-vm.test.ts runs on the host (it boots the VM)');
      const command = [
        NODE,
        join(REPO_ROOT, 'node_modules/vitest/vitest.mjs'),
        'run',
        '--config',
        join(REPO_ROOT, 'test/ipvs/vitest.vm.config.ts'),
        // node_modules is read-only in the VM: load the config without writing a bundle next to it.
        '--configLoader',
        'runner',
        '--reporter=default',
        '--reporter=json',
        '--outputFile.json="$IPVSVM_RESULTS/vitest.json"',
        '--testTimeout=300000',
        '--hookTimeout=600000',
        '-t',
        'ipvs',
      ].join(' ');
      const r = await runInIpvsVm(command, {
        env: { KPROXY_IPVS_VM: '1', CI: '1', NODE_COMPILE_CACHE: COMPILE_CACHE },
        timeoutSeconds: 1500,
        ...(process.env['IPVS_VM_VERBOSE'] === '1' ? { onOutput: (c: string) => process.stderr.write(c) } : {}),
      });
      assertVmRan(r);
      const path = join(r.resultsDir, 'vitest.json');
      expect(existsSync(path), `vitest wrote no report in the VM (exit ${r.exitCode}):\n${r.output.slice(-4000)}`).toBe(
        true,
      );
      const report = JSON.parse(readFileSync(path, 'utf8')) as VitestReport;
      const passed = (file: string) =>
        report.testResults
          .filter((f) => f.name.endsWith(file))
          .flatMap((f) => f.assertionResults)
          .filter((a) => a.status === 'passed').length;
      process.stderr.write(
        `IPVS VM: ${report.numPassedTests} passed, ${report.numFailedTests} failed in ${r.wallSeconds.toFixed(0)} s ` +
          `(kernel tests ${passed('kernel.vmtest.ts')}, packet flows ${passed('packet-flows.test.ts')})\n`,
      );
      expect(report.numFailedTests, describeFailures(report)).toBe(0);
      expect(r.exitCode, r.output.slice(-4000)).toBe(0);
      expect(passed('kernel.vmtest.ts')).toBeGreaterThanOrEqual(MIN_KERNEL_TESTS);
      expect(passed('packet-flows.test.ts')).toBeGreaterThanOrEqual(MIN_FLOW_TESTS);
    },
    30 * 60_000,
  );
});
