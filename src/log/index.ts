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
 * callback, which under load was tens of MiB of V8 old generation (issue 7). `format` "text"
 * turns each line into a readable one (TextDestination) on the same destination.
 */
export function createLogger(level: LevelWithSilent, destination?: DestinationStream, format: 'json' | 'text' = 'json'): Logger {
  const sink = destination ?? pino.destination({ fd: 1, sync: true });
  const out = format === 'text' ? new TextDestination((line) => sink.write(line)) : sink;
  return pino({ level, base: BASE, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, timestamp: pino.stdTimeFunctions.isoTime }, out);
}

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** Fields every line has, shown in the line's head (or not at all) in the text format. */
const HEAD_FIELDS = new Set(['time', 'level', 'msg', 'service', 'pid', 'hostname']);

/** One field as `key=value`: strings bare unless they hold spaces, quotes or `=`; objects as JSON. */
function textField(key: string, v: unknown): string {
  if (typeof v === 'string') return `${key}=${/[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v}`;
  if (typeof v === 'object' && v !== null && 'stack' in v && typeof (v as { stack: unknown }).stack === 'string') {
    return `${key}=${JSON.stringify((v as { message?: unknown }).message ?? '')}\n${(v as { stack: string }).stack}`;
  }
  return `${key}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`;
}

/**
 * `[log] format = "text"`: each JSON line pino writes (already redacted) becomes one readable line,
 * `2026-12-02T12:00:00.000Z INFO  regmirror listening listen=127.0.0.1:5000 port=5000`.
 */
export class TextDestination implements DestinationStream {
  constructor(private readonly sink: (line: string) => unknown) {}

  write(json: string): void {
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(json) as Record<string, unknown>;
    } catch {
      this.sink(json);
      return;
    }
    const level = LEVEL_NAMES[o.level as number] ?? String(o.level);
    const parts = [String(o.time ?? ''), level.padEnd(5), String(o.msg ?? '')];
    for (const [k, v] of Object.entries(o)) {
      if (!HEAD_FIELDS.has(k) && v !== undefined) parts.push(textField(k, v));
    }
    this.sink(`${parts.join(' ')}\n`);
  }
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
