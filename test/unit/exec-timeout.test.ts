/**
 * The exec seam's bound on kernel tool runs (issue 10, item 3): a tool that hangs is killed and
 * answered as exit 124 with a clear message, whatever the inner runner does; `--kernel-tool-timeout`
 * configures it; FailureLog logs a repeating failure once.
 */
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { loadProxyConfig } from '../../src/config/load.ts';
import { FailureLog } from '../../src/daemon/failure-log.ts';
import { EXIT_TIMED_OUT, execProgram, inNetns, withTimeout, type Exec } from '../../src/kernel/exec.ts';
import { NftError } from '../../src/backends/nftables/kernel/nft.ts';
import { Nft } from '../../src/backends/nftables/kernel/nft.ts';
import { captureLog } from '../support/daemon-harness.ts';

const alive = async (marker: string): Promise<boolean> =>
  (await execa('pgrep', ['-f', marker], { reject: false })).exitCode === 0;

describe('withTimeout', () => {
  it('kills a real process that does not finish and answers 124', async () => {
    const marker = `${(Math.random() * 1e6) | 0}.5`;
    const exec = withTimeout(execProgram, 300);
    const t0 = performance.now();
    const r = await exec('sleep', [marker]);
    const took = performance.now() - t0;
    expect(r.exitCode).toBe(EXIT_TIMED_OUT);
    expect(r.stderr).toBe('sleep did not finish within 300 ms; killed');
    expect(took).toBeGreaterThanOrEqual(290);
    expect(took).toBeLessThan(1500);
    // SIGTERM went to the process: it is gone (give the kernel a moment to reap it).
    await new Promise((r) => setTimeout(r, 200));
    expect(await alive(`sleep ${marker}`)).toBe(false);
  });

  it('bounds an injected runner that never answers, and names the tool behind `ip netns exec`', async () => {
    let aborted: unknown;
    const hang: Exec = (_f, _a, _s, options) =>
      new Promise(() => {
        options?.signal?.addEventListener('abort', () => {
          aborted = options.signal?.reason;
        });
      });
    const exec = withTimeout(inNetns('somewhere', hang), 100);
    const r = await exec('nft', ['-f', '-'], 'add table ip x\n');
    expect(r).toEqual({ exitCode: 124, stdout: '', stderr: 'nft did not finish within 100 ms; killed' });
    expect(String(aborted)).toContain('did not finish within 100 ms');
  });

  it('leaves fast runs alone and is off for 0', async () => {
    const r = await withTimeout(execProgram, 5000)('true', []);
    expect(r.exitCode).toBe(0);
    const inner: Exec = async () => ({ exitCode: 0, stdout: 'x', stderr: '' });
    expect(withTimeout(inner, 0)).toBe(inner);
  });

  it('a timed-out nft is an Unavailable NftError carrying the message', async () => {
    const hang: Exec = () => new Promise(() => undefined);
    const nft = new Nft(withTimeout(hang, 50));
    const err = await nft.apply([{ text: 'add table ip kproxy' }] as never).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NftError);
    expect((err as NftError).code).toBe('Unavailable');
    expect((err as NftError).message).toBe('nft did not finish within 50 ms; killed');
  });
});

describe('--kernel-tool-timeout', () => {
  const load = (argv: string[]) =>
    loadProxyConfig({ argv, hostname: 'n', readFile: () => '', commandFlags: ['manifests'] });
  it('is a positive duration; absent means the default', () => {
    expect(load(['--kernel-tool-timeout=15s']).config.kernelToolTimeoutMs).toBe(15_000);
    expect(load([]).config.kernelToolTimeoutMs).toBeUndefined();
    expect(() => load(['--kernel-tool-timeout=0s'])).toThrow(/--kernel-tool-timeout: must be a positive duration/);
    expect(() => load(['--kernel-tool-timeout=soon'])).toThrow(/--kernel-tool-timeout/);
  });
});

describe('FailureLog', () => {
  it('logs each distinct failure once per run of failures, repeats at debug, and one line on recovery', () => {
    const { log, lines } = captureLog('debug');
    let now = 1000;
    const f = new FailureLog({ log, what: 'sync', now: () => now });
    for (let i = 0; i < 50; i++) f.failed(new Error('nft rejected the transaction: boom'));
    f.failed(new Error('nft did not finish within 100 ms; killed'));
    now = 6000;
    f.succeeded();
    f.succeeded();
    const errors = lines.filter((l) => l.level === 50);
    expect(errors.map((l) => l['err'])).toEqual([
      'nft rejected the transaction: boom',
      'nft did not finish within 100 ms; killed',
    ]);
    expect(lines.filter((l) => l.level === 20)).toHaveLength(49);
    const recovered = lines.filter((l) => l.level === 30);
    expect(recovered).toHaveLength(1);
    expect(recovered[0]).toMatchObject({ failures: 51, failingForMs: 5000 });
    // A new run of failures logs the same error again.
    f.failed(new Error('nft rejected the transaction: boom'));
    expect(lines.filter((l) => l.level === 50)).toHaveLength(3);
  });
});

describe('a tool fed on stdin does not outlive kproxy', () => {
  it('kill -9 of the process running it kills the tool too (setpriv --pdeathsig)', async () => {
    const marker = `${(Math.random() * 1e6) | 0}.25`;
    const exec = new URL('../../src/kernel/exec.ts', import.meta.url).href;
    // A kproxy stand-in: starts a tool that reads stdin (as nft -f - does), then waits.
    const child = execa(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { execProgram } = await import(${JSON.stringify(exec)}); await execProgram('sleep', [${JSON.stringify(marker)}], 'x'.repeat(200000));`,
      ],
      { reject: false },
    );
    for (let i = 0; i < 100 && !(await alive(`sleep ${marker}`)); i++) await new Promise((r) => setTimeout(r, 50));
    expect(await alive(`sleep ${marker}`)).toBe(true);
    child.kill('SIGKILL');
    await child;
    await new Promise((r) => setTimeout(r, 300));
    expect(await alive(`sleep ${marker}`)).toBe(false);
  });

  it('a missing tool is still reported as missing (exit 127)', async () => {
    const r = await execProgram('kproxy-no-such-tool', [], 'x');
    expect(r.exitCode).toBe(127);
  });
});
