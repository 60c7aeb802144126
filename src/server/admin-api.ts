/**
 * The mirror's own API under /_regmirror/v1/ (a prefix no /v2 repository name can take):
 *   GET /_regmirror/v1/provenance?image=gcr.io/foo/bar:1.0    one image: digest, repoDigests, source, times, counts
 *   GET /_regmirror/v1/provenance?registry=&repo=&since=&limit=&offset=   records, newest first
 *   GET /_regmirror/v1/summary                                  hit ratio, bytes from cache vs fetched
 *   GET    /_regmirror/v1/cache/images[?registry=]              `regmirror cache ls`
 *   GET    /_regmirror/v1/cache/usage                           `regmirror cache du`
 *   DELETE /_regmirror/v1/cache/images?image=IMAGE             `regmirror cache rm`
 *   PUT / DELETE /_regmirror/v1/cache/pins?image=IMAGE          `regmirror cache pin / unpin`
 *   POST   /_regmirror/v1/cache/gc[?dry_run=true]               `regmirror cache gc`
 * The cache endpoints need a user with the "admin" role (Basic credentials or a token from the
 * mirror's token endpoint); without [auth] there is no such user and the ones that change the cache
 * are refused, never open. Never shows credentials: records hold endpoint URLs only.
 */
import { Hono, type Context } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import { RegistryError, renderErrorBody } from '../oci/index.ts';
import type { ProvenanceQuery } from '../mirror/index.ts';
import { requireRole, type Authenticator } from './auth.ts';
import type { RemovalDeps } from '../lifecycle/index.ts';
import { collectGarbage, diskUsage, imageSummary, listImages, pinImage, removeImage, unpinImage, type CacheRef } from '../lifecycle/cache-admin.ts';

/** What the cache endpoints need: the stores, how to read an IMAGE, the grace period for gc. */
export interface CacheApiDeps extends RemovalDeps {
  resolve(image: string): CacheRef;
  graceMs: number;
  auth?: Authenticator;
}

const JSON_HEADERS = { 'Content-Type': 'application/json' };

export function fail(err: unknown): Response {
  const e = err instanceof RegistryError ? err : new RegistryError('UNKNOWN', 'internal error; see the mirror log');
  return new Response(renderErrorBody(e), { status: e.status, headers: { ...JSON_HEADERS, ...(e.headers ?? {}) } });
}

function intParam(v: string | undefined, name: string, def: number, max: number): number {
  if (v === undefined || v === '') return def;
  if (!/^\d+$/.test(v) || Number(v) > max) throw new RegistryError('BAD_REQUEST', `${name} must be a whole number up to ${max}`);
  return Number(v);
}

/** Builds the API routes; `mirrorHost` gives the host shown in repo digests (external_url or the listener). */
export function createAdminApi(query: ProvenanceQuery, mirrorHost: () => string, cache?: CacheApiDeps): Hono<{ Bindings: HttpBindings }> {
  const api = new Hono<{ Bindings: HttpBindings }>();
  if (cache !== undefined) mountCacheApi(api, cache);
  api.get('/_regmirror/v1/provenance', async (c) => {
    try {
      const host = mirrorHost();
      const image = c.req.query('image');
      if (image !== undefined) return c.json(await query.describe(image, host));
      const limit = intParam(c.req.query('limit'), 'limit', 100, 1000);
      const offset = intParam(c.req.query('offset'), 'offset', 0, 1e9);
      const sinceRaw = c.req.query('since');
      let since: number | undefined;
      if (sinceRaw !== undefined) {
        since = Date.parse(sinceRaw);
        if (Number.isNaN(since)) throw new RegistryError('BAD_REQUEST', 'since must be an ISO 8601 time, e.g. 2026-01-31T00:00:00Z');
      }
      const registry = c.req.query('registry');
      const repository = c.req.query('repo');
      const items = await query.list({ limit, offset, ...(registry === undefined ? {} : { registry }), ...(repository === undefined ? {} : { repository }), ...(since === undefined ? {} : { since }) }, host);
      return c.json({ items, next: items.length === limit ? offset + limit : null });
    } catch (e) {
      return fail(e);
    }
  });
  api.get('/_regmirror/v1/summary', async (c) => {
    try {
      return c.json(await query.summary());
    } catch (e) {
      return fail(e);
    }
  });
  api.all('/_regmirror/v1/*', () => fail(new RegistryError('NAME_UNKNOWN', 'unknown API endpoint: see /_regmirror/v1/provenance, /_regmirror/v1/summary and /_regmirror/v1/cache/')));
  return api;
}

/** The cache endpoints; every one checks the admin role first (a change without [auth]: refused). */
function mountCacheApi(api: Hono<{ Bindings: HttpBindings }>, deps: CacheApiDeps): void {
  const admin = async (header: string | undefined, changes: boolean): Promise<void> => {
    if (deps.auth === undefined) {
      if (!changes) return;
      throw new RegistryError('DENIED', 'changing the cache over the API needs a user with the "admin" role: add [auth] with [[auth.user]] roles = ["admin"] to mirror.toml (or run regmirror cache ... on the mirror host)');
    }
    await requireRole(deps.auth, header, 'admin', 'the cache API');
  };
  const image = (v: string | undefined): CacheRef => {
    if (v === undefined || v === '') throw new RegistryError('BAD_REQUEST', 'name the image: ?image=gcr.io/foo/bar:1.0');
    return deps.resolve(v);
  };
  const handle = (changes: boolean, fn: (c: { req: { query(k: string): string | undefined; header(k: string): string | undefined } }) => Promise<unknown>) =>
    async (c: Context<{ Bindings: HttpBindings }>): Promise<Response> => {
      try {
        await admin(c.req.header('authorization'), changes);
        return c.json(await fn(c));
      } catch (e) {
        return fail(e);
      }
    };
  api.get('/_regmirror/v1/cache/images', handle(false, async (c) => {
    const images = await listImages(deps.meta, c.req.query('registry'));
    return { images: images.map(imageSummary) };
  }));
  api.get('/_regmirror/v1/cache/usage', handle(false, () => diskUsage(deps.meta)));
  api.delete('/_regmirror/v1/cache/images', handle(true, async (c) => {
    const name = c.req.query('image');
    const r = await removeImage(deps, image(name));
    if (r === undefined) throw new RegistryError('MANIFEST_UNKNOWN', `${name ?? ''} is not in the cache`);
    return { image: name, digest: r.image.root, bytes: r.bytes };
  }));
  api.put('/_regmirror/v1/cache/pins', handle(true, async (c) => {
    const ref = image(c.req.query('image'));
    await pinImage(deps.meta, ref, 'cli');
    return { pinned: c.req.query('image') };
  }));
  api.delete('/_regmirror/v1/cache/pins', handle(true, async (c) => {
    const ref = image(c.req.query('image'));
    if (!(await unpinImage(deps.meta, ref))) throw new RegistryError('NAME_UNKNOWN', `${c.req.query('image') ?? ''} is not pinned`);
    return { unpinned: c.req.query('image') };
  }));
  api.post('/_regmirror/v1/cache/gc', handle(true, (c) => collectGarbage(deps, { graceMs: deps.graceMs, dryRun: c.req.query('dry_run') === 'true' })));
}
