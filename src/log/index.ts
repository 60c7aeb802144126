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

/** Creates the process logger. `destination` defaults to stdout. */
export function createLogger(level: LevelWithSilent, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'regmirror' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
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
