/**
 * A small registry behind Bearer token auth, for the upstream auth dance: every /v2 request without
 * a valid token gets a 401 challenge pointing at its /token endpoint; blob GETs answer 307 to a
 * second origin (like object storage). Both servers record every request's headers.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Image } from './fixtures.ts';

export interface Recorded {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** Request body (token POSTs). */
  body?: string;
}

export interface TokenRegistry {
  url: string;
  storageUrl: string;
  requests: Recorded[];
  storageRequests: Recorded[];
  tokenRequests: Recorded[];
  issued: string[];
  /** false: the token endpoint answers OAuth2 POSTs with 404, as GCR does. */
  oauthPost: boolean;
  /** Refresh token accepted by the OAuth2 refresh_token grant (a Docker identitytoken). */
  refreshToken: string;
  /** Accepts `token` as a valid bearer token for the repository (a static token). */
  allowStatic(token: string): void;
  close(): Promise<void>;
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Serves `image` as `<repo>:<tag>`; tokens are accepted only for the scope they were issued for. */
export async function startTokenRegistry(repo: string, tag: string, image: Image, basic?: { username: string; password: string }): Promise<TokenRegistry> {
  const state: TokenRegistry = { url: '', storageUrl: '', requests: [], storageRequests: [], tokenRequests: [], issued: [], oauthPost: true, refreshToken: 'refresh-Rt5-identity-token', allowStatic: () => undefined, close: async () => undefined };
  const blobs = new Map([image.config, ...image.layers].map((b) => [b.digest, b.bytes]));
  const valid = new Map<string, string>();
  const storage = createServer((req, res) => {
    state.storageRequests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const digest = /^\/blob-data\/(sha256:[0-9a-f]{64})/.exec(req.url ?? '')?.[1];
    const body = digest === undefined ? undefined : blobs.get(digest);
    if (body === undefined) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-length': body.length }).end(req.method === 'HEAD' ? undefined : body);
  });
  const registry = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/token') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        state.tokenRequests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
        let scope = url.searchParams.get('scope') ?? '';
        let ok: boolean;
        if (req.method === 'POST') {
          if (!state.oauthPost) return void res.writeHead(404).end('404 page not found');
          const form = new URLSearchParams(body);
          scope = form.get('scope') ?? '';
          ok =
            basic === undefined ||
            (form.get('grant_type') === 'password' && form.get('username') === basic.username && form.get('password') === basic.password) ||
            (form.get('grant_type') === 'refresh_token' && form.get('refresh_token') === state.refreshToken);
        } else {
          ok = basic === undefined || req.headers.authorization === `Basic ${Buffer.from(`${basic.username}:${basic.password}`).toString('base64')}`;
        }
        if (!ok) return void res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
        const token = `tok-${state.issued.length + 1}-${Math.random().toString(36).slice(2)}`;
        state.issued.push(token);
        valid.set(token, scope);
        const answer = req.method === 'POST' ? { access_token: token, expires_in: 300, scope } : { token, expires_in: 300 };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
      });
      return;
    }
    state.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const scope = `repository:${repo}:pull`;
    const auth = req.headers.authorization;
    const token = auth?.startsWith('Bearer ') === true ? auth.slice(7) : undefined;
    if (token === undefined || valid.get(token) !== scope) {
      return void res
        .writeHead(401, {
          'content-type': 'application/json',
          'www-authenticate': `Bearer realm="${state.url}/token",service="token-registry",scope="${scope}"`,
        })
        .end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    if (m === null || m[1] !== repo) return void res.writeHead(404).end();
    if (m[2] === 'manifests') {
      if (m[3] !== tag && m[3] !== image.manifest.digest) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': image.manifest.mediaType, 'docker-content-digest': image.manifest.digest, 'content-length': image.manifest.size });
      return void res.end(req.method === 'HEAD' ? undefined : image.manifest.bytes);
    }
    if (!blobs.has(m[3] ?? '')) return void res.writeHead(404).end();
    res.writeHead(307, { location: `${state.storageUrl}/blob-data/${m[3]}?X-Signature=presigned-secret` }).end();
  });
  state.allowStatic = (token) => valid.set(token, `repository:${repo}:pull`);
  state.url = await listen(registry);
  state.storageUrl = await listen(storage);
  state.close = async () => {
    for (const s of [registry, storage]) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  };
  return state;
}
