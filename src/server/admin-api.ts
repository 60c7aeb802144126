/**
 * The read-only provenance API under /_regmirror/v1/ (a prefix no /v2 repository name can take):
 *   GET /_regmirror/v1/provenance?image=gcr.io/foo/bar:1.0    one image: digest, repoDigests, source, times, counts
 *   GET /_regmirror/v1/provenance?registry=&repo=&since=&limit=&offset=   records, newest first
 *   GET /_regmirror/v1/summary                                  hit ratio, bytes from cache vs fetched
 * Never shows credentials: records hold endpoint URLs only.
 */
import { Hono } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import { RegistryError, renderErrorBody } from '../oci/index.ts';
import type { ProvenanceQuery } from '../mirror/index.ts';

const JSON_HEADERS = { 'Content-Type': 'application/json' };

function fail(err: unknown): Response {
  const e = err instanceof RegistryError ? err : new RegistryError('UNKNOWN', 'internal error; see the mirror log');
  return new Response(renderErrorBody(e), { status: e.status, headers: JSON_HEADERS });
}

function intParam(v: string | undefined, name: string, def: number, max: number): number {
  if (v === undefined || v === '') return def;
  if (!/^\d+$/.test(v) || Number(v) > max) throw new RegistryError('BAD_REQUEST', `${name} must be a whole number up to ${max}`);
  return Number(v);
}

/** Builds the API routes; `mirrorHost` gives the host shown in repo digests (external_url or the listener). */
export function createAdminApi(query: ProvenanceQuery, mirrorHost: () => string): Hono<{ Bindings: HttpBindings }> {
  const api = new Hono<{ Bindings: HttpBindings }>();
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
  api.all('/_regmirror/v1/*', () => fail(new RegistryError('NAME_UNKNOWN', 'unknown API endpoint: see /_regmirror/v1/provenance and /_regmirror/v1/summary')));
  return api;
}
