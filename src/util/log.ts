/**
 * @module util/log
 * pino loggers, created at the edge and passed down; never a module singleton.
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import { textDestination } from './log-text.ts';

export type { Logger };

/** Upstream's `-v` levels on pino's: 0–2 info, 3–4 debug, 5+ trace. */
export function levelForVerbosity(v: number): 'info' | 'debug' | 'trace' {
  return v >= 5 ? 'trace' : v >= 3 ? 'debug' : 'info';
}

/** A logger at `-v` verbosity writing JSON lines (default) or, with `format: 'text'`, readable lines to stderr. */
export function createLogger(
  verbosity: number,
  destination: DestinationStream = pino.destination(2),
  format: 'json' | 'text' = 'json',
): Logger {
  if (format === 'text') destination = textDestination(destination);
  return pino(
    { level: levelForVerbosity(verbosity), base: undefined, timestamp: pino.stdTimeFunctions.isoTime },
    destination,
  );
}
