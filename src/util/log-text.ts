/**
 * @module util/log-text
 * `--logging-format text`: pino's JSON lines rewritten as one readable line each, klog-like
 * (`2026-11-30T18:00:00.000Z INFO kproxy started mode=nftables node=node-a`). Values are
 * JSON-quoted when they are not plain words, so a line can always be split back into its fields.
 */
import type { DestinationStream } from 'pino';

const LEVELS: Readonly<Record<number, string>> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};

export function textLine(json: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const { time, level, msg, ...fields } = entry;
  const parts = [String(time ?? ''), LEVELS[Number(level)] ?? String(level), String(msg ?? '')];
  for (const [k, v] of Object.entries(fields)) parts.push(`${k}=${fieldText(v)}`);
  return `${parts.join(' ')}\n`;
}

function fieldText(v: unknown): string {
  if (typeof v === 'string' && /^[\w./:@-]+$/.test(v)) return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

/** A pino destination writing text lines to `out`. */
export function textDestination(out: { write(s: string): unknown }): DestinationStream {
  return { write: (line: string) => void out.write(textLine(line)) };
}
