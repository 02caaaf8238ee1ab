// measure-in-vm.sh: the VM config, running only the trivial test (include replaced, not merged).
import { configDefaults } from 'vitest/config';
import vm from '../vitest.vm.config.ts';

export default {
  ...vm,
  test: { ...vm.test, include: ['test/ipvs-vm/measure/*.vmtest.ts'], exclude: configDefaults.exclude },
};
