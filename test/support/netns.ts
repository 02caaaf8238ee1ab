/**
 * Throw-away network namespaces for kernel tests: unique names, removed even when a test fails.
 */
import { execa } from 'execa';

let counter = 0;

export async function withNetns<T>(fn: (name: string) => Promise<T>): Promise<T> {
  const name = `kpk${process.pid % 100000}x${counter++}`;
  await execa('ip', ['netns', 'add', name]);
  try {
    return await fn(name);
  } finally {
    await execa('ip', ['netns', 'del', name], { reject: false });
  }
}
