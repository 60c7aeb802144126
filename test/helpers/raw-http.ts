/**
 * A raw-socket HTTP client for tests that must see the framing exactly as a client would: it
 * speaks HTTP/1.0 or HTTP/1.1 (Node's own client only speaks 1.1), and reports whether the body
 * ended the way its framing says a complete body ends (all Content-Length bytes, the last chunk of
 * a chunked body, or a clean close for a close-delimited one). A "short success" is a 200 whose
 * framing looked complete but whose bytes are wrong.
 */
import { connect } from 'node:net';

export interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  /** The body ended as its framing says a complete body ends. */
  complete: boolean;
}

function dechunk(raw: Buffer): { body: Buffer; complete: boolean } {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = raw.indexOf('\r\n', at);
    if (eol === -1) return { body: Buffer.concat(parts), complete: false };
    const size = parseInt(raw.subarray(at, eol).toString('latin1'), 16);
    if (Number.isNaN(size)) return { body: Buffer.concat(parts), complete: false };
    if (size === 0) return { body: Buffer.concat(parts), complete: raw.indexOf('\r\n', eol + 2) !== -1 };
    if (raw.length < eol + 2 + size + 2) {
      parts.push(raw.subarray(eol + 2, Math.min(raw.length, eol + 2 + size)));
      return { body: Buffer.concat(parts), complete: false };
    }
    parts.push(raw.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

/** Sends `GET path` (or another method) over HTTP/`version` and reads the answer to the close. */
export function rawHttp(port: number, path: string, version: '1.0' | '1.1', opts: { method?: string; headers?: Record<string, string>; timeoutMs?: number; raw?: string } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let cleanEnd = false;
    const timer = setTimeout(() => sock.destroy(new Error(`${path}: no answer in ${opts.timeoutMs ?? 20_000} ms`)), opts.timeoutMs ?? 20_000);
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('end', () => {
      cleanEnd = true;
    });
    sock.on('error', () => undefined); // a reset is a failed transfer: judged below
    sock.on('close', (hadError) => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      if (split === -1) {
        if (all.length === 0) return resolve({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false });
        return reject(new Error(`${path}: no complete response head: ${all.subarray(0, 200).toString('latin1')}`));
      }
      const [statusLine = '', ...lines] = all.subarray(0, split).toString('latin1').split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      const status = Number(statusLine.split(' ')[1] ?? 0);
      const rest = all.subarray(split + 4);
      const method = opts.method ?? 'GET';
      if (method === 'HEAD' || status === 204 || status === 304) return resolve({ status, headers, body: Buffer.alloc(0), complete: !hadError });
      if (headers['transfer-encoding']?.toLowerCase() === 'chunked') {
        const d = dechunk(rest);
        return resolve({ status, headers, body: d.body, complete: d.complete });
      }
      if (headers['content-length'] !== undefined) {
        const n = Number(headers['content-length']);
        return resolve({ status, headers, body: rest.subarray(0, n), complete: rest.length >= n });
      }
      resolve({ status, headers, body: rest, complete: cleanEnd && !hadError });
    });
    const extra = Object.entries(opts.headers ?? {}).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    sock.write(opts.raw ?? `${opts.method ?? 'GET'} ${path} HTTP/${version}\r\nHost: 127.0.0.1:${port}\r\n${version === '1.1' ? 'Connection: close\r\n' : ''}${extra}\r\n`);
  });
}
