// A trivial test for measure-in-vm.sh: what starting vitest costs inside the VM.
import { expect, it } from 'vitest';

it('adds', () => {
  expect(1 + 1).toBe(2);
});
