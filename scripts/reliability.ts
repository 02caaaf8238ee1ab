/**
 * `npm run reliability [-- --long] [-- --only churn,crash] [-- --modes nftables]`: the full-length
 * reliability tests (test/reliability/), then the table the README shows (test, load, faults,
 * result). `make test` runs the short versions of the same files; this runs each at full length:
 * 60 s of churn, 100 kills, a 5-minute API outage, 10× the generated hostile input; `--long` adds
 * the 1,000,000-event long run (without it the long run is its short version). Needs root, as the
 * tests build network namespaces. The figures (JSON) stay in bench-results/reliability/<time>/.
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';

const { values } = parseArgs({
  options: {
    long: { type: 'boolean', default: false },
    only: { type: 'string' },
    modes: { type: 'string' },
    short: { type: 'boolean', default: false },
  },
});

const FILES: Record<string, string> = {
  churn: 'test/reliability/churn.test.ts',
  crash: 'test/reliability/crash.test.ts',
  'kernel-faults': 'test/reliability/kernel-faults.test.ts',
  'api-faults': 'test/reliability/api-faults.test.ts',
  'hostile-input': 'test/reliability/hostile-input.test.ts',
  udp: 'test/reliability/udp.test.ts',
  'long-run': 'test/reliability/long-run.test.ts',
  'least-privilege': 'test/reliability/least-privilege.test.ts',
};
const chosen = values.only ? values.only.split(',') : Object.keys(FILES);
const unknown = chosen.filter((c) => !(c in FILES));
if (unknown.length > 0) {
  process.stderr.write(`reliability: unknown test(s) ${unknown.join(', ')}; known: ${Object.keys(FILES).join(', ')}\n`);
  process.exit(2);
}
const out = join('bench-results', 'reliability', new Date().toISOString().replace(/[:.]/g, '-'));
mkdirSync(out, { recursive: true });
const env = {
  ...process.env,
  KPROXY_RELIABILITY: values.short ? 'short' : 'full',
  KPROXY_RELIABILITY_OUT: out,
  ...(values.long ? { KPROXY_RELIABILITY_LONG: '1' } : {}),
  ...(values.modes ? { KPROXY_RELIABILITY_MODES: values.modes } : {}),
};
const started = Date.now();
const r = spawnSync('npx', ['vitest', 'run', ...chosen.map((c) => FILES[c] as string)], { stdio: 'inherit', env });

/** Table order: the files' order; a file's extra rows (least-privilege's secrets-in-logs) after it. */
function order(test: string): number {
  const i = Object.keys(FILES).indexOf(test === 'secrets-in-logs' ? 'least-privilege' : test);
  return i * 2 + (test === 'secrets-in-logs' ? 1 : 0);
}

interface Figures {
  test: string;
  mode: string;
  load: string;
  faults: string;
  result: string;
  pass: boolean;
  full?: boolean;
}
const rows: Figures[] = readdirSync(out)
  .filter((f) => f.endsWith('.json'))
  .map((f) => JSON.parse(readFileSync(join(out, f), 'utf8')) as Figures)
  .sort((a, b) => order(a.test) - order(b.test) || a.mode.localeCompare(b.mode));
const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
const lines = [
  '| test | mode | load | faults | result | targets |',
  '|---|---|---|---|---|---|',
  ...rows.map(
    (f) =>
      `| ${f.test} | ${f.mode} | ${cell(f.load)} | ${cell(f.faults)} | ${cell(f.result)} | ${f.pass ? 'met' : '**missed**'} |`,
  ),
];
process.stdout.write(
  `\nReliability (${values.short ? 'short' : 'full'} versions${values.long ? ', long run 1,000,000 events' : ''}; ${Math.round((Date.now() - started) / 60_000)} min; figures in ${out}):\n\n${lines.join('\n')}\n`,
);
process.exit(r.status ?? 1);
