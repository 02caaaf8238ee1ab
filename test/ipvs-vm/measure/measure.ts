/**
 * Measures Node process starts inside the IPVS VM (one boot): node test/ipvs-vm/measure/measure.ts
 * Builds the kproxy bundle, fills a compile cache on the host (.cache/measure/cc-host), then runs
 * measure-in-vm.sh in the VM and prints its table. About 10–15 minutes of VM time.
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { NODE, REPO_ROOT, buildKproxyBundle, runInIpvsVm } from '../run-in-vm.ts';

const launcher = await buildKproxyBundle();
const ccHost = join(REPO_ROOT, '.cache/measure/cc-host');
rmSync(ccHost, { recursive: true, force: true });
const env = { ...process.env, NODE_COMPILE_CACHE: ccHost };
const host = (cmd: string, args: string[], input = ''): void => {
  spawnSync(cmd, args, { cwd: REPO_ROOT, env, input, stdio: ['pipe', 'ignore', 'ignore'] });
};
host(join(REPO_ROOT, 'bin/kproxy'), ['dump', '--manifests', 'examples', '--hostname-override', 'node-a']);
host(launcher, ['dump', '--manifests', 'examples', '--hostname-override', 'node-a']);
host(NODE, ['--disable-warning=ExperimentalWarning', 'src/sandbox/agent.ts', 'm'], '\n');
host(NODE, [
  'node_modules/vitest/vitest.mjs',
  'run',
  '--configLoader',
  'native',
  '--config',
  'test/ipvs-vm/measure/vitest.trivial.config.ts',
]);
const r = await runInIpvsVm('sh test/ipvs-vm/measure/measure-in-vm.sh', {
  env: { KPROXY_BUNDLE: launcher },
  timeoutSeconds: 3600,
  onOutput: (d) => process.stdout.write(d),
});
process.stdout.write(`${r.runnerLog}exit ${r.exitCode}, results in ${r.resultsDir}\n`);
process.exitCode = r.exitCode;
