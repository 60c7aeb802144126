/**
 * pino logger with secret redaction: authorization headers, cookies, passwords and tokens are
 * censored wherever they appear in structured fields. Messages must never interpolate secrets.
 */
import { pino, type Logger, type LevelWithSilent, type DestinationStream } from 'pino';

export type { Logger };

/** Field paths censored in every log line. */
export const REDACT_PATHS = [
  'authorization',
  'password',
  'token',
  'secret',
  '*.authorization',
  '*.Authorization',
  '*.password',
  '*.token',
  '*.secret',
  '*.cookie',
  'headers.authorization',
  'headers.cookie',
  'req.headers.authorization',
  'req.headers.cookie',
  'credentials',
  '*.credentials',
];

const BASE = { service: 'regmirror' };

/**
 * Creates the process logger. `destination` defaults to stdout, written synchronously (pino's own
 * default): a line is out before the call returns, so none is lost when the process dies, and the
 * mirror holds no log backlog. Asynchronous writes kept every line in memory until its write
 * callback, which under load was tens of MiB of V8 old generation (issue 7).
 */
export function createLogger(level: LevelWithSilent, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: BASE,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ fd: 1, sync: true }),
  );
}

/**
 * The access log: one line per request, on `log`'s destination with its level, base and time
 * format, so both streams interleave as one. Its fields are built by the server from values it
 * checked (request id, method, path without the query, route, status, timing), never headers or
 * credentials, so it skips redaction, which was about a third of the per-request CPU.
 */
export function accessLogger(log: Logger): Logger {
  const destination = (log as unknown as Record<symbol, DestinationStream>)[pino.symbols.streamSym];
  return pino({ level: log.level, base: BASE, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}

/** Removes userinfo and query strings from a URL before it is logged (presigned URLs carry secrets). */
export function safeUrl(url: string | URL): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return '[unparseable url]';
  }
}
