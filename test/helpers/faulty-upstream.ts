/**
 * A tiny registry that misbehaves on purpose, for the failure paths a real registry won't produce:
 * `cut` closes the connection halfway through a blob body, `wrong` sends the right length of the
 * wrong bytes, `good` serves the blob properly, `relative-redirect` first answers with a 302 whose
 * Location is relative. Counts blob GETs.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export type FaultMode = 'cut' | 'wrong' | 'good' | 'relative-redirect';

export interface FaultyUpstream {
  url: string;
  mode: FaultMode;
  blobGets: number;
  close(): Promise<void>;
}

export async function startFaultyUpstream(blobs: Map<string, Buffer>): Promise<FaultyUpstream> {
  const state: FaultyUpstream = { url: '', mode: 'cut', blobGets: 0, close: async () => undefined };
  const server: Server = createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/v2/' || url === '/v2') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    if (state.mode === 'relative-redirect' && !url.endsWith('?moved=1')) {
      const d = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url)?.[1] ?? '';
      res.writeHead(302, { location: `../../moved/blobs/${d}?moved=1` }).end();
      return;
    }
    const m = /\/blobs\/(sha256:[0-9a-f]{64})(?:\?moved=1)?$/.exec(url);
    const body = m === null ? undefined : blobs.get(m[1] ?? '');
    if (body === undefined) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}');
      return;
    }
    if (req.method === 'HEAD') {
      res.writeHead(200, { 'content-length': body.length }).end();
      return;
    }
    state.blobGets++;
    res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' });
    if (state.mode === 'good' || state.mode === 'relative-redirect') {
      res.end(body);
    } else if (state.mode === 'wrong') {
      const bad = Buffer.from(body);
      bad[bad.length >> 1] = (bad[bad.length >> 1] ?? 0) ^ 0xff;
      res.end(bad);
    } else {
      res.write(body.subarray(0, body.length >> 1), () => setTimeout(() => res.socket?.destroy(), 50));
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.close = () =>
    new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return state;
}
