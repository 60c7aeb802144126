/**
 * The HTTP face: hono on @hono/node-server, with real routes by area — token, pull (manifests,
 * blobs, tags, referrers), push (uploads, manifest PUT, DELETE), the admin API mounted ahead — and
 * middleware that sees every request: its id, the `request` event when its response closes (the
 * access log and metrics subscribe), the OCI error envelope for whatever a handler throws.
 * Handlers validate the path with the pure routing function, ask the Mirror or the Pusher, and
 * write straight to the Node response (blobs stream with backpressure; a failed fill destroys the
 * connection, so the client sees a failed transfer). HEAD is dispatched to the GET routes
 * (nodeFetch): handlers read the method from the Node request and answer HEAD without a body.
 * This module never touches disk or SQL.
 */
import type { ServerResponse, IncomingMessage } from 'node:http';
import { Hono } from 'hono';
import type { Context } from 'hono';
import type { HttpBindings, Http2Bindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { MAX_MANIFEST_BYTES, RegistryError, renderErrorBody } from '../oci/index.ts';
import { routeRequest, type Route, type RoutingTable } from '../routing/index.ts';
import type { Mirror, CacheResult } from '../mirror/index.ts';
import type { Logger } from '../log/index.ts';
import type { EventStream, RequestKind } from '../events/index.ts';
import { parseRange } from './range.ts';
import { LiteralCheckedRouter } from './router.ts';
import { toRegistryError } from './errors.ts';
import type { Pusher, UploadAnswer } from '../mirror/index.ts';
import { mountOps, type OpsDeps } from './ops.ts';
import { Authenticator, TOKEN_PATH, authorize, challenge, type Identity } from './auth.ts';

export interface AppDeps {
  mirror: Mirror;
  /** The routing table now (a reload may replace it). */
  routing: () => RoutingTable;
  /** /livez, /readyz and /metrics (ops.ts), when this listener serves them. */
  ops?: OpsDeps;
  log: Logger;
  /** Routes mounted ahead of the registry API (the provenance API), if served on this listener. */
  admin?: Hono<{ Bindings: HttpBindings }>;
  /** The push API for local namespaces; absent: every write is refused. */
  pusher?: Pusher;
  /** The mirror's own users (`[auth]`); absent: no pushes, local namespaces anonymous. */
  auth?: Authenticator;
  /** `scheme://host:port` of the mirror for token realms: external_url or the listener, never a Host header. */
  baseUrl: () => string;
  /** Where each answered request is reported (`request`): the access log subscribes. */
  events: EventStream;
}

/** Per-request values the middleware sets for the handlers. */
type Env = { Bindings: HttpBindings; Variables: { info: RequestInfo; identity: Identity } };
type Ctx = Context<Env>;

/** A repository name of one or more segments, as in distribution-spec `<name>`. */
const NAME = ':name{.+}';

const ANONYMOUS: Identity = { user: undefined };

/** Reads a small request body (a manifest), refusing more than `max` bytes. */
async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of req) {
    n += (chunk as Buffer).byteLength;
    if (n > max) throw new RegistryError('TOO_LARGE', `request body is larger than ${max} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** `Content-Range: <start>-<end>` (OCI) or `bytes <start>-<end>/<total>`; the start offset. */
function rangeStart(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(header.trim());
  if (m === null) throw new RegistryError('RANGE_INVALID', `Content-Range "${header.slice(0, 60)}" is not <start>-<end>`);
  return Number(m[1]);
}

/**
 * Response headers as Node's raw list (name, value, name, value, ...), handed to writeHead as is.
 * The hot path builds one array per response: object spreads of header records (a copy per spread
 * and another inside writeHead) were what filled V8's old generation under load (issue 7).
 */
type HeaderList = Array<string | number>;

/** A new header list starting with the registry API version. */
function apiHeaders(...pairs: HeaderList): HeaderList {
  pairs.push('Docker-Distribution-API-Version', 'registry/2.0');
  return pairs;
}

/** Per-request facts gathered for the access log line. */
interface RequestInfo {
  id: string;
  method: string;
  path: string;
  /** The query string with its `?`, or ''. */
  query: string;
  kind: RequestKind;
  registry?: string;
  repo?: string;
  cache?: CacheResult;
  digest?: string;
  /** What went wrong, for an answer with an error (the access log's cause). */
  error?: string;
}

/** The kind of a request before routing (the registry routes refine `other` under /v2/). */
function requestKind(path: string): RequestKind {
  if (path === '/v2' || path === '/v2/') return 'ping';
  if (path.startsWith('/v2/')) return 'other';
  if (path === TOKEN_PATH) return 'token';
  if (path.startsWith('/_regmirror/')) return 'api';
  if (path === '/metrics') return 'metrics';
  if (path === '/livez' || path === '/readyz') return 'health';
  return 'other';
}

let requestCounter = 0;
const REQUEST_ID_PREFIX = process.pid.toString(36);

/** Appends where an answer came from (cache result, registry, OCI namespace) to `h`; returns `h`. */
function withProvenance(h: HeaderList, route: Route, cache: CacheResult): HeaderList {
  h.push('X-Regmirror-Cache', cache, 'X-Regmirror-Registry', route.registry ?? `local/${route.namespace ?? ''}`);
  if (route.ociNamespace !== undefined) h.push('OCI-Namespace', route.ociNamespace);
  return h;
}

/**
 * Sends `body` (for HEAD only its length, which is `length` when the body was not read) with
 * `headers`, which gains Content-Length.
 */
function sendBuffer(res: ServerResponse, status: number, headers: HeaderList, body: Buffer | undefined, head: boolean, length = body?.byteLength ?? 0): void {
  headers.push('Content-Length', length);
  res.writeHead(status, headers);
  res.end(head ? undefined : body);
}

function sendError(res: ServerResponse, err: RegistryError, head: boolean, extra: HeaderList = []): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = Buffer.from(renderErrorBody(err));
  const h = apiHeaders(...extra);
  for (const [name, value] of Object.entries(err.headers)) {
    if (name.toLowerCase() !== 'content-type') h.push(name, value);
  }
  h.push('Content-Type', 'application/json');
  sendBuffer(res, err.status, h, body, head);
}

/** Builds the hono app. */
export function createApp(deps: AppDeps): Hono<Env> {
  const { mirror, routing, log, events } = deps;
  // PatternRouter's expressions behind a literal check (router.ts): the default SmartRouter took
  // 8 µs a match here (its RegExpRouter refuses multi-segment `:name{.+}`, so it falls to the trie).
  const app = new Hono<Env>({ router: new LiteralCheckedRouter() });

  const auth = deps.auth;
  /** Who sent the request: anonymous, a user, or an error for credentials that do not check out. */
  const identify = async (header: string): Promise<Identity> => {
    const identity = auth === undefined ? ANONYMOUS : await auth.identify(header);
    if (identity === undefined) {
      throw new RegistryError('UNAUTHORIZED', 'the credentials or token are not valid (or the token expired): log in again', { headers: challenge(deps.baseUrl()) });
    }
    return identity;
  };

  // ------------------------------------------------------------ every request
  /**
   * What every request runs first: its id, the `request` event when its response closes (the
   * access log and metrics subscribe), and for the registry API who is asking. A promise only when
   * credentials must be checked.
   */
  const begin = (c: Ctx): Promise<void> | undefined => {
    const req = c.env.incoming;
    const res = c.env.outgoing;
    const started = performance.now();
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const incomingId = req.headers['x-request-id'];
    const id = typeof incomingId === 'string' && /^[\w.-]{1,64}$/.test(incomingId) ? incomingId : `${REQUEST_ID_PREFIX}-${(++requestCounter).toString(36)}`;
    const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
    const info: RequestInfo = { id, method: req.method ?? 'GET', path, query: q === -1 ? '' : rawUrl.slice(q), kind: requestKind(path) };
    c.set('info', info);
    res.setHeader('X-Request-Id', id);
    if (events.has('request')) {
      res.once('close', () => {
        events.emit('request', { reqId: id, method: info.method, path: info.path, kind: info.kind, status: res.statusCode, registry: info.registry, repo: info.repo, digest: info.digest, cache: info.cache, durationMs: performance.now() - started, complete: res.writableFinished, error: info.error });
      });
    }
    if (info.path !== '/v2' && !info.path.startsWith('/v2/')) return undefined;
    const header = req.headers.authorization;
    if (auth === undefined || header === undefined) {
      c.set('identity', ANONYMOUS);
      return undefined;
    }
    return identify(header).then((identity) => c.set('identity', identity));
  };
  /**
   * A registry route: `begin`, then the handler, as one hono handler. hono runs a route with a
   * single handler directly, and a middleware plus a route through compose (an async frame and a
   * promise chain per request, 1 % of the CPU of a warm manifest request in profiles). Every route
   * of this app is registered through here (or, for the admin routes mounted ahead, behind
   * `app.use`), so `begin` still sees every request and status.
   */
  const handled = (fn: (c: Ctx) => Response | Promise<Response>) => (c: Ctx): Response | Promise<Response> => {
    const pending = begin(c);
    return pending === undefined ? fn(c) : pending.then(() => fn(c));
  };
  if (deps.admin !== undefined) {
    app.use('/_regmirror/*', (c, next) => {
      const pending = begin(c);
      return pending === undefined ? next() : pending.then(next);
    });
  }
  app.onError((e, c) => {
    const info = c.get('info') as RequestInfo | undefined;
    const err = toRegistryError(e, log, info?.id);
    if (info !== undefined) info.error = `${err.code}: ${err.message}`;
    sendError(c.env.outgoing, err, c.env.incoming.method === 'HEAD');
    return RESPONSE_ALREADY_SENT;
  });
  app.notFound(async (c) => {
    // No route took the request, so `begin` has not run (unless the admin routes' middleware did).
    if (c.get('info') === undefined) await begin(c);
    const info = c.get('info');
    if (info.path !== '/v2' && !info.path.startsWith('/v2/')) {
      throw new RegistryError('NAME_UNKNOWN', `no such endpoint ${info.path.slice(0, 100)}: regmirror serves the registry API under /v2/`);
    }
    // A /v2 path no route took: the routing function says what is wrong with it, else the method.
    const route = routeRequest(info.path, new URLSearchParams(info.query).get('ns') ?? undefined, routing());
    throw new RegistryError(route.kind === 'referrers' ? 'ENDPOINT_UNSUPPORTED' : 'UNSUPPORTED', `${info.method} is not supported on the ${route.kind} endpoint`);
  });

  if (deps.admin !== undefined) app.route('/', deps.admin);
  if (deps.ops !== undefined) mountOps(app, deps.ops, (h) => handled(h as never) as never);

  // ------------------------------------------------------------ token
  if (auth !== undefined) {
    app.all(TOKEN_PATH, handled(async (c) => {
      await issueToken(auth, c.env.incoming, c.env.outgoing);
      return RESPONSE_ALREADY_SENT;
    }));
  }


  /** The API version check (distribution-spec "end-1"). */
  const ping = (c: Ctx): Response => {
    const { method } = c.get('info');
    if (method !== 'GET' && method !== 'HEAD') throw new RegistryError('UNSUPPORTED', `${method} is not supported on /v2/`);
    if (auth !== undefined && c.env.incoming.headers.authorization === undefined) {
      // With users configured, the ping tells clients where tokens come from (anonymous ones too).
      throw new RegistryError('UNAUTHORIZED', 'this mirror has users: fetch a token (anonymous for mirrored content) from the realm in WWW-Authenticate', { headers: challenge(deps.baseUrl()) });
    }
    sendBuffer(c.env.outgoing, 200, apiHeaders('Content-Type', 'application/json'), Buffer.from('{}'), method === 'HEAD');
    return RESPONSE_ALREADY_SENT;
  };
  app.all('/v2', handled(ping));
  app.all('/v2/', handled(ping));

  /** The validated route of the request (routing/), noted for the access log. */
  const routeOf = (c: Ctx): { route: Route; params: URLSearchParams } => {
    const info = c.get('info');
    const params = new URLSearchParams(info.query);
    const route = routeRequest(info.path, params.get('ns') ?? undefined, routing());
    info.registry = route.registry ?? `local/${route.namespace ?? ''}`;
    info.repo = route.upstreamRepo;
    info.kind = route.kind;
    return { route, params };
  };
  const scopeOf = (route: Route): string => (route.registry === undefined ? `${route.namespace ?? ''}/${route.upstreamRepo}` : route.upstreamRepo);

  // ------------------------------------------------------------ push (local namespaces)
  /** Authorizes a write and hands it to the Pusher. */
  const push = async (c: Ctx): Promise<Response> => {
    const { route, params } = routeOf(c);
    const info = c.get('info');
    const pusher = deps.pusher;
    if (pusher === undefined) throw new RegistryError('BAD_REQUEST', `${info.method} is not supported: this mirror serves the pull API only`);
    pusher.assertWritable(route);
    if (auth === undefined) {
      throw new RegistryError('DENIED', 'pushing needs the mirror\'s own users: add [auth] with [[auth.user]] (roles = ["pull", "push"]) or an htpasswd file to mirror.toml');
    }
    const needed = info.method === 'DELETE' && route.kind !== 'upload' ? 'delete' : 'push';
    authorize(c.get('identity'), needed, deps.baseUrl(), `repository:${scopeOf(route)}:${needed === 'delete' ? 'delete' : 'pull,push'}`);
    await handleWrite(info, c.env.incoming, c.env.outgoing, params, route, pusher, c.get('identity'));
    return RESPONSE_ALREADY_SENT;
  };
  // Registered before the pull routes: `.../blobs/uploads` would also match `.../blobs/:digest`.
  const write = handled(push);
  app.on(['POST', 'PATCH', 'PUT', 'GET', 'HEAD', 'DELETE'], [`/v2/${NAME}/blobs/uploads`, `/v2/${NAME}/blobs/uploads/*`], write);
  app.put(`/v2/${NAME}/manifests/:reference`, write);
  app.delete(`/v2/${NAME}/manifests/:reference`, write);
  app.delete(`/v2/${NAME}/blobs/:digest`, write);

  // ------------------------------------------------------------ pull
  /** Routes a read; local namespaces need the pull role unless anonymous pulls are allowed. */
  const readRoute = (c: Ctx): Route => {
    const { route } = routeOf(c);
    if (route.registry === undefined && auth !== undefined && !auth.anonymousLocalPull) {
      authorize(c.get('identity'), 'pull', deps.baseUrl(), `repository:${scopeOf(route)}:pull`);
    }
    return route;
  };
  app.get(`/v2/${NAME}/manifests/:reference`, handled(async (c) => {
    const route = readRoute(c);
    const info = c.get('info');
    const head = info.method === 'HEAD';
    const m = await mirror.getManifest(route, head);
    info.cache = m.cache;
    info.digest = m.digest;
    const h = apiHeaders('Content-Type', m.mediaType, 'Docker-Content-Digest', m.digest, 'ETag', `"${m.digest}"`);
    sendBuffer(c.env.outgoing, 200, withProvenance(h, route, m.cache), m.bytes, head, m.size);
    return RESPONSE_ALREADY_SENT;
  }));
  app.get(`/v2/${NAME}/blobs/:digest`, handled(async (c) => {
    const route = readRoute(c);
    await serveBlob(c.get('info'), c.env.incoming, c.env.outgoing, route);
    return RESPONSE_ALREADY_SENT;
  }));
  app.get(`/v2/${NAME}/tags/list`, handled(async (c) => {
    const route = readRoute(c);
    const info = c.get('info');
    const t = await mirror.listTags(route, tagsQuery(new URLSearchParams(info.query)));
    info.cache = t.cache;
    const h = withProvenance(apiHeaders('Content-Type', 'application/json'), route, t.cache);
    if (t.link !== undefined) h.push('Link', rewriteLink(t.link, info.path));
    sendBuffer(c.env.outgoing, 200, h, t.body, info.method === 'HEAD');
    return RESPONSE_ALREADY_SENT;
  }));
  app.get(`/v2/${NAME}/referrers/:digest`, handled((c) => {
    readRoute(c);
    throw new RegistryError('ENDPOINT_UNSUPPORTED', 'the referrers endpoint is not supported by this mirror');
  }));

  /** GET (or POST, as containerd tries first: refused so it falls back) of the token endpoint. */
  async function issueToken(auth: Authenticator, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD') {
      throw new RegistryError('UNSUPPORTED', 'the token endpoint answers GET with Basic credentials (or none, for an anonymous token)', { headers: { Allow: 'GET' } });
    }
    const basic = Authenticator.basic(req.headers.authorization);
    let user;
    if (basic !== undefined && basic.name !== '') {
      user = await auth.checkPassword(basic.name, basic.password);
      if (user === undefined) throw new RegistryError('UNAUTHORIZED', `wrong user name or password for "${basic.name.slice(0, 64)}"`);
    }
    const t = auth.issueToken(user);
    const body = Buffer.from(JSON.stringify({ token: t.token, access_token: t.token, expires_in: t.expiresIn, issued_at: t.issuedAt }));
    sendBuffer(res, 200, ['Content-Type', 'application/json', 'Cache-Control', 'no-store'], body, method === 'HEAD');
  }

  /** Push API: uploads, manifest PUT, DELETE (authorized by the caller). */
  async function handleWrite(info: RequestInfo, req: IncomingMessage, res: ServerResponse, params: URLSearchParams, route: Route, pusher: Pusher, identity: Identity): Promise<void> {
    const method = info.method;
    const path = info.path;
    const reply = (status: number, headers: HeaderList): void => sendBuffer(res, status, apiHeaders(...headers), undefined, false);
    const answer = (a: UploadAnswer, prefix: string, statusForAccepted = 202): void => {
      if (a.kind === 'created') {
        info.digest = a.digest;
        reply(201, ['Location', `${prefix}/blobs/${a.digest}`, 'Docker-Content-Digest', a.digest]);
      } else {
        reply(statusForAccepted, ['Location', `${prefix}/blobs/uploads/${a.id}`, 'Range', `0-${Math.max(a.size - 1, 0)}`, 'Docker-Upload-UUID', a.id]);
      }
    };
    if (route.kind === 'upload') {
      const prefix = path.slice(0, path.indexOf('/blobs/uploads'));
      const id = route.uploadPath ?? '';
      if (id === '') {
        if (method !== 'POST') throw new RegistryError('UNSUPPORTED', `${method} needs an upload id: start uploads with POST ${prefix}/blobs/uploads/`);
        const mount = params.get('mount') ?? undefined;
        const from = params.get('from') ?? undefined;
        let fromRoute: Route | undefined;
        if (mount !== undefined && from !== undefined) {
          try {
            const r = routeRequest(`/v2/${from}/blobs/${mount}`, undefined, routing());
            const readable = r.registry !== undefined || deps.auth?.anonymousLocalPull === true || identity.user?.roles.has('pull') === true;
            if (readable) fromRoute = r;
          } catch {
            /* an unknown source repository: a regular upload instead (distribution-spec) */
          }
        }
        const digest = params.get('digest') ?? undefined;
        answer(await pusher.startUpload(route, { ...(digest === undefined ? {} : { digest }), ...(mount === undefined ? {} : { mount }), ...(fromRoute === undefined ? {} : { fromRoute }) }, req), prefix);
        return;
      }
      switch (method) {
        case 'PATCH':
          answer(await pusher.patchUpload(route, id, req, rangeStart(req.headers['content-range'])), prefix);
          return;
        case 'PUT':
          answer(await pusher.finishUpload(route, id, params.get('digest') ?? undefined, req), prefix);
          return;
        case 'GET':
        case 'HEAD':
          answer(await pusher.uploadStatus(route, id), prefix, 204);
          return;
        case 'DELETE':
          await pusher.cancelUpload(route, id);
          reply(204, []);
          return;
        default:
          throw new RegistryError('UNSUPPORTED', `${method} is not an upload method (POST, PATCH, PUT, GET, DELETE)`);
      }
    }
    if (route.kind === 'manifest' && method === 'PUT') {
      const bytes = await readBody(req, MAX_MANIFEST_BYTES);
      const digest = await pusher.putManifest(route, req.headers['content-type'], bytes);
      info.digest = digest;
      const prefix = path.slice(0, path.lastIndexOf('/manifests/'));
      reply(201, ['Location', `${prefix}/manifests/${digest}`, 'Docker-Content-Digest', digest]);
      return;
    }
    if (method === 'DELETE' && route.kind === 'manifest') {
      await pusher.deleteManifest(route);
      reply(202, []);
      return;
    }
    if (method === 'DELETE' && route.kind === 'blob') {
      await pusher.deleteBlob(route);
      reply(202, []);
      return;
    }
    throw new RegistryError('UNSUPPORTED', `${method} is not supported on the ${route.kind} endpoint`);
  }

  async function serveBlob(info: RequestInfo, req: IncomingMessage, res: ServerResponse, route: Route): Promise<void> {
    const head = info.method === 'HEAD';
    // An HTTP/1.0 client (or a proxy speaking HTTP/1.0 to the mirror, as stock nginx does) reads a
    // body to the close: without a length, a cut transfer would look complete to it.
    const blob = await mirror.getBlob(route, head, req.httpVersionMajor === 1 && req.httpVersionMinor === 0);
    info.cache = blob.cache;
    info.digest = blob.digest;
    const h = apiHeaders('Content-Type', 'application/octet-stream', 'Docker-Content-Digest', blob.digest, 'ETag', `"${blob.digest}"`, 'Accept-Ranges', 'bytes');
    withProvenance(h, route, blob.cache);
    let status = 200;
    let start = 0;
    let end: number | undefined;
    if (blob.size !== undefined) {
      const range = parseRange(req.headers.range, blob.size);
      if (range.kind === 'unsatisfiable') {
        blob.discard();
        sendError(res, new RegistryError('RANGE_INVALID', `requested range not satisfiable for a blob of ${blob.size} bytes`), head, ['Content-Range', `bytes */${blob.size}`]);
        return;
      }
      end = blob.size;
      if (range.kind === 'range') {
        status = 206;
        start = range.start;
        end = range.end;
        h.push('Content-Range', `bytes ${start}-${end - 1}/${blob.size}`);
      }
      h.push('Content-Length', end - start);
    }
    if (head) {
      blob.discard();
      res.writeHead(status, h);
      res.end();
      return;
    }
    try {
      await blob.sendTo(res, () => res.writeHead(status, h), start, end);
    } catch (e) {
      if (e instanceof RegistryError && !res.headersSent) throw e;
      res.destroy();
      const err = e as NodeJS.ErrnoException;
      info.error = err.message;
      if (err.code !== 'ERR_STREAM_PREMATURE_CLOSE') log.warn({ reqId: info.id, digest: blob.digest, err: err.message }, 'blob transfer failed');
    }
  }

  return app;
}

/**
 * The fetch callback for @hono/node-server (HTTP/1.1 servers: the bindings are node:http's).
 * hono answers HEAD by running the GET route inside an extra async frame and wrapping its Response
 * in a new one, which drops node-server's "already sent" marker: node-server then writes the head
 * a second time (ERR_HTTP_HEADERS_SENT on every HEAD), and the wrapper alone cost 10-19 % of warm
 * manifest HEAD req/s (test/bench/ab.ts). So a HEAD is dispatched to the GET routes directly: its
 * request's method reads GET from here on; handlers take the method from the Node request
 * and answer HEAD without a body, and node:http never sends a body on a HEAD response anyway.
 */
export function nodeFetch(app: Hono<Env> | Hono<{ Bindings: HttpBindings }>): (request: Request, env: HttpBindings | Http2Bindings) => Response | Promise<Response> {
  return (request, env) => {
    if (request.method === 'HEAD') readAsGet(request);
    return app.fetch(request, env as HttpBindings);
  };
}

/**
 * node-server's request keeps its method under a private symbol its `method` getter reads: found
 * once (by its description and value), a HEAD becomes GET with one plain store. An own `method`
 * property over the getter (the fallback, should a node-server release rename the symbol) costs a
 * shape change and a runtime call per HEAD.
 */
let methodSymbol: symbol | null | undefined;
function readAsGet(request: Request): void {
  const r = request as unknown as Record<symbol, unknown>;
  if (methodSymbol === undefined) {
    methodSymbol = Object.getOwnPropertySymbols(request).find((s) => s.description === 'methodKey' && r[s] === 'HEAD') ?? null;
    if (methodSymbol !== null) {
      r[methodSymbol] = 'GET';
      if (request.method === 'GET') return;
      r[methodSymbol] = 'HEAD';
      methodSymbol = null;
    }
  }
  if (methodSymbol !== null) r[methodSymbol] = 'GET';
  else Object.defineProperty(request, 'method', AS_GET);
}
const AS_GET: PropertyDescriptor = { value: 'GET' };

function tagsQuery(params: URLSearchParams): string {
  const out = new URLSearchParams();
  const n = params.get('n');
  const last = params.get('last');
  if (n !== null && /^\d{1,6}$/.test(n)) out.set('n', n);
  if (last !== null && last.length <= 256) out.set('last', last);
  const s = out.toString();
  return s === '' ? '' : `?${s}`;
}

/** Points an upstream pagination Link at the same path on the mirror. */
function rewriteLink(link: string, path: string): string {
  const m = /<([^>]*)>(.*)$/.exec(link);
  if (m === null) return link;
  try {
    const u = new URL(m[1] ?? '', 'http://upstream.invalid');
    return `<${path}${u.search}>${m[2] ?? ''}`;
  } catch {
    return link;
  }
}
