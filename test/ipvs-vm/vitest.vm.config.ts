// vitest config for test files run INSIDE the IPVS VM (test/ipvs-vm/run-in-vm.ts): the project's
// config with the repository as root, without test/ipvs-vm/ itself (no VM inside the VM), and Vite's
// cache in .cache/ (node_modules may be mounted read-only in the VM). Timeouts come from the CLI.
import { fileURLToPath } from 'node:url';
import { configDefaults, defineConfig, mergeConfig } from 'vitest/config';
import base from '../../vitest.config.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

export default mergeConfig(
  base,
  defineConfig({
    root,
    cacheDir: `${root}.cache/ipvs-vm/vite`,
    test: {
      exclude: [...configDefaults.exclude, 'test/ipvs-vm/**'],
    },
  }),
);
