/**
 * A token service for a real docker-registry configured with `auth: token:` (distribution
 * docs/spec/auth/jwt.md): issues RS256 JWTs whose `x5c` header carries the signing certificate,
 * which the registry verifies against its `rootcertbundle`. Like GCR it answers OAuth2 POSTs with
 * 404 and takes the token GET with Basic auth; `expectBasic` is the only credential it accepts.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { createSign, X509Certificate, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';

export const TOKEN_ISSUER = 'regmirror-test-issuer';
export const TOKEN_SERVICE = 'regmirror-test-registry';

export interface TokenServer {
  url: string;
  realm: string;
  requests: Array<{ method: string; url: string; headers: IncomingHttpHeaders; issued?: string }>;
  /** Seconds the next tokens live (JWT exp and expires_in). */
  lifetimeS: number;
  close(): Promise<void>;
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

export async function startTokenServer(signing: { cert: string; key: string }, expectBasic: { username: string; password: string }): Promise<TokenServer> {
  const certDer = new X509Certificate(readFileSync(signing.cert)).raw;
  const key = readFileSync(signing.key);
  const state: TokenServer = { url: '', realm: '', requests: [], lifetimeS: 300, close: async () => undefined };
  const expected = `Basic ${Buffer.from(`${expectBasic.username}:${expectBasic.password}`).toString('base64')}`;
  const server: Server = createServer((req, res) => {
    const entry: TokenServer['requests'][number] = { method: req.method ?? '', url: req.url ?? '', headers: req.headers };
    state.requests.push(entry);
    req.resume();
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== '/token' || req.method !== 'GET') return void res.writeHead(404).end('404 page not found');
    if (req.headers.authorization !== expected) return void res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"invalid credentials"}');
    const now = Math.floor(Date.now() / 1000);
    const access = (url.searchParams.getAll('scope').join(' ').split(' ').filter(Boolean)).map((s) => {
      const [type, name, actions] = s.split(':');
      return { type, name, actions: (actions ?? '').split(',').filter((a) => a === 'pull') };
    });
    const header = { typ: 'JWT', alg: 'RS256', x5c: [certDer.toString('base64')] };
    const claims = { iss: TOKEN_ISSUER, sub: expectBasic.username, aud: url.searchParams.get('service') ?? '', exp: now + state.lifetimeS, nbf: now - 1, iat: now, jti: randomUUID(), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const token = `${input}.${b64url(createSign('RSA-SHA256').update(input).sign(key))}`;
    entry.issued = token;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, expires_in: state.lifetimeS, issued_at: new Date().toISOString() }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.realm = `${state.url}/token`;
  state.close = () =>
    new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return state;
}

/** The registry config section that makes docker-registry trust this token server. */
export function tokenAuthYaml(realm: string, rootCert: string): string {
  return `auth:\n  token:\n    realm: ${realm}\n    service: ${TOKEN_SERVICE}\n    issuer: ${TOKEN_ISSUER}\n    rootcertbundle: ${rootCert}\n`;
}
