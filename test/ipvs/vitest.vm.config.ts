// vitest config for the IPVS tests INSIDE the IPVS VM (test/ipvs/ipvs-vm.test.ts starts it there):
// the VM config of the harness (test/ipvs-vm/vitest.vm.config.ts) with only the IPVS files: the
// kernel tests (*.vmtest.ts, which the host's `vitest run` never picks up) and the packet-flow suite
// (run with `-t ipvs`, so only its IPVS backend).
import vm from '../ipvs-vm/vitest.vm.config.ts';

export default {
  ...vm,
  test: {
    ...vm.test,
    include: ['test/ipvs/**/*.vmtest.ts', 'test/flows/packet-flows.test.ts'],
  },
};
