import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PatternRouter } from 'hono/router/pattern-router';
import { LiteralCheckedRouter } from '../../src/server/router.ts';

// The app's routes (server/app.ts, server/admin-api.ts), in their order.
const NAME = ':name{.+}';
const ROUTES: Array<[string, string]> = [
  ['ALL', '/_regmirror/*'],
  ['GET', '/_regmirror/v1/cache/images'],
  ['DELETE', '/_regmirror/v1/cache/images'],
  ['GET', '/_regmirror/v1/provenance'],
  ['ALL', '/_regmirror/v1/*'],
  ['ALL', '/token'],
  ['ALL', '/v2'],
  ['ALL', '/v2/'],
  ['POST', `/v2/${NAME}/blobs/uploads`],
  ['GET', `/v2/${NAME}/blobs/uploads`],
  ['PATCH', `/v2/${NAME}/blobs/uploads/*`],
  ['GET', `/v2/${NAME}/blobs/uploads/*`],
  ['PUT', `/v2/${NAME}/manifests/:reference`],
  ['GET', `/v2/${NAME}/manifests/:reference`],
  ['GET', `/v2/${NAME}/blobs/:digest`],
  ['DELETE', `/v2/${NAME}/blobs/:digest`],
  ['GET', `/v2/${NAME}/tags/list`],
  ['GET', `/v2/${NAME}/referrers/:digest`],
];

const PATHS = [
  '/v2', '/v2/', '/v2/gcr.io/a/b/manifests/latest', '/v2/a/manifests/sha256:00', '/v2/a/b/manifests/latest/',
  '/v2/a/blobs/sha256:00', '/v2/a/blobs/uploads', '/v2/a/blobs/uploads/', '/v2/a/blobs/uploads/abc', '/v2/a/tags/list',
  '/v2/a/referrers/sha256:00', '/v2/manifests/x', '/v2/a/manifests', '/v2/a/blobs/uploads/manifests/x',
  '/v2/library/blobs/manifests/tags/list', '/token', '/tokens', '/_regmirror', '/_regmirror/v1/provenance',
  '/_regmirror/v1/cache/images', '/_regmirror/v1/nope', '/other', '/', '/v20/a/manifests/x',
];

test('LiteralCheckedRouter matches exactly what PatternRouter matches, handlers in order with their params', () => {
  const plain = new PatternRouter<string>();
  const checked = new LiteralCheckedRouter<string>();
  for (const [method, path] of ROUTES) {
    plain.add(method, path, `${method} ${path}`);
    checked.add(method, path, `${method} ${path}`);
  }
  let matched = 0;
  for (const method of ['GET', 'POST', 'PATCH', 'PUT', 'DELETE']) {
    for (const path of PATHS) {
      const want = plain.match(method, path)[0];
      assert.deepEqual(checked.match(method, path)[0], want, `${method} ${path}`);
      matched += want.length;
    }
  }
  assert.ok(matched > 40, `the table exercises matches (${matched})`);
});

test('LiteralCheckedRouter gives the matching route with its params, and nothing for a path no route has', () => {
  const r = new LiteralCheckedRouter<string>();
  r.add('GET', `/v2/${NAME}/manifests/:reference`, 'manifest');
  r.add('GET', `/v2/${NAME}/blobs/:digest`, 'blob');
  const [found] = r.match('GET', '/v2/gcr.io/x/blobs/sha256:ab');
  assert.equal(found.length, 1);
  assert.equal(found[0]?.[0], 'blob');
  assert.deepEqual({ ...found[0]?.[1] }, { name: 'gcr.io/x', digest: 'sha256:ab' });
  assert.deepEqual(r.match('GET', '/v2/gcr.io/x/tags/list')[0], []);
});
