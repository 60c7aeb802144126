/**
 * A registry that misbehaves on purpose, per blob, for the fault suites of issue 14: each blob is
 * served with a framing (`length`: Content-Length; `chunked`; `close`: HTTP/1.1 200 with
 * Connection: close, no length, the body ended by closing the connection) and a fault (`good`,
 * `cut` at a given offset, `wrong`: one byte flipped, `slow`: sent in 64 KiB pieces with a pause
 * between). It also serves image manifests by tag and digest, and can sit behind Basic auth and
 * redirect blob GETs to another origin (`redirectBlobsTo`) or, per blob, to a relative Location on
 * itself (`relativeRedirect`). Counts blob GETs per digest.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Framing = 'length' | 'chunked' | 'close';
export type Fault = 'good' | 'cut' | 'wrong' | 'slow';

export interface BlobPlan {
  framing: Framing;
  fault: Fault;
  /** For `cut`: bytes sent before the cut (default: half). */
  cutAt?: number;
  /** For `slow`: pause between 64 KiB pieces (default 100 ms). */
  pauseMs?: number;
  /** First answer a 302 with a relative Location (`../../moved/blobs/<digest>?moved=1`), then serve there. */
  relativeRedirect?: boolean;
}

export interface FaultServer {
  url: string;
  port: number;
  blobs: Map<string, Buffer>;
  plans: Map<string, BlobPlan>;
  /** `<repo>:<reference>` (tag or digest) → manifest. */
  manifests: Map<string, { body: Buffer; mediaType: string; digest: string }>;
  blobGets: Map<string, number>;
  /** When set, blob GETs answer 307 to `<redirectBlobsTo>/cdn/<digest>`. */
  redirectBlobsTo?: string;
  /** When set, every /v2 request needs this Basic `user:password` (else 401 with a Basic challenge). */
  basicAuth?: string;
  /** Every request seen: method, url, authorization header. */
  seen: Array<{ method: string; url: string; authorization?: string; body?: string }>;
  close(): Promise<void>;
}

function sendBlob(req: IncomingMessage, res: ServerResponse, body: Buffer, plan: BlobPlan): void {
  const bytes = plan.fault === 'wrong' ? Buffer.from(body) : body;
  if (plan.fault === 'wrong') bytes[bytes.length >> 1] = (bytes[bytes.length >> 1] ?? 0) ^ 0xff;
  const upTo = plan.fault === 'cut' ? (plan.cutAt ?? body.length >> 1) : bytes.length;
  const payload = bytes.subarray(0, upTo);
  if (plan.framing === 'close') {
    const sock = req.socket;
    sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n');
    writeSlowly(sock, payload, plan, () => sock.end());
    return;
  }
  res.writeHead(200, plan.framing === 'length' ? { 'content-type': 'application/octet-stream', 'content-length': body.length } : { 'content-type': 'application/octet-stream' });
  writeSlowly(res, payload, plan, () => {
    if (plan.fault === 'cut') setTimeout(() => req.socket.destroy(), 20);
    else res.end();
  });
}

function writeSlowly(out: NodeJS.WritableStream, payload: Buffer, plan: BlobPlan, done: () => void): void {
  if (plan.fault !== 'slow') {
    out.write(payload, () => done());
    return;
  }
  let at = 0;
  const next = (): void => {
    if (at >= payload.length) return done();
    const piece = payload.subarray(at, at + 64 * 1024);
    at += piece.length;
    out.write(piece, () => setTimeout(next, plan.pauseMs ?? 100));
  };
  next();
}

export async function startFaultServer(): Promise<FaultServer> {
  const state: FaultServer = { url: '', port: 0, blobs: new Map(), plans: new Map(), manifests: new Map(), blobGets: new Map(), seen: [], close: async () => undefined };
  const server: Server = createServer((req, res) => {
    const url = req.url ?? '/';
    const entry: FaultServer['seen'][number] = { method: req.method ?? 'GET', url };
    if (req.headers.authorization !== undefined) entry.authorization = req.headers.authorization;
    state.seen.push(entry);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (chunks.length > 0) entry.body = Buffer.concat(chunks).toString('utf8');
      handle(req, res, url);
    });
  });
  const handle = (req: IncomingMessage, res: ServerResponse, url: string): void => {
    const cdn = /^\/cdn\/(sha256:[0-9a-f]{64})/.exec(url);
    if (cdn !== null || url.startsWith('/token')) {
      // The "CDN" (another origin in tests that point redirectBlobsTo at a second FaultServer):
      // it challenges every blob request for a bearer token from its own realm.
      const realm = `${state.url}/token`;
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="cdn",scope="blob"`, 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}');
      return;
    }
    if (state.basicAuth !== undefined && req.headers.authorization !== `Basic ${Buffer.from(state.basicAuth).toString('base64')}`) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="fault"', 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED","message":"login"}]}');
      return;
    }
    if (url === '/v2/' || url === '/v2') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    const man = /^\/v2\/(.+)\/manifests\/([^/?]+)$/.exec(url);
    if (man !== null) {
      const m = state.manifests.get(`${man[1]}:${man[2]}`);
      if (m === undefined) {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}');
        return;
      }
      res.writeHead(200, { 'content-type': m.mediaType, 'content-length': m.body.length, 'docker-content-digest': m.digest });
      res.end(req.method === 'HEAD' ? undefined : m.body);
      return;
    }
    const blob = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})(\?moved=1)?$/.exec(url);
    const body = blob === null ? undefined : state.blobs.get(blob[1] ?? '');
    if (blob === null || body === undefined) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}');
      return;
    }
    const digest = blob[1] ?? '';
    if (req.method === 'HEAD') {
      res.writeHead(200, { 'content-length': body.length }).end();
      return;
    }
    const plan = state.plans.get(digest) ?? { framing: 'length', fault: 'good' };
    if (plan.relativeRedirect === true && blob[2] === undefined) {
      res.writeHead(302, { location: `../../moved/blobs/${digest}?moved=1` }).end();
      return;
    }
    state.blobGets.set(digest, (state.blobGets.get(digest) ?? 0) + 1);
    if (state.redirectBlobsTo !== undefined) {
      res.writeHead(307, { location: `${state.redirectBlobsTo}/cdn/${digest}` }).end();
      return;
    }
    sendBlob(req, res, body, plan);
  };
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.port = (server.address() as AddressInfo).port;
  state.url = `http://127.0.0.1:${state.port}`;
  state.close = () =>
    new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return state;
}
