/**
 * Start-up warm-up of the blob path (issue 7). A fresh Node process runs its code unoptimized
 * until V8 has seen it run for a while, and grows its heap as it goes: the first large cold pull
 * after a start took ~0.1 CPU-second more (a sixth of the mirror's CPU for a 256 MiB layer) than
 * the same pull in a process that had moved 64 MiB before. Nodes pull the most right after a
 * restart, so the server runs one synthetic fill end to end before it listens: a loopback
 * source served by node:http, fetched with undici, staged, hashed and written to a temp file in
 * the cache (removed after, never committed), and followed by a reader that sends it through an
 * HTTP response, as a client's cold pull would, to a loopback socket that discards it. It takes
 * ~0.2 s of start-up and never competes with a client's first pull. Nothing leaves the machine
 * and nothing is cached.
 */
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { Agent, request } from 'undici';
import { newHasher, parseDigest } from '../oci/index.ts';
import type { BlobStore } from '../store/index.ts';
import { BlobFill } from './blob-fill.ts';

const PATTERN_BYTES = 1024 * 1024;

function listen(server: Server): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  });
}

function close(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

/**
 * GETs `url` on a raw socket reading into one reused buffer, and resolves once `bodyBytes` of body
 * arrived: the client side of the warm-up allocates nothing, so it adds no garbage of its own.
 */
function fetchAndDiscard(url: string, bodyBytes: number): Promise<void> {
  const { hostname, port, pathname } = new URL(url);
  return new Promise((resolve, reject) => {
    let headerEnd = -1;
    let total = 0;
    let head = '';
    const socket = connect({
      host: hostname,
      port: Number(port),
      onread: {
        buffer: Buffer.allocUnsafe(256 * 1024),
        callback: (n: number, buf: Uint8Array): boolean => {
          total += n;
          if (headerEnd < 0) {
            head += Buffer.from(buf.buffer, buf.byteOffset, n).toString('latin1');
            const at = head.indexOf('\r\n\r\n');
            if (at >= 0) headerEnd = at + 4;
          }
          if (headerEnd >= 0 && total - headerEnd >= bodyBytes) {
            socket.destroy();
            resolve();
          }
          return true;
        },
      },
    });
    socket.once('connect', () => socket.write(`GET ${pathname} HTTP/1.1\r\nHost: ${hostname}\r\nConnection: close\r\n\r\n`));
    socket.once('error', reject);
    socket.once('close', () => reject(new Error(`warm-up reader got ${Math.max(0, total - headerEnd)} of ${bodyBytes} bytes`)));
  });
}

/** Moves `mib` MiB through a fill and a reader; resolves with the time it took. */
export async function warmUp(store: BlobStore, mib = 32): Promise<{ bytes: number; ms: number }> {
  const started = performance.now();
  const pattern = Buffer.alloc(PATTERN_BYTES);
  for (let i = 0; i < PATTERN_BYTES; i++) pattern[i] = (i * 31 + (i >>> 12)) & 0xff;
  const size = mib * PATTERN_BYTES;
  const hasher = newHasher('sha256');
  for (let i = 0; i < mib; i++) hasher.update(pattern);
  const digest = parseDigest(`sha256:${hasher.digest('hex')}`);

  // The "upstream": the pattern, mib times.
  const source = createServer((_req, res) => {
    res.writeHead(200, { 'Content-Length': size, 'Content-Type': 'application/octet-stream' });
    let sent = 0;
    const more = (): void => {
      while (sent < mib) {
        sent++;
        if (!res.write(pattern)) {
          res.once('drain', more);
          return;
        }
      }
      res.end();
    };
    more();
  });
  let fill: BlobFill | undefined;
  // The mirror's side of a client's pull: a response following the fill.
  const front = createServer((_req, res) => {
    const f = fill;
    if (f === undefined) return void res.writeHead(503).end();
    f.acquire();
    res.writeHead(200, { 'Content-Length': size });
    f.sendTo(res).catch(() => res.destroy());
  });
  const agent = new Agent({ connections: 1 });
  try {
    const [sourceUrl, frontUrl] = await Promise.all([listen(source), listen(front)]);
    const upstream = await request(`${sourceUrl}/blob`, { dispatcher: agent });
    const writer = await store.begin(digest, size);
    fill = new BlobFill(writer, size);
    const filled = fill.download(upstream.body);
    const client = fetchAndDiscard(`${frontUrl}/blob`, size);
    try {
      await Promise.all([filled, client]);
    } finally {
      upstream.body.destroy();
      await writer.abort();
      fill.release(); // the filler's reference: closes the temp file's handle
    }
    return { bytes: size, ms: Math.round(performance.now() - started) };
  } finally {
    await Promise.all([close(source), close(front), agent.close()]);
  }
}
