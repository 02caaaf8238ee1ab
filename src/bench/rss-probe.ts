/**
 * @module bench/rss-probe
 * Preloaded into the real bin/kproxy by the bench (`NODE_OPTIONS=--import …/rss-probe.ts`, with
 * `KPBENCH_RSS_FILE` set): when the process exits, writes its own peak RSS in KiB
 * (`process.resourceUsage().maxRSS`: this process only, not nft or iptables-restore) to that file.
 * Changes nothing else; without the variable it does nothing.
 */
import { writeFileSync } from 'node:fs';

const file = process.env['KPBENCH_RSS_FILE'];
if (file) {
  process.on('exit', () => {
    try {
      writeFileSync(file, `${process.resourceUsage().maxRSS}\n`);
    } catch {
      /* the bench reports the figure as missing */
    }
  });
}
