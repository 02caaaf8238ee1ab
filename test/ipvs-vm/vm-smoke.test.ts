/**
 * The IPVS VM works on this machine: scripts/ipvs-vm/run.sh boots a Debian kernel with IPVS under
 * QEMU (installing QEMU and fetching the kernel on first use) and TCP goes through an IPVS virtual
 * server inside it (scripts/ipvs-vm/in-vm-smoke.sh). Never skipped: without QEMU or the kernel
 * package this fails with the runner's message. One boot, about 15–20 s (plus ~40 s on first use;
 * longer when another VM runs on this machine: the runner runs one at a time).
 */
import { expect, it } from 'vitest';
import { assertVmRan, runInIpvsVm } from './run-in-vm.ts';

it('a VM with a Debian kernel with IPVS boots, and TCP goes through an IPVS virtual server in it', async () => {
  const r = await runInIpvsVm('sh scripts/ipvs-vm/in-vm-smoke.sh', { timeoutSeconds: 300 });
  assertVmRan(r);
  expect(r.output, r.output).toMatch(/^IPVS-SMOKE: PASS/m);
  expect(r.exitCode, r.output).toBe(0);
}, 900_000);
