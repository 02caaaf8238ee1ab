/**
 * kube-proxy's invocation through `main` (no command), the reload plan, the start-up line's
 * non-default settings and the text log format: the parts of the drop-in that need no kernel.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import { packageVersion } from '../../src/cli/version.ts';
import { loadProxyConfig, type Loaded } from '../../src/config/load.ts';
import { nonDefaultSettings } from '../../src/config/non-default.ts';
import { reloadPlan } from '../../src/daemon/config-reload.ts';
import { textLine } from '../../src/util/log-text.ts';

const dir = mkdtempSync(join(tmpdir(), 'k11-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function capture(): { out: Writable; text: () => string } {
  const chunks: string[] = [];
  const out = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return { out, text: () => chunks.join('') };
}

const V2 = 'apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n';

describe('no command: kube-proxy', () => {
  it('--version, anywhere among the flags', async () => {
    for (const argv of [['--version'], ['--config=x', '--version'], ['--version=true']]) {
      const c = capture();
      expect(await main(argv, c.out)).toBe(0);
      expect(c.text()).toBe(`kproxy ${packageVersion()}\n`);
    }
  });

  it('--write-config-to writes the effective configuration in the file version and exits', async () => {
    const config = join(dir, 'in.yaml');
    writeFileSync(config, `${V2}syncPeriod: 10s\nlinux:\n  masqueradeAll: true\n`);
    const out = join(dir, 'out.yaml');
    expect(await main([`--config=${config}`, '--hostname-override=n1', `--write-config-to=${out}`])).toBe(0);
    const written = readFileSync(out, 'utf8');
    expect(written).toMatch(/^apiVersion: kubeproxy.config.k8s.io\/v1alpha2$/m);
    expect(written).toMatch(/^syncPeriod: 10s$/m);
    expect(written).toMatch(/^ {2}masqueradeAll: true$/m);
  });

  it('the upstream-only flags belong to the invocation without a command; a bad flag is a usage error', async () => {
    expect(await main(['run', '--init-only'])).toBe(2);
    expect(await main(['--no-such-flag'])).toBe(2);
    expect(await main(['--cleanup', '--init-only'])).toBe(2);
  });
});

describe('config reload plan', () => {
  const load = (argv: string[]): Loaded =>
    loadProxyConfig({ argv: ['--config=/c', ...argv], hostname: 'n1', readFile: () => V2 });

  it('live settings, restart-only settings', () => {
    const running = load([]);
    expect(reloadPlan(running, load(['--masquerade-all', '-v', '4']))).toEqual({
      restartNeeded: [],
      live: ['masqueradeAll', 'verbosity'],
    });
    expect(reloadPlan(running, load(['--proxy-mode=iptables', '--healthz-bind-address=127.0.0.1:1']))).toEqual({
      restartNeeded: ['mode', 'healthzBindAddress'],
      // What else the new mode changes is reported, never applied.
      live: ['nodePortAddresses'],
    });
    expect(reloadPlan(running, load(['--kubeconfig=/other']))).toEqual({
      restartNeeded: ['clientConnection.kubeconfig'],
      live: [],
    });
  });
});

describe('start-up line', () => {
  it('lists only what differs from the defaults of the mode and version', () => {
    const v2 = loadProxyConfig({
      argv: ['--config=/c', '--conntrack-max-per-core=0'],
      hostname: 'n1',
      readFile: () => `${V2}mode: iptables\n`,
    });
    // iptables mode's NodePort default and v1alpha2's localhostNodePorts default are not listed.
    expect(nonDefaultSettings(v2.config, 'v1alpha2')).toEqual({ 'nodeSetup.conntrack.maxPerCore': 0 });
  });
});

describe('--logging-format text', () => {
  it('one readable line per entry, fields that split back', () => {
    expect(
      textLine('{"level":40,"time":"2026-11-30T18:00:00.000Z","msg":"cannot set","path":"/proc/x","err":"EACCES: no"}'),
    ).toBe('2026-11-30T18:00:00.000Z WARN cannot set path=/proc/x err="EACCES: no"\n');
  });
});
