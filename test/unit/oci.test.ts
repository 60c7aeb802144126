import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ERRORS, parseDigest, digestOf, isValidRepoName, isValidTag, manifestMediaType, referencedDigests, renderErrorBody, RegistryError, OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST } from '../../src/oci/index.ts';

test('parseDigest accepts canonical sha256 and sha512', () => {
  const h = 'a'.repeat(64);
  assert.deepEqual(parseDigest(`sha256:${h}`), { algorithm: 'sha256', hex: h, value: `sha256:${h}` });
  assert.equal(parseDigest(`sha512:${'b'.repeat(128)}`).algorithm, 'sha512');
});

test('parseDigest rejects malformed, short, upper-case and unknown-algorithm digests with clear codes', () => {
  for (const bad of ['sha256:totallywrong', 'sha256:', 'sha256', `sha256:${'a'.repeat(63)}`, `sha256:${'A'.repeat(64)}`, `sha512:${'a'.repeat(64)}`, '../../etc', '']) {
    assert.throws(() => parseDigest(bad), (e: unknown) => e instanceof RegistryError && e.code === 'DIGEST_INVALID', bad);
  }
  assert.throws(() => parseDigest(`md5:${'a'.repeat(32)}`), (e: unknown) => e instanceof RegistryError && e.code === 'UNSUPPORTED' && e.status === 400);
});

test('digestOf hashes bytes', () => {
  assert.equal(digestOf(Buffer.from('')), 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
});

test('repository name grammar', () => {
  for (const ok of ['a', 'library/nginx', 'a.b_c__d-e--f/g', 'x/y/z/0']) assert.equal(isValidRepoName(ok), true, ok);
  for (const bad of ['', 'A', 'a/', '/a', 'a//b', '..', 'a/../b', 'a_', '-a', 'a___b', 'a.', 'a:b', `${'a'.repeat(256)}`]) assert.equal(isValidRepoName(bad), false, bad);
});

test('tag grammar', () => {
  for (const ok of ['latest', 'v1.0.0', '_x', 'A-b_c.d', 't'.repeat(128)]) assert.equal(isValidTag(ok), true, ok);
  for (const bad of ['', '.x', '-x', 'a/b', 'a:b', 't'.repeat(129)]) assert.equal(isValidTag(bad), false, bad);
});

test('manifest media type from Content-Type, body, or shape; schema 1 refused', () => {
  const oci = Buffer.from(JSON.stringify({ schemaVersion: 2, config: { digest: 'sha256:c' }, layers: [{ digest: 'sha256:l' }] }));
  assert.equal(manifestMediaType(`${DOCKER_MANIFEST}; charset=utf-8`, oci), DOCKER_MANIFEST);
  assert.equal(manifestMediaType('application/octet-stream', oci), OCI_MANIFEST);
  assert.equal(manifestMediaType(undefined, Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] }))), OCI_INDEX);
  assert.equal(manifestMediaType('application/vnd.docker.distribution.manifest.v1+prettyjws', Buffer.from('{"schemaVersion":1}')), undefined);
  assert.equal(manifestMediaType(undefined, Buffer.from('not json')), undefined);
  assert.deepEqual(referencedDigests(oci), { blobs: ['sha256:c', 'sha256:l'], manifests: [] });
});

test('error envelope has code, message and optional detail', () => {
  const e = new RegistryError('BLOB_UNKNOWN', 'gone', { detail: { d: 1 } });
  assert.equal(e.status, 404);
  assert.deepEqual(JSON.parse(renderErrorBody(e)), { errors: [{ code: 'BLOB_UNKNOWN', message: 'gone', detail: { d: 1 } }] });
  const gateway = new RegistryError('UPSTREAM_FAILED', 'x');
  assert.equal(gateway.status, 502);
  assert.deepEqual(JSON.parse(renderErrorBody(gateway)), { errors: [{ code: 'UNAVAILABLE', message: 'x' }] });
});

test('the one table: every kind has an OCI code of the spec (or UNKNOWN) and a 4xx/5xx status', () => {
  const spec = new Set(['BLOB_UNKNOWN', 'BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN', 'DIGEST_INVALID', 'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_INVALID', 'MANIFEST_UNKNOWN', 'NAME_INVALID', 'NAME_UNKNOWN', 'SIZE_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED', 'TOOMANYREQUESTS']);
  // Not in distribution-spec's list: TAG_INVALID, UNAVAILABLE, UNKNOWN come from distribution/distribution's errcode; RANGE_INVALID awaits issue 20.
  const extra = new Set(['TAG_INVALID', 'UNAVAILABLE', 'UNKNOWN', 'RANGE_INVALID']);
  for (const [kind, row] of Object.entries(ERRORS)) {
    assert.ok(spec.has(row.code) || extra.has(row.code), `${kind}: ${row.code}`);
    assert.ok(row.status >= 400 && row.status < 600, `${kind}: ${row.status}`);
    assert.equal(new RegistryError(kind as keyof typeof ERRORS, 'm').status, row.status);
  }
});
