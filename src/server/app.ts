/**
 * The HTTP face: hono on @hono/node-server. /v2 requests are routed by the pure routing function,
 * answered by the Mirror, and written straight to the Node response (blobs stream with
 * backpressure; a failed fill destroys the connection, so the client sees a failed transfer).
 * Every failure is an OCI error envelope. This module never touches disk or SQL.
 */
import { pipeline } from 'node:stream/promises';
import type { ServerResponse, IncomingMessage } from 'node:http';
import { Hono } from 'hono';
import type { HttpBindings, Http2Bindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { RegistryError, renderErrorBody } from '../oci/index.ts';
import { isBasePath, routeRequest, type Route, type RoutingTable } from '../routing/index.ts';
import type { Mirror, CacheResult } from '../mirror/index.ts';
import type { Logger } from '../log/index.ts';
import { parseRange } from './range.ts';

export interface AppDeps {
  mirror: Mirror;
  routing: RoutingTable;
  log: Logger;
  /** Routes mounted ahead of the registry API (the provenance API), if served on this listener. */
  admin?: Hono<{ Bindings: HttpBindings }>;
}

type Headers = Record<string, string | number>;

const API_VERSION = { 'Docker-Distribution-API-Version': 'registry/2.0' };

/** Per-request facts gathered for the access log line. */
interface RequestInfo {
  id: string;
  method: string;
  path: string;
  registry?: string;
  repo?: string;
  cache?: CacheResult;
  digest?: string;
}

let requestCounter = 0;
const REQUEST_ID_PREFIX = process.pid.toString(36);

function provenanceHeaders(route: Route, cache: CacheResult): Headers {
  const h: Headers = {
    'X-Regmirror-Cache': cache,
    'X-Regmirror-Registry': route.registry ?? `local/${route.namespace ?? ''}`,
  };
  if (route.ociNamespace !== undefined) h['OCI-Namespace'] = route.ociNamespace;
  return h;
}

function sendBuffer(res: ServerResponse, status: number, headers: Headers, body: Buffer | undefined, head: boolean): void {
  res.writeHead(status, { ...headers, 'Content-Length': body?.byteLength ?? 0 });
  res.end(head ? undefined : body);
}

function sendError(res: ServerResponse, err: RegistryError, head: boolean, extra: Headers = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = Buffer.from(renderErrorBody(err));
  sendBuffer(res, err.status, { ...API_VERSION, ...extra, ...err.headers, 'Content-Type': 'application/json' }, body, head);
}

/** Builds the hono app. */
export function createApp(deps: AppDeps): Hono<{ Bindings: HttpBindings }> {
  const { mirror, routing, log } = deps;
  const app = new Hono<{ Bindings: HttpBindings }>();
  if (deps.admin !== undefined) app.route('/', deps.admin);

  app.all('*', async (c) => {
    const req: IncomingMessage = c.env.incoming;
    const res: ServerResponse = c.env.outgoing;
    const started = performance.now();
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
    const incomingId = req.headers['x-request-id'];
    const id = typeof incomingId === 'string' && /^[\w.-]{1,64}$/.test(incomingId) ? incomingId : `${REQUEST_ID_PREFIX}-${(++requestCounter).toString(36)}`;
    const info: RequestInfo = { id, method: req.method ?? 'GET', path };
    res.setHeader('X-Request-Id', id);
    res.once('close', () => {
      const fields = { reqId: id, method: info.method, path, status: res.statusCode, registry: info.registry, repo: info.repo, digest: info.digest, cache: info.cache, durationMs: Math.round(performance.now() - started), complete: res.writableFinished };
      if (res.statusCode >= 500 || !res.writableFinished) log.warn(fields, 'request');
      else log.info(fields, 'request');
    });
    const head = info.method === 'HEAD';
    try {
      await handle(info, req, res, path, q === -1 ? '' : rawUrl.slice(q), head);
    } catch (e) {
      const err = e instanceof RegistryError ? e : new RegistryError('UNKNOWN', 'internal error; see the mirror log');
      if (!(e instanceof RegistryError)) log.error({ reqId: id, err: e }, 'unhandled error');
      sendError(res, err, head);
    }
    return RESPONSE_ALREADY_SENT;
  });

  async function handle(info: RequestInfo, req: IncomingMessage, res: ServerResponse, path: string, query: string, head: boolean): Promise<void> {
    const method = info.method;
    if (!path.startsWith('/v2/') && path !== '/v2') {
      throw new RegistryError('NAME_UNKNOWN', `no such endpoint ${path.slice(0, 100)}: regmirror serves the registry API under /v2/`, { status: 404 });
    }
    if (isBasePath(path)) {
      if (method !== 'GET' && method !== 'HEAD') throw new RegistryError('UNSUPPORTED', `${method} is not supported on /v2/`, { status: 405 });
      sendBuffer(res, 200, { ...API_VERSION, 'Content-Type': 'application/json' }, Buffer.from('{}'), head);
      return;
    }
    const params = new URLSearchParams(query);
    const route = routeRequest(path, params.get('ns') ?? undefined, routing);
    info.registry = route.registry ?? `local/${route.namespace ?? ''}`;
    info.repo = route.upstreamRepo;
    if (method !== 'GET' && method !== 'HEAD') {
      // OCI conformance expects 400/404 (not 405) for writes to a read-only registry (DESIGN §9).
      throw new RegistryError('UNSUPPORTED', `${method} is not supported: regmirror mirrors ${info.registry} read-only (pull API only)`, { status: 400 });
    }
    switch (route.kind) {
      case 'manifest': {
        const m = await mirror.getManifest(route);
        info.cache = m.cache;
        info.digest = m.digest;
        sendBuffer(res, 200, {
          ...API_VERSION,
          'Content-Type': m.mediaType,
          'Docker-Content-Digest': m.digest,
          ETag: `"${m.digest}"`,
          ...provenanceHeaders(route, m.cache),
        }, m.bytes, head);
        return;
      }
      case 'blob':
        await serveBlob(info, req, res, route, head);
        return;
      case 'tags': {
        const t = await mirror.listTags(route, tagsQuery(params));
        info.cache = t.cache;
        const h: Headers = { ...API_VERSION, 'Content-Type': 'application/json', ...provenanceHeaders(route, t.cache) };
        if (t.link !== undefined) h.Link = rewriteLink(t.link, path);
        sendBuffer(res, 200, h, t.body, head);
        return;
      }
      default:
        throw new RegistryError('UNSUPPORTED', `the ${route.kind} endpoint is not supported by this mirror`, { status: 404 });
    }
  }

  async function serveBlob(info: RequestInfo, req: IncomingMessage, res: ServerResponse, route: Route, head: boolean): Promise<void> {
    const blob = await mirror.getBlob(route, head);
    info.cache = blob.cache;
    info.digest = blob.digest;
    const base: Headers = {
      ...API_VERSION,
      'Content-Type': 'application/octet-stream',
      'Docker-Content-Digest': blob.digest,
      ETag: `"${blob.digest}"`,
      'Accept-Ranges': 'bytes',
      ...provenanceHeaders(route, blob.cache),
    };
    let status = 200;
    let start = 0;
    let end: number | undefined;
    if (blob.size !== undefined) {
      const range = parseRange(req.headers.range, blob.size);
      if (range.kind === 'unsatisfiable') {
        blob.discard();
        sendError(res, new RegistryError('RANGE_INVALID', `requested range not satisfiable for a blob of ${blob.size} bytes`), head, { 'Content-Range': `bytes */${blob.size}` });
        return;
      }
      end = blob.size;
      if (range.kind === 'range') {
        status = 206;
        start = range.start;
        end = range.end;
        base['Content-Range'] = `bytes ${start}-${end - 1}/${blob.size}`;
      }
      base['Content-Length'] = end - start;
    }
    if (head) {
      blob.discard();
      res.writeHead(status, base);
      res.end();
      return;
    }
    const body = await blob.open(start, end);
    res.writeHead(status, base);
    try {
      await pipeline(body, res);
    } catch (e) {
      res.destroy();
      const err = e as NodeJS.ErrnoException;
      if (err.code !== 'ERR_STREAM_PREMATURE_CLOSE') log.warn({ reqId: info.id, digest: blob.digest, err: err.message }, 'blob transfer failed');
    }
  }

  return app;
}

/**
 * The fetch callback for @hono/node-server. hono answers HEAD by running the GET handler and
 * rebuilding the Response, which loses node-server's "already sent" marker; our handlers read the
 * method from the raw Node request and write HEAD answers themselves, so hono is handed a GET.
 */
export function nodeFetch(app: Hono<{ Bindings: HttpBindings }>): (request: Request, env: HttpBindings | Http2Bindings) => Response | Promise<Response> {
  return (request, env) =>
    app.fetch(request.method === 'HEAD' ? new Request(request.url, { method: 'GET', headers: request.headers }) : request, env as HttpBindings);
}

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
