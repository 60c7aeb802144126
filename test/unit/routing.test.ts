import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildRoutingTable, routeRequest, looksLikeHost, type Route } from '../../src/routing/index.ts';
import { RegistryError } from '../../src/oci/index.ts';

const D = `sha256:${'ab'.repeat(32)}`;
const table = buildRoutingTable(
  ['docker.io', 'gcr.io', 'quay.io', 'localhost:5001', 'registry.local:5000'],
  [
    { name: 'test-namespace', registry: 'gcr.io' },
    { name: 'hub', registry: 'docker.io' },
    { name: 'airgap' },
  ],
  'docker.io',
);

type Want = Partial<Pick<Route, 'kind' | 'registry' | 'upstreamRepo' | 'localRepo' | 'via' | 'namespace' | 'ociNamespace'>> & { ref?: string };
const cases: Array<[string, string, string | undefined, Want]> = [
  ['ns parameter (containerd)', `/v2/foo/bar/manifests/1.0`, 'gcr.io', { registry: 'gcr.io', upstreamRepo: 'foo/bar', via: 'ns', ociNamespace: 'gcr.io', kind: 'manifest', ref: '1.0' }],
  ['ns parameter wins over the default for one-segment names', `/v2/pause/manifests/3.9`, 'registry.k8s.io'.replace('registry.k8s.io', 'quay.io'), { registry: 'quay.io', upstreamRepo: 'pause', via: 'ns' }],
  ['ns=docker.io adds library/', `/v2/nginx/manifests/latest`, 'docker.io', { registry: 'docker.io', upstreamRepo: 'library/nginx', via: 'ns', ociNamespace: 'docker.io' }],
  ['ns alias index.docker.io folds to docker.io', `/v2/library/nginx/blobs/${D}`, 'index.docker.io', { registry: 'docker.io', upstreamRepo: 'library/nginx', kind: 'blob', ref: D }],
  ['namespace prefix', `/v2/test-namespace/foo/bar/manifests/v1`, undefined, { registry: 'gcr.io', upstreamRepo: 'foo/bar', via: 'namespace', namespace: 'test-namespace' }],
  ['namespace prefix with ns', `/v2/test-namespace/foo/bar/manifests/v1`, 'gcr.io', { registry: 'gcr.io', upstreamRepo: 'foo/bar', via: 'ns', namespace: 'test-namespace', ociNamespace: 'gcr.io' }],
  ['doubled /v2/<ns>/v2/ (containerd without override_path)', `/v2/test-namespace/v2/foo/bar/manifests/v1`, 'gcr.io', { registry: 'gcr.io', upstreamRepo: 'foo/bar', namespace: 'test-namespace' }],
  ['doubled form for blobs', `/v2/test-namespace/v2/foo/blobs/${D}`, 'gcr.io', { registry: 'gcr.io', upstreamRepo: 'foo', kind: 'blob' }],
  ['namespace mapped to docker.io adds library/', `/v2/hub/nginx/manifests/1`, undefined, { registry: 'docker.io', upstreamRepo: 'library/nginx' }],
  ['host-prefixed (registries.conf)', `/v2/gcr.io/foo/bar/manifests/1.0`, undefined, { registry: 'gcr.io', upstreamRepo: 'foo/bar', via: 'host', localRepo: 'gcr.io/foo/bar' }],
  ['host-prefixed with port', `/v2/registry.local:5000/team/app/tags/list`, undefined, { registry: 'registry.local:5000', upstreamRepo: 'team/app', kind: 'tags' }],
  ['host-prefixed localhost with port', `/v2/localhost:5001/app/manifests/v1`, undefined, { registry: 'localhost:5001', upstreamRepo: 'app' }],
  ['host-prefixed docker.io alias', `/v2/registry-1.docker.io/busybox/manifests/1`, undefined, { registry: 'docker.io', upstreamRepo: 'library/busybox', via: 'host' }],
  ['default registry (Docker registry-mirrors)', `/v2/library/nginx/manifests/latest`, undefined, { registry: 'docker.io', upstreamRepo: 'library/nginx', via: 'default', localRepo: 'docker.io/library/nginx' }],
  ['default registry adds library/ to one segment', `/v2/nginx/manifests/latest`, undefined, { registry: 'docker.io', upstreamRepo: 'library/nginx' }],
  ['default registry keeps two segments', `/v2/bitnami/redis/manifests/7`, undefined, { registry: 'docker.io', upstreamRepo: 'bitnami/redis' }],
  ['manifest by digest', `/v2/gcr.io/foo/manifests/${D}`, undefined, { kind: 'manifest', ref: D }],
  ['local namespace ignores ns', `/v2/airgap/foo/manifests/v1`, 'gcr.io', { registry: undefined, via: 'local', localRepo: '_local/airgap/foo', upstreamRepo: 'foo' }],
  ['repo named like an endpoint word', `/v2/gcr.io/a/manifests/b/manifests/v1`, undefined, { upstreamRepo: 'a/manifests/b' }],
  ['referrers', `/v2/gcr.io/foo/referrers/${D}`, undefined, { kind: 'referrers', ref: D }],
  ['upload path', `/v2/airgap/foo/blobs/uploads/`, undefined, { kind: 'upload', localRepo: '_local/airgap/foo' }],
];

for (const [name, path, ns, want] of cases) {
  test(`routes ${name}: ${path}${ns === undefined ? '' : ` ns=${ns}`}`, () => {
    const r = routeRequest(path, ns, table);
    const { ref, ...rest } = want;
    for (const [k, v] of Object.entries(rest)) assert.deepEqual(r[k as keyof Route], v, k);
    if (ref !== undefined) {
      const actual = r.reference?.kind === 'tag' ? r.reference.tag : r.reference?.digest;
      assert.equal(actual, ref);
    }
  });
}

const errors: Array<[string, string, string | undefined, string]> = [
  ['unconfigured host prefix is refused', '/v2/evil.com/x/manifests/1', undefined, 'DENIED'],
  ['unconfigured ns is refused', '/v2/x/manifests/1', 'evil.com', 'DENIED'],
  ['bad ns value', '/v2/x/manifests/1', 'a b', 'NAME_INVALID'],
  ['dot-dot path', '/v2/gcr.io/../etc/manifests/1', undefined, 'NAME_INVALID'],
  ['leading dot-dot', '/v2/../etc/manifests/1', undefined, 'NAME_INVALID'],
  ['percent-encoding', '/v2/gcr.io/a%2fb/manifests/1', undefined, 'NAME_INVALID'],
  ['upper-case name', '/v2/gcr.io/Foo/manifests/1', undefined, 'NAME_INVALID'],
  ['empty component', '/v2/gcr.io/a//b/manifests/1', undefined, 'NAME_INVALID'],
  ['bad tag', '/v2/gcr.io/a/manifests/.hidden', undefined, 'TAG_INVALID'],
  ['too-long tag', `/v2/gcr.io/a/manifests/${'t'.repeat(129)}`, undefined, 'TAG_INVALID'],
  ['bad digest hex', '/v2/gcr.io/a/blobs/sha256:xyz', undefined, 'DIGEST_INVALID'],
  ['upper-case digest hex', `/v2/gcr.io/a/blobs/sha256:${'AB'.repeat(32)}`, undefined, 'DIGEST_INVALID'],
  ['unknown algorithm', `/v2/gcr.io/a/blobs/md5:${'a'.repeat(32)}`, undefined, 'UNSUPPORTED'],
  ['blob by tag', '/v2/gcr.io/a/blobs/latest', undefined, 'DIGEST_INVALID'],
  ['not an endpoint', '/v2/gcr.io/a/b', undefined, 'NAME_UNKNOWN'],
];
for (const [name, path, ns, code] of errors) {
  test(`refuses ${name} with ${code}`, () => {
    assert.throws(() => routeRequest(path, ns, table), (e: unknown) => e instanceof RegistryError && e.code === code && e.status >= 400 && e.status < 500);
  });
}

test('no default registry: a path without a registry is refused with advice', () => {
  const t = buildRoutingTable(['gcr.io'], [], '');
  assert.throws(() => routeRequest('/v2/foo/manifests/1', undefined, t), /host-prefixed path/);
});

test('looksLikeHost follows DESIGN §1: a dot, a colon, or localhost', () => {
  assert.equal(looksLikeHost('gcr.io'), true);
  assert.equal(looksLikeHost('localhost'), true);
  assert.equal(looksLikeHost('host:5000'), true);
  assert.equal(looksLikeHost('library'), false);
});

test('image references resolve by the same registry rule as request paths', async () => {
  const { parseImageRef } = await import('../../src/mirror/index.ts');
  const D2 = `sha256:${'cd'.repeat(32)}`;
  assert.deepEqual(parseImageRef('nginx', table), { registry: 'docker.io', repository: 'library/nginx', tag: 'latest' });
  assert.deepEqual(parseImageRef('index.docker.io/bitnami/redis:7', table), { registry: 'docker.io', repository: 'bitnami/redis', tag: '7' });
  assert.deepEqual(parseImageRef(`gcr.io/foo/bar@${D2}`, table), { registry: 'gcr.io', repository: 'foo/bar', digest: D2 });
  assert.deepEqual(parseImageRef('registry.local:5000/team/app:v1', table), { registry: 'registry.local:5000', repository: 'team/app', tag: 'v1' });
  assert.throws(() => parseImageRef('evil.com/x:1', table), (e: unknown) => e instanceof RegistryError && e.code === 'DENIED');
  assert.throws(() => parseImageRef('-bad-.io/x:1', table), (e: unknown) => e instanceof RegistryError && e.code === 'NAME_INVALID');
  assert.throws(() => parseImageRef('gcr.io/Foo:1', table), (e: unknown) => e instanceof RegistryError && e.code === 'NAME_INVALID');
});

test('routeImage routes an image reference like a pull of it through the mirror', async () => {
  const { routeImage } = await import('../../src/routing/index.ts');
  const a = routeImage('gcr.io/foo/bar:1.0', table);
  assert.deepEqual([a.route.localRepo, a.tag, a.digest, a.route.reference], ['gcr.io/foo/bar', '1.0', undefined, { kind: 'tag', tag: '1.0' }]);
  const b = routeImage(`test-namespace/foo/bar:1.0@${D}`, table);
  assert.deepEqual([b.route.localRepo, b.tag, b.digest, b.route.reference], ['gcr.io/foo/bar', '1.0', D, { kind: 'digest', digest: D }]);
  const c = routeImage('airgap/team/app', table);
  assert.deepEqual([c.route.registry, c.route.localRepo, c.tag], [undefined, '_local/airgap/team/app', 'latest']);
  assert.equal(routeImage('localhost:5001/app:v1', table).route.localRepo, 'localhost:5001/app');
  assert.equal(routeImage('nginx', table).route.localRepo, 'docker.io/library/nginx');
  for (const bad of ['', '/x', 'a//b:1', 'gcr.io/x:bad tag', 'gcr.io/x@sha256:nothex']) {
    assert.throws(() => routeImage(bad, table), (e: unknown) => e instanceof RegistryError, bad);
  }
});

test('image lists: one reference per line, comments and blank lines skipped', async () => {
  const { parseImageList } = await import('../../src/cli/progress.ts');
  assert.deepEqual(parseImageList('# header\n\ngcr.io/a:1  # trailing\n  nginx\r\nquay.io/x@sha256:ab#not-a-comment\n'), [
    { image: 'gcr.io/a:1', line: 3 },
    { image: 'nginx', line: 4 },
    { image: 'quay.io/x@sha256:ab#not-a-comment', line: 5 },
  ]);
});
