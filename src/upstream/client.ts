/**
 * UpstreamClient: one per configured registry. undici Agent (a connection pool per origin) with the
 * registry's TLS trust and timeouts; the token dance (401 → challenge → token → retry once, token
 * cached per realm/service/scope); redirects followed by hand, never sending Authorization to
 * another origin. Every non-2xx answer is drained and becomes an UpstreamError.
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { Agent, request, type Dispatcher } from 'undici';
import type { EventStream, MirrorEvents } from '../events/index.ts';

type UpstreamRequestKind = MirrorEvents['upstreamRequest']['kind'];
import type { Readable } from 'node:stream';
import type { RegistryConfig } from '../config/index.ts';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES } from '../oci/index.ts';
import type { Logger } from '../log/index.ts';
import { safeUrl } from '../log/index.ts';
import { parseChallenges, type Challenge } from './challenge.ts';
import { TokenCache } from './token-cache.ts';
import { Breaker } from './breaker.ts';
import { UpstreamError } from './errors.ts';
import { guardedConnector } from './paused-end-guard.ts';
import { credentialProvider, type Credential, type CredentialProvider } from './credentials.ts';

const USER_AGENT = 'regmirror/0.1';
const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

type Headers = Record<string, string>;

/** A 2xx upstream response whose body the caller must consume or destroy. */
export interface UpstreamResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable & { dump?: () => Promise<void> };
  /** Final URL after redirects. */
  url: string;
}

export interface ManifestHead {
  digest?: string;
  mediaType?: string;
  size?: number;
}

export interface ManifestFetch {
  body: Buffer;
  contentType?: string;
  /** The upstream's own Docker-Content-Digest header, if it sent one. */
  digestHeader?: string;
  url: string;
}

export interface BlobFetch {
  /** From Content-Length; undefined when the upstream did not say. */
  size?: number;
  body: Readable;
  url: string;
}

function header(h: UpstreamResponse['headers'], name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

function contentLength(h: UpstreamResponse['headers']): number | undefined {
  const v = header(h, 'content-length');
  if (v === undefined || !/^\d+$/.test(v)) return undefined;
  return Number(v);
}

/** `ratelimit-remaining: 100;w=21600` (Docker Hub, IETF RateLimit fields): the count, else undefined. */
export function rateLimitRemaining(v: string | undefined): number | undefined {
  const m = v === undefined ? null : /^\s*(\d{1,12})\s*(?:;|$)/.exec(v);
  return m === null ? undefined : Number(m[1]);
}

async function drain(body: Readable & { dump?: () => Promise<void> }): Promise<void> {
  try {
    if (typeof body.dump === 'function') await body.dump();
    else body.destroy();
  } catch {
    /* the connection is discarded; nothing to report */
  }
}

/** Builds the undici Agent holding this registry's pools, TLS trust and timeouts. */
export function createRegistryAgent(reg: RegistryConfig): Agent {
  const ca = reg.caFile === undefined ? undefined : [...rootCertificates, readFileSync(reg.caFile, 'utf8')];
  return new Agent({
    connections: 64,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: reg.timeouts.headersMs,
    bodyTimeout: reg.timeouts.bodyIdleMs,
    connect: guardedConnector({
      timeout: reg.timeouts.connectMs,
      ...(ca === undefined ? {} : { ca }),
      ...(reg.clientCert === undefined || reg.clientKey === undefined
        ? {}
        : { cert: readFileSync(reg.clientCert), key: readFileSync(reg.clientKey) }),
      rejectUnauthorized: !reg.insecureSkipVerify,
    }),
  });
}

export class UpstreamClient {
  private readonly agent: Dispatcher;
  private readonly origin: string;
  private readonly tokens = new TokenCache();
  /** scope → the bearer challenge last seen for it, so later requests send the cached token first. */
  private readonly bearerFor = new Map<string, { realm: string; service: string; scope: string }>();
  private basicAccepted = false;
  private readonly credentials: CredentialProvider | undefined;
  /** Marks the registry down after consecutive failures (breaker.ts). */
  private readonly breaker: Breaker;

  constructor(
    readonly registry: RegistryConfig,
    private readonly log: Logger,
    /** The pools requests go through; a registry Agent built from `registry` when absent (tests pass a MockAgent). */
    agent?: Dispatcher,
    /** Where each upstream request is reported (upstreamRequest). */
    private readonly events?: EventStream,
  ) {
    this.agent = agent ?? createRegistryAgent(registry);
    this.origin = new URL(registry.endpoint).origin;
    this.credentials = registry.auth === undefined ? undefined : credentialProvider(registry.auth);
    this.breaker = new Breaker((down, retryAt, failures) => {
      if (down) log.warn({ registry: registry.host, failures, retryInMs: retryAt - Date.now() }, `${registry.host} marked down after ${failures} consecutive failures: cached content is served stale at once, the rest fails at once, until one probe succeeds`);
      else log.info({ registry: registry.host }, `${registry.host} answers again`);
    });
  }

  /**
   * A request that took longer than the caller could wait (a revalidation past revalidate_timeout):
   * counts toward marking the registry down, as a failure does.
   */
  noteSlow(): void {
    this.breaker.failure();
  }

  /** Whether the registry is marked down now (the breaker is open). */
  get down(): boolean {
    return this.breaker.down;
  }

  private async credential(): Promise<Credential | undefined> {
    if (this.credentials === undefined) return undefined;
    try {
      return await this.credentials.get();
    } catch (e) {
      throw new UpstreamError('unauthorized', `credentials for ${this.registry.host} unavailable: ${(e as Error).message}`, undefined, undefined, { cause: e });
    }
  }

  /** HEAD a manifest: its digest, media type and size as the upstream reports them. */
  async headManifest(repo: string, reference: string): Promise<ManifestHead> {
    const res = await this.send('HEAD', repo, `manifests/${reference}`, MANIFEST_ACCEPT);
    await drain(res.body);
    const out: ManifestHead = {};
    const digest = header(res.headers, 'docker-content-digest');
    const mediaType = header(res.headers, 'content-type');
    const size = contentLength(res.headers);
    if (digest !== undefined) out.digest = digest;
    if (mediaType !== undefined) out.mediaType = mediaType;
    if (size !== undefined) out.size = size;
    return out;
  }

  /** GET a manifest's bytes (at most 4 MiB). Throws UpstreamError bad_response when larger. */
  async getManifest(repo: string, reference: string): Promise<ManifestFetch> {
    const res = await this.send('GET', repo, `manifests/${reference}`, MANIFEST_ACCEPT);
    const declared = contentLength(res.headers);
    if (declared !== undefined && declared > MAX_MANIFEST_BYTES) {
      await drain(res.body);
      throw new UpstreamError('bad_response', `manifest of ${declared} bytes exceeds the ${MAX_MANIFEST_BYTES}-byte limit`);
    }
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of res.body) {
        const buf = chunk as Buffer;
        total += buf.byteLength;
        if (total > MAX_MANIFEST_BYTES) {
          res.body.destroy();
          throw new UpstreamError('bad_response', `manifest exceeds the ${MAX_MANIFEST_BYTES}-byte limit`);
        }
        chunks.push(buf);
      }
    } catch (e) {
      if (e instanceof UpstreamError) throw e;
      throw new UpstreamError('unavailable', `reading manifest body from ${this.registry.host} failed: ${(e as Error).message}`, undefined, undefined, { cause: e });
    }
    this.reportBytes('manifest', total);
    const out: ManifestFetch = { body: Buffer.concat(chunks, total), url: res.url };
    const ct = header(res.headers, 'content-type');
    const dh = header(res.headers, 'docker-content-digest');
    if (ct !== undefined) out.contentType = ct;
    if (dh !== undefined) out.digestHeader = dh;
    return out;
  }

  /** HEAD a blob: its size, or undefined when the upstream does not say. */
  async headBlob(repo: string, digest: string): Promise<number | undefined> {
    const res = await this.send('HEAD', repo, `blobs/${digest}`, '*/*');
    await drain(res.body);
    return contentLength(res.headers);
  }

  /** GET a blob; the caller consumes `body`. */
  async getBlob(repo: string, digest: string): Promise<BlobFetch> {
    const res = await this.send('GET', repo, `blobs/${digest}`, '*/*');
    const out: BlobFetch = { body: res.body, url: res.url };
    const size = contentLength(res.headers);
    if (size !== undefined) out.size = size;
    return out;
  }

  /** GET the tag list (query passed through: n, last). Returns the raw JSON body and Link header. */
  async getTags(repo: string, query: string): Promise<{ body: Buffer; link?: string }> {
    const res = await this.send('GET', repo, `tags/list${query}`, 'application/json');
    const chunks: Buffer[] = [];
    for await (const c of res.body) chunks.push(c as Buffer);
    this.reportBytes('tags', chunks.reduce((n, c) => n + c.byteLength, 0));
    const link = header(res.headers, 'link');
    return link === undefined ? { body: Buffer.concat(chunks) } : { body: Buffer.concat(chunks), link };
  }

  /** Sends one API request with auth and redirects; returns a 2xx response or throws UpstreamError. */
  private async send(method: 'GET' | 'HEAD', repo: string, tail: string, accept: string): Promise<UpstreamResponse> {
    const gate = this.breaker.admit();
    if (!gate.ok) {
      const inS = Math.max(1, Math.ceil((gate.retryAt - Date.now()) / 1000));
      throw new UpstreamError('unavailable', `${this.registry.host} is marked down after ${gate.failures} consecutive failures; the mirror tries it again in ${inS} s`);
    }
    // The breaker learns the first outcome: an answer below 500 (the registry is up), or none / a 5xx.
    let settled = false;
    const settle = (up: boolean): void => {
      if (settled) return;
      settled = true;
      if (up) this.breaker.success();
      else this.breaker.failure();
    };
    try {
      const res = await this.sendOnce(method, repo, tail, accept, settle);
      settle(true);
      return res;
    } catch (e) {
      settle(!(e instanceof UpstreamError && e.kind === 'unavailable' && e.status === undefined));
      throw e;
    }
  }

  /** send() without the breaker: `answered` is told each answer's status class as it arrives. */
  private async sendOnce(method: 'GET' | 'HEAD', repo: string, tail: string, accept: string, answered: (up: boolean) => void): Promise<UpstreamResponse> {
    const url = `${this.registry.endpoint}/v2/${repo}/${tail}`;
    const scope = `repository:${repo}:pull`;
    let authorization = await this.cachedAuthorization(scope);
    for (let attempt = 0; ; attempt++) {
      const res = await this.follow(method, url, { accept, 'user-agent': USER_AGENT }, authorization);
      answered(res.status < 500);
      if (res.status >= 200 && res.status < 300) return res;
      await drain(res.body);
      const answeredBy = new URL(res.url).origin;
      if (res.status === 401 && answeredBy !== this.origin) {
        // A redirect target (a CDN, object storage) asking for credentials: never answered with the
        // registry's credentials (they would go to whatever realm that origin names); a failed fetch.
        throw new UpstreamError('unavailable', `${this.registry.host} redirected ${method} ${safeUrl(url)} to ${answeredBy}, which asked for credentials (401); the mirror answers only the registry's own challenges`, 401);
      }
      if (res.status === 401 && attempt === 0) {
        const challenges = parseChallenges(header(res.headers, 'www-authenticate') ?? '');
        const next = await this.authorize(challenges, scope, authorization);
        if (next !== undefined) {
          authorization = next;
          continue;
        }
      }
      throw this.classify(res.status, res.headers, `${method} ${safeUrl(url)}`);
    }
  }


  private classify(status: number, headers: UpstreamResponse['headers'], what: string): UpstreamError {
    const host = this.registry.host;
    if (status === 404) return new UpstreamError('not_found', `${host} answered 404 to ${what}`, status);
    if (status === 401) return new UpstreamError('unauthorized', `${host} requires authentication (401) for ${what}`, status);
    if (status === 403) return new UpstreamError('denied', `${host} denied access (403) to ${what}`, status);
    if (status === 429) return new UpstreamError('toomanyrequests', `${host} is rate limiting (429) ${what}`, status, header(headers, 'retry-after'));
    if (status >= 500) return new UpstreamError('unavailable', `${host} answered ${status} to ${what}`, status);
    return new UpstreamError('bad_response', `${host} answered unexpected status ${status} to ${what}`, status);
  }

  private static basicHeader(c: Credential | undefined): string | undefined {
    return c?.kind === 'basic' ? `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}` : undefined;
  }

  /** What to send before any challenge: a static token, a cached token for the scope, or accepted Basic. */
  private async cachedAuthorization(scope: string): Promise<string | undefined> {
    const b = this.bearerFor.get(scope);
    if (b !== undefined) {
      const token = this.tokens.get(TokenCache.key(b.realm, b.service, b.scope));
      if (token !== undefined) return `Bearer ${token}`;
    }
    if (this.credentials === undefined) return undefined;
    const c = await this.credential();
    if (c?.kind === 'bearer') return `Bearer ${c.token}`;
    return this.basicAccepted ? UpstreamClient.basicHeader(c) : undefined;
  }

  /** Answers a 401 challenge: a bearer token (anonymous or with Basic credentials) or Basic auth. */
  private async authorize(challenges: Challenge[], scope: string, previous: string | undefined): Promise<string | undefined> {
    const cred = await this.credential();
    if (cred?.kind === 'bearer') return undefined; // a static token was sent and rejected
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    if (bearer?.params.realm !== undefined) {
      const realm = bearer.params.realm;
      const service = bearer.params.service ?? '';
      const tokenScope = bearer.params.scope ?? scope;
      const key = TokenCache.key(realm, service, tokenScope);
      if (previous?.startsWith('Bearer ') === true) this.tokens.invalidate(key);
      const token = await this.tokens.getOrFetch(key, () => this.fetchToken(realm, service, tokenScope, cred));
      this.bearerFor.set(scope, { realm, service, scope: tokenScope });
      if (this.bearerFor.size > 10_000) this.bearerFor.clear();
      return `Bearer ${token}`;
    }
    if (challenges.some((c) => c.scheme === 'basic') && previous === undefined) {
      const basic = UpstreamClient.basicHeader(cred);
      if (basic !== undefined) this.basicAccepted = true;
      return basic;
    }
    return undefined;
  }

  /**
   * Fetches a token from the realm as containerd does: with credentials, OAuth2 POST (password or
   * refresh_token grant; distribution docs/spec/auth/oauth.md), falling back to the Docker token
   * GET with Basic auth when the realm answers 404, 405, 401 or 400 (GCR, Artifactory, ACR);
   * without credentials, an anonymous GET.
   */
  private async fetchToken(realm: string, service: string, scope: string, cred: Credential | undefined): Promise<{ token: string; expiresIn?: number }> {
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new UpstreamError('bad_response', `${this.registry.host} sent an invalid token realm`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new UpstreamError('bad_response', `${this.registry.host} sent a token realm with scheme ${url.protocol}`);
    }
    if (cred !== undefined && cred.kind !== 'bearer') {
      const form = new URLSearchParams({ grant_type: cred.kind === 'refresh' ? 'refresh_token' : 'password', service, scope, client_id: USER_AGENT.split('/')[0] ?? 'regmirror' });
      if (cred.kind === 'refresh') form.set('refresh_token', cred.refreshToken);
      else {
        form.set('username', cred.username);
        form.set('password', cred.password);
      }
      const res = await this.tokenRequest(url, 'POST', { 'content-type': 'application/x-www-form-urlencoded' }, form.toString());
      if (res.statusCode === 200) return this.readToken(res, scope);
      await drain(res.body);
      const fallback = cred.kind === 'basic' && [400, 401, 404, 405].includes(res.statusCode);
      if (!fallback) throw this.tokenError(res.statusCode);
      this.log.debug({ registry: this.registry.host, status: res.statusCode }, 'token realm refused OAuth2 POST; using GET with Basic auth');
    }
    if (service !== '') url.searchParams.set('service', service);
    url.searchParams.set('scope', scope);
    const basic = UpstreamClient.basicHeader(cred);
    const res = await this.tokenRequest(url, 'GET', basic === undefined ? {} : { authorization: basic });
    if (res.statusCode === 200) return this.readToken(res, scope);
    await drain(res.body);
    throw this.tokenError(res.statusCode);
  }

  /** Reports one upstream request on the event stream (when anyone listens). */
  private report(kind: UpstreamRequestKind, method: string, status: number | undefined, started: number, error?: unknown, headers?: UpstreamResponse['headers']): void {
    if (this.events === undefined || !this.events.has('upstreamRequest')) return;
    const limit = headers === undefined ? undefined : rateLimitRemaining(header(headers, 'ratelimit-remaining'));
    this.events.emit('upstreamRequest', {
      registry: this.registry.host,
      method,
      kind,
      status,
      durationMs: performance.now() - started,
      ...(error === undefined ? {} : { error: (error as Error).message }),
      ...(limit === undefined ? {} : { rateLimitRemaining: limit }),
    });
  }

  /** Reports a manifest or tag-list body read (when anyone listens). */
  private reportBytes(kind: 'manifest' | 'tags', bytes: number): void {
    if (this.events?.has('upstreamBytes') === true) this.events.emit('upstreamBytes', { registry: this.registry.host, kind, bytes });
  }

  private async tokenRequest(url: URL, method: 'GET' | 'POST', headers: Headers, body?: string): Promise<Dispatcher.ResponseData> {
    const started = performance.now();
    try {
      const res = await request(url, { method, headers: { 'user-agent': USER_AGENT, accept: 'application/json', ...headers }, dispatcher: this.agent, ...(body === undefined ? {} : { body }) });
      this.report('token', method, res.statusCode, started);
      return res;
    } catch (e) {
      this.report('token', method, undefined, started, e);
      throw new UpstreamError('unavailable', `token endpoint of ${this.registry.host} unreachable: ${(e as Error).message}`, undefined, undefined, { cause: e });
    }
  }

  private tokenError(status: number): UpstreamError {
    const kind = status === 403 ? 'denied' : status === 429 ? 'toomanyrequests' : status >= 500 ? 'unavailable' : 'unauthorized';
    return new UpstreamError(kind, `token endpoint of ${this.registry.host} answered ${status}`, status);
  }

  private async readToken(res: Dispatcher.ResponseData, scope: string): Promise<{ token: string; expiresIn?: number }> {
    let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      parsed = (await res.body.json()) as typeof parsed;
    } catch {
      throw new UpstreamError('bad_response', `token endpoint of ${this.registry.host} sent invalid JSON`);
    }
    const token = typeof parsed.access_token === 'string' && parsed.access_token !== '' ? parsed.access_token : parsed.token;
    if (typeof token !== 'string' || token === '') throw new UpstreamError('bad_response', `token endpoint of ${this.registry.host} sent no token`);
    const out: { token: string; expiresIn?: number } = { token };
    if (typeof parsed.expires_in === 'number') out.expiresIn = parsed.expires_in;
    this.log.debug({ registry: this.registry.host, scope }, 'fetched upstream token');
    return out;
  }

  /**
   * Sends a request, following redirects by hand: relative Location resolved; Authorization sent
   * only to the registry's own origin; no downgrade from https to http.
   */
  private async follow(method: 'GET' | 'HEAD', start: string, headers: Headers, authorization: string | undefined): Promise<UpstreamResponse> {
    let url = new URL(start);
    let m: 'GET' | 'HEAD' = method;
    // Redirect hops (a CDN) count as the kind of request that led there.
    const kind: UpstreamRequestKind = url.pathname.includes('/manifests/') ? 'manifest' : url.pathname.includes('/blobs/') ? 'blob' : url.pathname.endsWith('/tags/list') ? 'tags' : 'other';
    for (let hop = 0; ; hop++) {
      const h = authorization !== undefined && url.origin === this.origin ? { ...headers, authorization } : headers;
      let res: Dispatcher.ResponseData;
      const started = performance.now();
      try {
        res = await request(url, { method: m, headers: h, dispatcher: this.agent });
        this.report(kind, m, res.statusCode, started, undefined, res.headers);
      } catch (e) {
        this.report(kind, m, undefined, started, e);
        throw new UpstreamError('unavailable', `${this.registry.host} unreachable (${safeUrl(url)}): ${(e as Error).message}`, undefined, undefined, { cause: e });
      }
      const location = header(res.headers, 'location');
      if (!REDIRECT_STATUSES.has(res.statusCode) || location === undefined) {
        return { status: res.statusCode, headers: res.headers, body: res.body, url: url.toString() };
      }
      await drain(res.body);
      if (hop >= MAX_REDIRECTS) throw new UpstreamError('bad_response', `${this.registry.host}: more than ${MAX_REDIRECTS} redirects`);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new UpstreamError('bad_response', `${this.registry.host} sent an invalid redirect location`);
      }
      if (next.protocol !== 'https:' && next.protocol !== 'http:') {
        throw new UpstreamError('bad_response', `${this.registry.host} redirected to unsupported scheme ${next.protocol}`);
      }
      if (url.protocol === 'https:' && next.protocol === 'http:') {
        throw new UpstreamError('bad_response', `${this.registry.host} redirected from https to plain http; refused`);
      }
      if (res.statusCode === 303) m = m === 'HEAD' ? 'HEAD' : 'GET';
      this.log.debug({ registry: this.registry.host, from: safeUrl(url), to: safeUrl(next) }, 'following upstream redirect');
      url = next;
    }
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}
