/**
 * The push API into local namespaces, end to end: skopeo copies an image from a real
 * docker-registry *into* regmirror (bearer-token flow with the mirror's own users, bcrypt htpasswd)
 * and pulls it back byte-identical; chunked, resumable and mounted uploads; manifest checks;
 * DELETE; abandoned uploads swept; and every refusal (no credentials, wrong password, a pull-only
 * user, a mirrored registry's space) with its OCI error.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { startMirror, mirrorToml, type MirrorProcess } from '../helpers/mirror-process.ts';
import { makeImage, makeIndex, makeLayer, pushImage, pushIndex, sha256, MT, type Image, type IndexImage } from '../helpers/fixtures.ts';
import { skopeo } from '../helpers/skopeo.ts';
import { waitFor } from '../helpers/net.ts';

const PUSHER_PW = 'push-Pw-4417';
const READER_PW = 'read-Pw-9921';
const basic = (user: string, pw: string): Record<string, string> => ({ authorization: `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}` });

interface OciErrors {
  errors: Array<{ code: string; message: string }>;
}

describe('push into local namespaces', { timeout: 300_000 }, () => {
  let work: string;
  let upstream: RegistryProcess;
  let mirror: MirrorProcess;
  let app: Image;
  let multi: IndexImage;
  const ci = basic('ci', PUSHER_PW);
  const upstreamHost = (): string => new URL(upstream.url).host;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-push-'));
    upstream = await startRegistry(join(work, 'upstream'));
    app = makeImage('push-app', [400 * 1024, 100 * 1024], 'docker');
    multi = makeIndex('push-multi', ['amd64', 'arm64'], 150 * 1024);
    await pushImage(upstream.url, 'team/app', 'v1', app);
    await pushIndex(upstream.url, 'team/multi', 'v1', multi);
    // A real bcrypt htpasswd file, as `htpasswd -B` writes it.
    writeFileSync(join(work, 'htpasswd'), execFileSync('htpasswd', ['-nbB', 'ci', PUSHER_PW], { encoding: 'utf8' }));
    mirror = await startMirror(
      work,
      mirrorToml(
        `[auth]\nhtpasswd = "htpasswd"\nhtpasswd_roles = ["pull", "push", "delete"]\n[[auth.user]]\nname = "reader"\npassword_env = "READER_PW"\nroles = ["pull"]\n` +
          `[uploads]\nabandon_after = "2s"\n[[registry]]\nhost = "gcr.io"\nendpoint = "${upstream.url}"\n[[namespace]]\nname = "site"\n`,
      ),
      { READER_PW },
    );
  });

  after(async () => {
    await mirror?.stop();
    await upstream?.stop();
  });

  async function pulledDigest(ref: string, creds: string[], all = false): Promise<string> {
    const dest = mkdtempSync(join(work, 'pull-'));
    await skopeo(['copy', '--src-tls-verify=false', ...creds, ...(all ? ['--all'] : []), `docker://${ref}`, `dir:${dest}`]);
    return sha256(readFileSync(join(dest, 'manifest.json')));
  }

  test('skopeo copies an image and an index from the upstream into a local namespace, and pulls them back identical', async () => {
    await skopeo(['copy', '--src-tls-verify=false', '--dest-tls-verify=false', '--dest-creds', `ci:${PUSHER_PW}`, `docker://${upstreamHost()}/team/app:v1`, `docker://${mirror.hostPort}/site/team/app:v1`]);
    await skopeo(['copy', '--all', '--src-tls-verify=false', '--dest-tls-verify=false', '--dest-creds', `ci:${PUSHER_PW}`, `docker://${upstreamHost()}/team/multi:v1`, `docker://${mirror.hostPort}/site/team/multi:v1`]);
    assert.equal(await pulledDigest(`${mirror.hostPort}/site/team/app:v1`, ['--src-creds', `reader:${READER_PW}`]), app.manifest.digest);
    assert.equal(await pulledDigest(`${mirror.hostPort}/site/team/multi:v1`, ['--src-creds', `reader:${READER_PW}`], true), multi.index.digest);
    const p = (await (await fetch(`${mirror.url}/_regmirror/v1/provenance?registry=local`)).json()) as { items: Array<{ digest: string; source: { type: string } }> };
    assert.ok(p.items.some((i) => i.digest === app.manifest.digest && i.source.type === 'push'), 'provenance says push');
  });

  test('anonymous pulls of mirrored content still work through the token flow; local namespaces need a user', async () => {
    assert.equal(await pulledDigest(`${mirror.hostPort}/gcr.io/team/app:v1`, []), app.manifest.digest);
    await assert.rejects(pulledDigest(`${mirror.hostPort}/site/team/app:v1`, []), /authentication required|unauthorized/i);
    const r = await fetch(`${mirror.url}/v2/site/team/app/manifests/v1`);
    assert.equal(r.status, 401);
    assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/_regmirror\/token",service="regmirror",scope="repository:site\/team\/app:pull"$/);
  });

  test('push without credentials, with a wrong password, or as a pull-only user is refused', async () => {
    const none = await fetch(`${mirror.url}/v2/site/team/new/blobs/uploads/`, { method: 'POST' });
    assert.equal(none.status, 401);
    assert.equal(((await none.json()) as OciErrors).errors[0]?.code, 'UNAUTHORIZED');
    await assert.rejects(
      skopeo(['copy', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${upstreamHost()}/team/app:v1`, `docker://${mirror.hostPort}/site/team/anon:v1`]),
      /authentication required|unauthorized/i,
    );
    const wrong = await fetch(`${mirror.url}/v2/site/team/new/blobs/uploads/`, { method: 'POST', headers: basic('ci', 'nope') });
    assert.equal(wrong.status, 401);
    const reader = await fetch(`${mirror.url}/v2/site/team/new/blobs/uploads/`, { method: 'POST', headers: basic('reader', READER_PW) });
    assert.equal(reader.status, 403);
    assert.match(((await reader.json()) as OciErrors).errors[0]?.message ?? '', /user "reader" lacks the "push" role/);
    const token = await fetch(`${mirror.url}/_regmirror/token?service=regmirror`, { headers: basic('ci', 'nope') });
    assert.equal(token.status, 401);
  });

  test("pushing into a mirrored registry's space is refused naming the local namespaces", async () => {
    await assert.rejects(
      skopeo(['copy', '--src-tls-verify=false', '--dest-tls-verify=false', '--dest-creds', `ci:${PUSHER_PW}`, `docker://${upstreamHost()}/team/app:v1`, `docker://${mirror.hostPort}/gcr.io/team/app:evil`]),
      /mirrored read-only/,
    );
    const r = await fetch(`${mirror.url}/v2/gcr.io/team/app/manifests/evil`, { method: 'PUT', headers: { ...ci, 'content-type': MT.dockerManifest }, body: app.manifest.bytes });
    assert.equal(r.status, 403);
    assert.match(((await r.json()) as OciErrors).errors[0]?.message ?? '', /gcr\.io is mirrored read-only.*\/v2\/site\//);
    assert.equal(upstream.accessCount('PUT', '/manifests/evil'), 0);
  });

  test('chunked upload: Content-Range checked, status tells where to resume, digest verified at the end', async () => {
    const blob = makeLayer('push-chunked', 300 * 1024, MT.ociLayer);
    const start = await fetch(`${mirror.url}/v2/site/team/chunked/blobs/uploads/`, { method: 'POST', headers: ci });
    assert.equal(start.status, 202);
    const loc = new URL(start.headers.get('location') ?? '', mirror.url);
    assert.match(loc.pathname, /^\/v2\/site\/team\/chunked\/blobs\/uploads\/[a-f0-9]{32}$/);
    const part1 = blob.bytes.subarray(0, 100_000);
    const p1 = await fetch(loc, { method: 'PATCH', headers: { ...ci, 'content-type': 'application/octet-stream', 'content-range': `0-${part1.length - 1}` }, body: part1 });
    assert.equal(p1.status, 202);
    assert.equal(p1.headers.get('range'), `0-${part1.length - 1}`);
    const gap = await fetch(loc, { method: 'PATCH', headers: { ...ci, 'content-range': '200000-299999' }, body: blob.bytes.subarray(200_000, 300_000) });
    assert.equal(gap.status, 416);
    assert.equal(gap.headers.get('range'), `0-${part1.length - 1}`);
    const status = await fetch(loc, { headers: ci });
    assert.equal(status.status, 204);
    assert.equal(status.headers.get('range'), `0-${part1.length - 1}`);
    const p2 = await fetch(loc, { method: 'PATCH', headers: { ...ci, 'content-range': `${part1.length}-${blob.size - 2}` }, body: blob.bytes.subarray(part1.length, blob.size - 1) });
    assert.equal(p2.status, 202);
    const bad = new URL(loc);
    bad.searchParams.set('digest', `sha256:${'0'.repeat(64)}`);
    const wrong = await fetch(bad, { method: 'PUT', headers: ci, body: blob.bytes.subarray(blob.size - 1) });
    assert.equal(wrong.status, 400);
    assert.equal(((await wrong.json()) as OciErrors).errors[0]?.code, 'DIGEST_INVALID');
    const good = new URL(loc);
    good.searchParams.set('digest', blob.digest);
    const done = await fetch(good, { method: 'PUT', headers: ci });
    assert.equal(done.status, 201, await done.clone().text());
    assert.equal(done.headers.get('docker-content-digest'), blob.digest);
    assert.equal(done.headers.get('location'), `/v2/site/team/chunked/blobs/${blob.digest}`);
    const got = await fetch(`${mirror.url}/v2/site/team/chunked/blobs/${blob.digest}`, { headers: ci });
    assert.equal(got.status, 200);
    assert.equal(sha256(Buffer.from(await got.arrayBuffer())), blob.digest);
    const gone = await fetch(loc, { headers: ci });
    assert.equal(gone.status, 404, 'a finished upload is gone');
  });

  test('monolithic upload (POST ?digest= with the body), and DELETE of a blob', async () => {
    const blob = makeLayer('push-mono', 64 * 1024, MT.ociLayer);
    const r = await fetch(`${mirror.url}/v2/site/team/mono/blobs/uploads/?digest=${blob.digest}`, { method: 'POST', headers: { ...ci, 'content-type': 'application/octet-stream' }, body: blob.bytes });
    assert.equal(r.status, 201, await r.clone().text());
    assert.equal(r.headers.get('location'), `/v2/site/team/mono/blobs/${blob.digest}`);
    const wrong = await fetch(`${mirror.url}/v2/site/team/mono/blobs/uploads/?digest=sha256:${'2'.repeat(64)}`, { method: 'POST', headers: ci, body: blob.bytes });
    assert.equal(wrong.status, 400);
    const uploads = readdirSync(join(work, 'data', 'uploads'));
    assert.deepEqual(uploads, [], 'a failed monolithic upload leaves no session behind');
    assert.equal((await fetch(`${mirror.url}/v2/site/team/mono/blobs/${blob.digest}`, { method: 'HEAD', headers: ci })).status, 200);
    assert.equal((await fetch(`${mirror.url}/v2/site/team/mono/blobs/${blob.digest}`, { method: 'DELETE', headers: ci })).status, 202);
    assert.equal((await fetch(`${mirror.url}/v2/site/team/mono/blobs/${blob.digest}`, { method: 'HEAD', headers: ci })).status, 404);
    assert.equal((await fetch(`${mirror.url}/v2/site/team/mono/blobs/${blob.digest}`, { method: 'DELETE', headers: ci })).status, 404, 'already gone');
  });

  test('cross-repository mount, and a manifest that references a missing blob is MANIFEST_BLOB_UNKNOWN', async () => {
    const layer = app.layers[0];
    assert.ok(layer !== undefined);
    const mount = await fetch(`${mirror.url}/v2/site/team/other/blobs/uploads/?mount=${layer.digest}&from=site/team/app`, { method: 'POST', headers: ci });
    assert.equal(mount.status, 201);
    assert.equal(mount.headers.get('location'), `/v2/site/team/other/blobs/${layer.digest}`);
    const noSource = await fetch(`${mirror.url}/v2/site/team/other/blobs/uploads/?mount=${layer.digest}&from=site/team/nothing`, { method: 'POST', headers: ci });
    assert.equal(noSource.status, 202, 'not mountable: a regular upload session instead');
    const put = await fetch(`${mirror.url}/v2/site/team/other/manifests/v1`, { method: 'PUT', headers: { ...ci, 'content-type': MT.dockerManifest }, body: app.manifest.bytes });
    assert.equal(put.status, 404);
    const e = ((await put.json()) as OciErrors).errors[0];
    assert.equal(e?.code, 'MANIFEST_BLOB_UNKNOWN');
    assert.match(e?.message ?? '', new RegExp(`config blob ${app.config.digest} is not in team/other`));
    const byDigest = await fetch(`${mirror.url}/v2/site/team/app/manifests/sha256:${'1'.repeat(64)}`, { method: 'PUT', headers: { ...ci, 'content-type': MT.dockerManifest }, body: app.manifest.bytes });
    assert.equal(byDigest.status, 400);
    assert.equal(((await byDigest.json()) as OciErrors).errors[0]?.code, 'DIGEST_INVALID');
  });

  test('a pushed manifest must be what its Content-Type says, whatever the type: MANIFEST_INVALID', async () => {
    const put = (body: Buffer | string, contentType: string): Promise<Response> =>
      fetch(`${mirror.url}/v2/site/team/shape/manifests/v1`, { method: 'PUT', headers: { ...ci, 'content-type': contentType }, body });
    const ociNoType = Buffer.from(JSON.stringify({ schemaVersion: 2, config: { mediaType: MT.ociConfig, digest: `sha256:${'3'.repeat(64)}`, size: 2 }, layers: [] }));
    const cases: Array<{ what: string; body: Buffer | string; ct: string; message: RegExp }> = [
      { what: 'a Docker manifest declared an OCI index', body: app.manifest.bytes, ct: MT.ociIndex, message: /Content-Type is application\/vnd\.oci\.image\.index\.v1\+json but the manifest's mediaType is/ },
      { what: '{"hello":1} as an OCI index', body: '{"hello":1}', ct: MT.ociIndex, message: /schemaVersion must be 2/ },
      { what: '{"hello":1} as a Docker manifest list', body: '{"hello":1}', ct: 'application/vnd.docker.distribution.manifest.list.v2+json', message: /schemaVersion must be 2/ },
      { what: 'an OCI image manifest without mediaType declared an index', body: ociNoType, ct: MT.ociIndex, message: /must have a manifests array/ },
      { what: 'an index with a broken descriptor', body: JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: [{ mediaType: MT.ociManifest, digest: 'sha256:nothex', size: 1 }] }), ct: MT.ociIndex, message: /manifests\[0\]\.digest/ },
      { what: 'an image manifest that is also an index', body: JSON.stringify({ schemaVersion: 2, mediaType: MT.ociManifest, config: { mediaType: MT.ociConfig, digest: `sha256:${'3'.repeat(64)}`, size: 2 }, layers: [], manifests: [] }), ct: MT.ociManifest, message: /ambiguous/ },
    ];
    for (const c of cases) {
      const r = await put(c.body, c.ct);
      assert.equal(r.status, 400, c.what);
      const e = ((await r.json()) as OciErrors).errors[0];
      assert.equal(e?.code, 'MANIFEST_INVALID', c.what);
      assert.match(e?.message ?? '', c.message, c.what);
    }
    // The same OCI manifest under its own type is refused for its missing blob, as before.
    const own = await put(ociNoType, MT.ociManifest);
    assert.equal(own.status, 404);
    assert.equal(((await own.json()) as OciErrors).errors[0]?.code, 'MANIFEST_BLOB_UNKNOWN');
    assert.equal((await fetch(`${mirror.url}/v2/site/team/shape/manifests/v1`, { headers: ci })).status, 404, 'nothing was stored');
  });

  test("token realms come from the listener's own address, never from the client's Host header", async () => {
    const { rawHttp } = await import('../helpers/raw-http.ts');
    const r = await rawHttp(mirror.port, '/v2/', '1.1', { raw: 'GET /v2/ HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n\r\n' });
    assert.equal(r.status, 401);
    assert.equal(r.headers['www-authenticate'], `Bearer realm="http://${mirror.hostPort}/_regmirror/token",service="regmirror"`);
  });

  test('DELETE of a tag, then of a manifest by digest', async () => {
    const tagged = await fetch(`${mirror.url}/v2/site/team/app/manifests/v2`, { method: 'PUT', headers: { ...ci, 'content-type': MT.dockerManifest }, body: app.manifest.bytes });
    assert.equal(tagged.status, 201);
    assert.equal((await fetch(`${mirror.url}/v2/site/team/app/manifests/v2`, { method: 'HEAD', headers: ci })).status, 200);
    assert.equal((await fetch(`${mirror.url}/v2/site/team/app/manifests/v2`, { method: 'DELETE', headers: basic('reader', READER_PW) })).status, 403);
    assert.equal((await fetch(`${mirror.url}/v2/site/team/app/manifests/v2`, { method: 'DELETE', headers: ci })).status, 202);
    assert.equal((await fetch(`${mirror.url}/v2/site/team/app/manifests/v2`, { method: 'HEAD', headers: ci })).status, 404);
    assert.equal((await fetch(`${mirror.url}/v2/site/team/app/manifests/v1`, { method: 'HEAD', headers: ci })).status, 200, 'the other tag stays');
    assert.equal((await fetch(`${mirror.url}/v2/site/team/app/manifests/${app.manifest.digest}`, { method: 'DELETE', headers: ci })).status, 202);
    for (const ref of ['v1', app.manifest.digest]) {
      assert.equal((await fetch(`${mirror.url}/v2/site/team/app/manifests/${ref}`, { method: 'HEAD', headers: ci })).status, 404, ref);
    }
  });

  test('an abandoned upload is removed after abandon_after', async () => {
    const start = await fetch(`${mirror.url}/v2/site/team/abandoned/blobs/uploads/`, { method: 'POST', headers: ci });
    const loc = new URL(start.headers.get('location') ?? '', mirror.url);
    await fetch(loc, { method: 'PATCH', headers: ci, body: Buffer.alloc(5000, 1) });
    const uploadsDir = join(work, 'data', 'uploads');
    assert.ok(readdirSync(uploadsDir).length >= 2);
    await waitFor('the abandoned upload to be swept', async () => (await fetch(loc, { headers: ci })).status === 404, 15_000, 250);
    assert.match(mirror.logText(), /removed abandoned uploads/);
  });
});

describe('push uploads survive a restart', { timeout: 120_000 }, () => {
  test('an upload started before a restart resumes from its size and completes', async () => {
    const work = mkdtempSync(join(tmpdir(), 'regmirror-push-restart-'));
    const toml = mirrorToml(`[auth]\n[[auth.user]]\nname = "ci"\npassword = "${PUSHER_PW}"\nroles = ["pull", "push"]\n[[namespace]]\nname = "site"\n`);
    const ci = basic('ci', PUSHER_PW);
    const blob = makeLayer('push-restart', 200 * 1024, MT.ociLayer);
    let mirror = await startMirror(work, toml);
    const start = await fetch(`${mirror.url}/v2/site/app/blobs/uploads/`, { method: 'POST', headers: ci });
    const path = new URL(start.headers.get('location') ?? '', mirror.url).pathname;
    await fetch(`${mirror.url}${path}`, { method: 'PATCH', headers: { ...ci, 'content-range': '0-99999' }, body: blob.bytes.subarray(0, 100_000) });
    await mirror.stop();
    mirror = await startMirror(work, toml);
    try {
      const status = await fetch(`${mirror.url}${path}`, { headers: ci });
      assert.equal(status.status, 204);
      assert.equal(status.headers.get('range'), '0-99999');
      await fetch(`${mirror.url}${path}`, { method: 'PATCH', headers: { ...ci, 'content-range': `100000-${blob.size - 1}` }, body: blob.bytes.subarray(100_000) });
      const done = await fetch(`${mirror.url}${path}?digest=${blob.digest}`, { method: 'PUT', headers: ci });
      assert.equal(done.status, 201);
      const got = await fetch(`${mirror.url}/v2/site/app/blobs/${blob.digest}`, { headers: ci });
      assert.equal(sha256(Buffer.from(await got.arrayBuffer())), blob.digest);
    } finally {
      await mirror.stop();
    }
  });
});
