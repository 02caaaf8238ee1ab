/**
 * The daemon's tool spawner (src/kernel/spawner.ts): the same contract as `execProgram` — exit
 * codes, stdout, stderr, stdin of any size, 127 for a missing tool, abort kills the run — and the
 * same lifetime guarantee: kill -9 of the daemon kills the spawner and the tools it runs.
 */
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_TIMED_OUT, withTimeout } from '../../src/kernel/exec.ts';
import { startSpawner } from '../../src/kernel/spawner.ts';

const alive = async (marker: string): Promise<boolean> =>
  (await execa('pgrep', ['-f', marker], { reject: false })).exitCode === 0;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the tool spawner', () => {
  const spawner = startSpawner();
  afterAll(() => spawner.stop());

  it('runs a program with its arguments and stdin; exit code, stdout and stderr come back', async () => {
    const r = await spawner.exec('sh', ['-c', 'cat; echo "$0" >&2; exit 3', 'an argument'], 'from stdin\n');
    expect(r).toEqual({ exitCode: 3, stdout: 'from stdin\n', stderr: 'an argument\n' });
  });

  it('passes a 16 MiB transaction through whole, and runs concurrent requests independently', async () => {
    const big = 'x'.repeat(16 * 1024 * 1024);
    const [a, b, c] = await Promise.all([
      spawner.exec('wc', ['-c'], big),
      spawner.exec('echo', ['b']),
      spawner.exec('sh', ['-c', 'exit 7']),
    ]);
    expect(a?.stdout.trim()).toBe(String(big.length));
    expect(b?.stdout).toBe('b\n');
    expect(c?.exitCode).toBe(7);
  });

  it('a missing tool is exit 127', async () => {
    const r = await spawner.exec('kproxy-no-such-tool', [], 'x');
    expect(r.exitCode).toBe(127);
  });

  it('a run past its time is killed (withTimeout), and the spawner keeps serving', async () => {
    const marker = `${(Math.random() * 1e6) | 0}.75`;
    const bounded = withTimeout(spawner.exec, 300);
    const r = await bounded('sleep', [marker]);
    expect(r.exitCode).toBe(EXIT_TIMED_OUT);
    await sleep(300);
    expect(await alive(`sleep ${marker}`)).toBe(false);
    expect((await spawner.exec('echo', ['still here'])).stdout).toBe('still here\n');
  });

  it('after stop, the next run starts a new spawner', async () => {
    const s = startSpawner();
    expect((await s.exec('echo', ['one'])).stdout).toBe('one\n');
    s.stop();
    expect((await s.exec('echo', ['two'])).stdout).toBe('two\n');
    s.stop();
  });

  it('kill -9 of the daemon kills the spawner and a tool fed on stdin', async () => {
    const marker = `${(Math.random() * 1e6) | 0}.5`;
    const module = new URL('../../src/kernel/spawner.ts', import.meta.url).href;
    const child = execa(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { startSpawner } = await import(${JSON.stringify(module)}); await startSpawner().exec('sleep', [${JSON.stringify(marker)}], 'x'.repeat(200000));`,
      ],
      { reject: false },
    );
    for (let i = 0; i < 100 && !(await alive(`sleep ${marker}`)); i++) await sleep(50);
    expect(await alive(`sleep ${marker}`)).toBe(true);
    const spawners = (await execa('pgrep', ['-P', String(child.pid)])).stdout.split('\n').filter(Boolean);
    expect(spawners).toHaveLength(1);
    child.kill('SIGKILL');
    await child;
    await sleep(500);
    expect(await alive(`sleep ${marker}`)).toBe(false);
    // Gone, or a zombie waiting for init to reap it (here PID 1 does not reap at once).
    const gone = (pid: string) =>
      execa('ps', ['-o', 'stat=', '-p', pid], { reject: false }).then(
        (r) => r.stdout.trim() === '' || r.stdout.startsWith('Z'),
      );
    expect(await gone(spawners[0] as string)).toBe(true);
  });
});
