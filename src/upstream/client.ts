/**
 * UpstreamClient: one per configured registry, over its endpoints in order. Per endpoint an undici
 * Agent (a connection pool per origin) with that endpoint's TLS trust, its credential and a circuit
 * breaker; the token dance (401 → challenge → token → retry once, token cached per
 * realm/service/scope); redirects followed by hand, never sending Authorization to another origin.
 * A request with no answer, a 5xx or a 429 goes to the next endpoint, then round again with backoff
 * and jitter (Retry-After honoured), bounded by `retries` and `retry_budget`. A blob body cut
 * mid-transfer is resumed with `Range: bytes=N-` (`resume_attempts`). Every non-2xx answer is
 * drained and becomes an UpstreamError.
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { Agent, request, type Dispatcher } from 'undici';
import type { EventStream, MirrorEvents } from '../events/index.ts';

type UpstreamRequestKind = MirrorEvents['upstreamRequest']['kind'];
import { Readable } from 'node:stream';
import type { RegistryConfig, TimeoutsConfig, UpstreamEndpoint } from '../config/index.ts';
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
  /** The endpoint (base URL) that answered. */
  endpoint: string;
}

/**
 * A blob's bytes as they arrive; a cut transfer is resumed inside (the iteration throws only when
 * it cannot be). `destroy()` stops it and frees the connection.
 */
export interface BlobBody extends AsyncIterable<Uint8Array> {
  destroy(): void;
}

export interface BlobFetch {
  /** From Content-Length; undefined when the upstream did not say. */
  size?: number;
  body: BlobBody;
  url: string;
}

/** What a failed attempt at one endpoint means for the next: go on to another endpoint (and retry) or stop. */
function failsOver(e: unknown): boolean {
  if (!(e instanceof UpstreamError)) return false;
  if (e.kind === 'toomanyrequests') return true;
  return e.kind === 'unavailable' && (e.status === undefined || e.status >= 500);
}

/** Retry-After in ms (delta-seconds or an HTTP date), else undefined. */
export function retryAfterMs(v: string | undefined, now = Date.now()): number | undefined {
  if (v === undefined) return undefined;
  if (/^\s*\d{1,9}\s*$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** Backoff before round `round` (1, 2, ...): 250 ms doubling, capped at 4 s, half of it random (equal jitter). */
export function backoffMs(round: number, random = Math.random): number {
  const cap = Math.min(4_000, 250 * 2 ** (round - 1));
  return cap / 2 + random() * (cap / 2);
}

/** One endpoint of a registry: its pools, credential, and breaker. */
class Endpoint {
  readonly origin: string;
  readonly agent: Dispatcher;
  readonly credentials: CredentialProvider | undefined;
  /** scope → the bearer challenge last seen for it, so later requests send the cached token first. */
  readonly bearerFor = new Map<string, { realm: string; service: string; scope: string }>();
  basicAccepted = false;
  /** Marks the endpoint down after consecutive failures (breaker.ts). */
  readonly breaker: Breaker;

  constructor(
    readonly cfg: UpstreamEndpoint,
    timeouts: TimeoutsConfig,
    agent: Dispatcher | undefined,
    onBreaker: (down: boolean, retryAt: number, failures: number) => void,
  ) {
    this.origin = new URL(cfg.url).origin;
    this.agent = agent ?? createEndpointAgent(cfg, timeouts);
    this.credentials = cfg.auth === undefined ? undefined : credentialProvider(cfg.auth);
    this.breaker = new Breaker(onBreaker);
  }
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

/** Builds the undici Agent holding one endpoint's pools, TLS trust and the registry's timeouts. */
export function createEndpointAgent(reg: UpstreamEndpoint, timeouts: TimeoutsConfig): Agent {
  const ca = reg.caFile === undefined ? undefined : [...rootCertificates, readFileSync(reg.caFile, 'utf8')];
  return new Agent({
    connections: 64,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: timeouts.headersMs,
    bodyTimeout: timeouts.bodyIdleMs,
    connect: guardedConnector({
      timeout: timeouts.connectMs,
      ...(ca === undefined ? {} : { ca }),
      ...(reg.clientCert === undefined || reg.clientKey === undefined
        ? {}
        : { cert: readFileSync(reg.clientCert), key: readFileSync(reg.clientKey) }),
      rejectUnauthorized: !reg.insecureSkipVerify,
    }),
  });
}

export class UpstreamClient {
  private readonly endpoints: Endpoint[];
  private readonly tokens = new TokenCache();
  /** The endpoint the latest request went to (what a slow revalidation is charged to). */
  private latest: Endpoint;

  constructor(
    readonly registry: RegistryConfig,
    private readonly log: Logger,
    /** The pools requests go through; an Agent per endpoint built from `registry` when absent (tests pass a MockAgent). */
    agent?: Dispatcher,
    /** Where each upstream request is reported (upstreamRequest). */
    private readonly events?: EventStream,
  ) {
    const many = registry.endpoints.length > 1;
    this.endpoints = registry.endpoints.map((cfg) => {
      const name = many ? `${registry.host} endpoint ${cfg.url}` : registry.host;
      return new Endpoint(cfg, registry.timeouts, agent, (down, retryAt, failures) => {
        const fields = { registry: registry.host, ...(many ? { endpoint: cfg.url } : {}) };
        if (down) log.warn({ ...fields, failures, retryInMs: retryAt - Date.now() }, many ? `${name} marked down after ${failures} consecutive failures: requests go to the registry's other endpoints until one probe succeeds` : `${name} marked down after ${failures} consecutive failures: cached content is served stale at once, the rest fails at once, until one probe succeeds`);
        else log.info(fields, `${name} answers again`);
      });
    });
    const first = this.endpoints[0];
    if (first === undefined) throw new Error(`registry ${registry.host} has no endpoint`);
    this.latest = first;
  }

  /**
   * A request that took longer than the caller could wait (a revalidation past revalidate_timeout):
   * counts toward marking the endpoint it went to down, as a failure does.
   */
  noteSlow(): void {
    this.latest.breaker.failure();
  }

  /** Whether every endpoint of the registry is marked down now (their breakers are open). */
  get down(): boolean {
    return this.endpoints.every((e) => e.breaker.down);
  }

  private async credential(ep: Endpoint): Promise<Credential | undefined> {
    if (ep.credentials === undefined) return undefined;
    try {
      return await ep.credentials.get();
    } catch (e) {
      throw new UpstreamError('unauthorized', `credentials for ${this.registry.host} unavailable: ${(e as Error).message}`, undefined, undefined, { cause: e });
    }
  }

  /** HEAD a manifest: its digest, media type and size as the upstream reports them. */
  async headManifest(repo: string, reference: string): Promise<ManifestHead> {
    return this.attempt(async (ep, answered) => {
      const res = await this.sendOnce(ep, 'HEAD', repo, `manifests/${reference}`, MANIFEST_ACCEPT, answered);
      await drain(res.body);
      const out: ManifestHead = {};
      const digest = header(res.headers, 'docker-content-digest');
      const mediaType = header(res.headers, 'content-type');
      const size = contentLength(res.headers);
      if (digest !== undefined) out.digest = digest;
      if (mediaType !== undefined) out.mediaType = mediaType;
      if (size !== undefined) out.size = size;
      return out;
    });
  }

  /** GET a manifest's bytes (at most 4 MiB). Throws UpstreamError bad_response when larger. */
  async getManifest(repo: string, reference: string): Promise<ManifestFetch> {
    return this.attempt(async (ep, answered) => {
      const res = await this.sendOnce(ep, 'GET', repo, `manifests/${reference}`, MANIFEST_ACCEPT, answered);
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
      const out: ManifestFetch = { body: Buffer.concat(chunks, total), url: res.url, endpoint: ep.cfg.url };
      const ct = header(res.headers, 'content-type');
      const dh = header(res.headers, 'docker-content-digest');
      if (ct !== undefined) out.contentType = ct;
      if (dh !== undefined) out.digestHeader = dh;
      return out;
    });
  }

  /** HEAD a blob: its size, or undefined when the upstream does not say. */
  async headBlob(repo: string, digest: string): Promise<number | undefined> {
    return this.attempt(async (ep, answered) => {
      const res = await this.sendOnce(ep, 'HEAD', repo, `blobs/${digest}`, '*/*', answered);
      await drain(res.body);
      return contentLength(res.headers);
    });
  }

  /**
   * GET a blob; the caller consumes `body`. With a known size, a body cut before its end is resumed
   * from the byte where it stopped (`Range: bytes=N-`, through the endpoints in order as any request),
   * at most `resume_attempts` times; the caller still verifies the whole blob's digest.
   */
  async getBlob(repo: string, digest: string): Promise<BlobFetch> {
    const res = await this.attempt((ep, answered) => this.sendOnce(ep, 'GET', repo, `blobs/${digest}`, '*/*', answered));
    const size = contentLength(res.headers);
    const out: BlobFetch = { body: this.resumable(res.body, repo, digest, size), url: res.url };
    if (size !== undefined) out.size = size;
    return out;
  }

  /** The bytes of `first`, then of as many Range requests as it takes to complete a cut transfer. */
  private resumable(first: Readable, repo: string, digest: string, size: number | undefined): BlobBody {
    const max = this.registry.retry.resumeAttempts;
    if (size === undefined || max === 0) return first;
    let current: Readable = first;
    let stopped = false;
    const client = this;
    async function* chunks(): AsyncGenerator<Uint8Array> {
      let pos = 0;
      let resumes = 0;
      try {
        for (;;) {
          let cut: unknown;
          try {
            for await (const chunk of current) {
              pos += (chunk as Buffer).byteLength;
              yield chunk as Buffer;
            }
          } catch (e) {
            cut = e;
          }
          if (stopped) return;
          if (pos >= (size as number)) {
            if (cut !== undefined) throw cut as Error;
            return;
          }
          const why = cut === undefined ? 'the body ended early' : (cut as Error).message;
          if (resumes >= max) {
            throw new UpstreamError('unavailable', `blob ${digest} from ${client.registry.host} was cut at byte ${pos} of ${size} (${why}) and ${max} resumes did not complete it`, undefined, undefined, cut === undefined ? undefined : { cause: cut });
          }
          resumes++;
          client.log.warn({ registry: client.registry.host, repo, digest, at: pos, size, resume: resumes, err: why }, `upstream blob transfer cut at byte ${pos} of ${size}; resuming with Range (${resumes} of ${max})`);
          current = await client.rangeFrom(repo, digest, pos, size as number);
          if (stopped) {
            current.destroy();
            return;
          }
        }
      } finally {
        current.destroy();
      }
    }
    const gen = chunks();
    return {
      [Symbol.asyncIterator]: () => gen,
      destroy: () => {
        stopped = true;
        current.destroy();
        void gen.return(undefined).catch(() => undefined);
      },
    };
  }

  /** The rest of a blob from byte `pos`: a 206 starting there (or a 200 with the first `pos` bytes skipped). */
  private async rangeFrom(repo: string, digest: string, pos: number, size: number): Promise<Readable> {
    const res = await this.attempt((ep, answered) => this.sendOnce(ep, 'GET', repo, `blobs/${digest}`, '*/*', answered, `bytes=${pos}-`));
    if (res.status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header(res.headers, 'content-range') ?? '');
      if (m === null || Number(m[1]) !== pos || Number(m[2]) !== size - 1) {
        await drain(res.body);
        throw new UpstreamError('bad_response', `${this.registry.host} answered a resume from byte ${pos} of blob ${digest} with Content-Range "${header(res.headers, 'content-range') ?? ''}"`);
      }
      return res.body;
    }
    // 200: the whole blob again (the upstream ignores Range); its first pos bytes were sent already.
    let skip = pos;
    const body = res.body;
    async function* rest(): AsyncGenerator<Buffer> {
      for await (const c of body) {
        const chunk = c as Buffer;
        if (skip >= chunk.byteLength) {
          skip -= chunk.byteLength;
          continue;
        }
        const out = skip > 0 ? chunk.subarray(skip) : chunk;
        skip = 0;
        yield out;
      }
    }
    const stream = Readable.from(rest(), { objectMode: false });
    stream.on('close', () => body.destroy());
    return stream;
  }

  /** GET the tag list (query passed through: n, last). Returns the raw JSON body and Link header. */
  async getTags(repo: string, query: string): Promise<{ body: Buffer; link?: string }> {
    return this.attempt(async (ep, answered) => {
      const res = await this.sendOnce(ep, 'GET', repo, `tags/list${query}`, 'application/json', answered);
      const chunks: Buffer[] = [];
      try {
        for await (const c of res.body) chunks.push(c as Buffer);
      } catch (e) {
        throw new UpstreamError('unavailable', `reading the tag list from ${this.registry.host} failed: ${(e as Error).message}`, undefined, undefined, { cause: e });
      }
      this.reportBytes('tags', chunks.reduce((n, c) => n + c.byteLength, 0));
      const link = header(res.headers, 'link');
      return link === undefined ? { body: Buffer.concat(chunks) } : { body: Buffer.concat(chunks), link };
    });
  }

  /**
   * Runs `fn` at the endpoints in order until one succeeds: an attempt with no answer, a 5xx or a 429
   * goes on to the next endpoint; after all failed, another round after a backoff (at least the
   * largest Retry-After), at most `retries` more rounds and none starting past `retry_budget`.
   * Endpoints marked down are skipped; when all are, the request fails at once naming when the
   * mirror tries again. Each endpoint's breaker learns the first answer's status class.
   */
  private async attempt<T>(fn: (ep: Endpoint, answered: (up: boolean) => void) => Promise<T>): Promise<T> {
    const { retries, retryBudgetMs } = this.registry.retry;
    const started = Date.now();
    let last: unknown;
    for (let round = 0; ; round++) {
      let waitMs = 0;
      let soonest: { retryAt: number; failures: number } | undefined;
      for (const ep of this.endpoints) {
        const gate = ep.breaker.admit();
        if (!gate.ok) {
          if (soonest === undefined || gate.retryAt < soonest.retryAt) soonest = gate;
          continue;
        }
        this.latest = ep;
        let settled = false;
        const settle = (up: boolean): void => {
          if (settled) return;
          settled = true;
          if (up) ep.breaker.success();
          else ep.breaker.failure();
        };
        try {
          const v = await fn(ep, settle);
          settle(true);
          return v;
        } catch (e) {
          settle(!(e instanceof UpstreamError && e.kind === 'unavailable' && e.status === undefined));
          if (!failsOver(e)) throw e;
          last = e;
          const ra = retryAfterMs((e as UpstreamError).retryAfter);
          if (ra !== undefined) waitMs = Math.max(waitMs, ra);
          if (this.endpoints.length > 1) this.log.info({ registry: this.registry.host, endpoint: ep.cfg.url, err: (e as Error).message }, `${this.registry.host}: endpoint ${ep.cfg.url} failed; trying the next`);
        }
      }
      if (last === undefined && soonest !== undefined) throw this.downError(soonest);
      if (round >= retries) throw last;
      waitMs = Math.max(waitMs, backoffMs(round + 1));
      if (Date.now() - started + waitMs > retryBudgetMs) throw last;
      this.log.debug({ registry: this.registry.host, round: round + 1, waitMs: Math.round(waitMs), err: (last as Error).message }, 'upstream request failed; retrying');
      await new Promise((r) => setTimeout(r, waitMs));
    }
  }

  private downError(gate: { retryAt: number; failures: number }): UpstreamError {
    const inS = Math.max(1, Math.ceil((gate.retryAt - Date.now()) / 1000));
    if (this.endpoints.length === 1) return new UpstreamError('unavailable', `${this.registry.host} is marked down after ${gate.failures} consecutive failures; the mirror tries it again in ${inS} s`);
    return new UpstreamError('unavailable', `every endpoint of ${this.registry.host} (${this.endpoints.map((e) => e.cfg.url).join(', ')}) is marked down after consecutive failures; the mirror tries again in ${inS} s`);
  }

  /** One request at one endpoint with its auth: `answered` is told each answer's status class as it arrives. */
  private async sendOnce(ep: Endpoint, method: 'GET' | 'HEAD', repo: string, tail: string, accept: string, answered: (up: boolean) => void, range?: string): Promise<UpstreamResponse> {
    const url = `${ep.cfg.url}/v2/${repo}/${tail}`;
    const scope = `repository:${repo}:pull`;
    let authorization = await this.cachedAuthorization(ep, scope);
    const headers: Headers = range === undefined ? { accept, 'user-agent': USER_AGENT } : { accept, 'user-agent': USER_AGENT, range };
    for (let attempt = 0; ; attempt++) {
      const res = await this.follow(ep, method, url, headers, authorization);
      answered(res.status < 500);
      if (res.status >= 200 && res.status < 300) return res;
      await drain(res.body);
      const answeredBy = new URL(res.url).origin;
      if (res.status === 401 && answeredBy !== ep.origin) {
        // A redirect target (a CDN, object storage) asking for credentials: never answered with the
        // registry's credentials (they would go to whatever realm that origin names); a failed fetch.
        throw new UpstreamError('unavailable', `${this.registry.host} redirected ${method} ${safeUrl(url)} to ${answeredBy}, which asked for credentials (401); the mirror answers only the registry's own challenges`, 401);
      }
      if (res.status === 401 && attempt === 0) {
        const challenges = parseChallenges(header(res.headers, 'www-authenticate') ?? '');
        const next = await this.authorize(ep, challenges, scope, authorization);
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
  private async cachedAuthorization(ep: Endpoint, scope: string): Promise<string | undefined> {
    const b = ep.bearerFor.get(scope);
    if (b !== undefined) {
      const token = this.tokens.get(TokenCache.key(b.realm, b.service, b.scope));
      if (token !== undefined) return `Bearer ${token}`;
    }
    if (ep.credentials === undefined) return undefined;
    const c = await this.credential(ep);
    if (c?.kind === 'bearer') return `Bearer ${c.token}`;
    return ep.basicAccepted ? UpstreamClient.basicHeader(c) : undefined;
  }

  /** Answers a 401 challenge: a bearer token (anonymous or with Basic credentials) or Basic auth. */
  private async authorize(ep: Endpoint, challenges: Challenge[], scope: string, previous: string | undefined): Promise<string | undefined> {
    const cred = await this.credential(ep);
    if (cred?.kind === 'bearer') return undefined; // a static token was sent and rejected
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    if (bearer?.params.realm !== undefined) {
      const realm = bearer.params.realm;
      const service = bearer.params.service ?? '';
      const tokenScope = bearer.params.scope ?? scope;
      const key = TokenCache.key(realm, service, tokenScope);
      if (previous?.startsWith('Bearer ') === true) this.tokens.invalidate(key);
      const token = await this.tokens.getOrFetch(key, () => this.fetchToken(ep, realm, service, tokenScope, cred));
      ep.bearerFor.set(scope, { realm, service, scope: tokenScope });
      if (ep.bearerFor.size > 10_000) ep.bearerFor.clear();
      return `Bearer ${token}`;
    }
    if (challenges.some((c) => c.scheme === 'basic') && previous === undefined) {
      const basic = UpstreamClient.basicHeader(cred);
      if (basic !== undefined) ep.basicAccepted = true;
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
  private async fetchToken(ep: Endpoint, realm: string, service: string, scope: string, cred: Credential | undefined): Promise<{ token: string; expiresIn?: number }> {
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
      const res = await this.tokenRequest(ep, url, 'POST', { 'content-type': 'application/x-www-form-urlencoded' }, form.toString());
      if (res.statusCode === 200) return this.readToken(res, scope);
      await drain(res.body);
      const fallback = cred.kind === 'basic' && [400, 401, 404, 405].includes(res.statusCode);
      if (!fallback) throw this.tokenError(res.statusCode);
      this.log.debug({ registry: this.registry.host, status: res.statusCode }, 'token realm refused OAuth2 POST; using GET with Basic auth');
    }
    if (service !== '') url.searchParams.set('service', service);
    url.searchParams.set('scope', scope);
    const basic = UpstreamClient.basicHeader(cred);
    const res = await this.tokenRequest(ep, url, 'GET', basic === undefined ? {} : { authorization: basic });
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

  private async tokenRequest(ep: Endpoint, url: URL, method: 'GET' | 'POST', headers: Headers, body?: string): Promise<Dispatcher.ResponseData> {
    const started = performance.now();
    try {
      const res = await request(url, { method, headers: { 'user-agent': USER_AGENT, accept: 'application/json', ...headers }, dispatcher: ep.agent, ...(body === undefined ? {} : { body }) });
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
  private async follow(ep: Endpoint, method: 'GET' | 'HEAD', start: string, headers: Headers, authorization: string | undefined): Promise<UpstreamResponse> {
    let url = new URL(start);
    let m: 'GET' | 'HEAD' = method;
    // Redirect hops (a CDN) count as the kind of request that led there.
    const kind: UpstreamRequestKind = url.pathname.includes('/manifests/') ? 'manifest' : url.pathname.includes('/blobs/') ? 'blob' : url.pathname.endsWith('/tags/list') ? 'tags' : 'other';
    for (let hop = 0; ; hop++) {
      const h = authorization !== undefined && url.origin === ep.origin ? { ...headers, authorization } : headers;
      let res: Dispatcher.ResponseData;
      const started = performance.now();
      try {
        res = await request(url, { method: m, headers: h, dispatcher: ep.agent });
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
    // One agent per endpoint, or the one a test passed for all of them: each closed once.
    await Promise.all([...new Set(this.endpoints.map((e) => e.agent))].map((a) => a.close()));
  }
}
