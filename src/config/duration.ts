/**
 * @module config/duration
 * Go `time.ParseDuration` syntax ("30s", "1m", "500ms", "1h2m", "1.5h", "-2s", "0"), as used by
 * every duration in a KubeProxyConfiguration and by the `--*-sync-period` flags.
 */

const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  '\u00b5s': 1e-3, // micro sign
  '\u03bcs': 1e-3, // Greek mu
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Milliseconds (possibly fractional), or undefined when `text` is not a Go duration. */
export function parseGoDuration(text: string): number | undefined {
  let s = text;
  let sign = 1;
  if (s.startsWith('-') || s.startsWith('+')) {
    if (s.startsWith('-')) sign = -1;
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '') return undefined;
  let total = 0;
  const term = /^(\d*)(?:\.(\d*))?([^\d.]+)/;
  while (s !== '') {
    const m = term.exec(s);
    if (!m) return undefined;
    const whole = m[1] ?? '';
    const frac = m[2];
    const unit = m[3] ?? '';
    // Go requires at least one digit before or after the point.
    if (whole === '' && (frac === undefined || frac === '')) return undefined;
    const factor = UNIT_MS[unit];
    if (factor === undefined) return undefined;
    total += Number(`${whole === '' ? '0' : whole}.${frac ?? '0'}`) * factor;
    s = s.slice(m[0].length);
  }
  if (!Number.isFinite(total)) return undefined;
  return sign * total;
}

/** Text for messages: "1500ms" → "1.5s"-ish round trips are not needed, only readability. */
export function formatMs(ms: number): string {
  if (ms !== 0 && Number.isInteger(ms / 1000)) return `${ms / 1000}s`;
  return `${ms}ms`;
}
