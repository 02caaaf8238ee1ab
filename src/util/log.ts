/**
 * @module util/log
 * pino loggers, created at the edge and passed down; never a module singleton.
 */
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/** Upstream's `-v` levels on pino's: 0–2 info, 3–4 debug, 5+ trace. */
export function levelForVerbosity(v: number): 'info' | 'debug' | 'trace' {
  return v >= 5 ? 'trace' : v >= 3 ? 'debug' : 'info';
}

export function createLogger(verbosity: number, destination: DestinationStream = pino.destination(2)): Logger {
  return pino(
    { level: levelForVerbosity(verbosity), base: undefined, timestamp: pino.stdTimeFunctions.isoTime },
    destination,
  );
}
