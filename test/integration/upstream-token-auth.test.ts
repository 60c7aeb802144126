/**
 * A real docker-registry behind token auth (`auth: token:`), with the token service in the test
 * suite: the Bearer challenge from the registry itself, the GCR-style `_json_key` key file (OAuth2
 * POST refused with 404, token GET with Basic `_json_key:<json>`), tokens refreshed before they
 * expire, a static bearer token, and upstream 429s passed on with Retry-After or served stale.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { startMirror, mirrorToml, type MirrorProcess } from '../helpers/mirror-process.ts';
import { startTokenServer, tokenAuthYaml, TOKEN_SERVICE, type TokenServer } from '../helpers/jwt-token-server.ts';
import { makeCa } from '../helpers/pki.ts';
import { makeImage, pushImage, sha256, type Image } from '../helpers/fixtures.ts';
import { skopeo } from '../helpers/skopeo.ts';

const KEY_JSON = JSON.stringify({ type: 'service_account', project_id: 'regmirror-test', private_key_id: 'k1', private_key: '-----BEGIN PRIVATE KEY-----\\nZmFrZS1rZXktbWF0ZXJpYWwtZm9yLXRlc3Rz\\n-----END PRIVATE KEY-----\\n', client_email: 'mirror@regmirror-test.iam.gserviceaccount.com' }, null, 2);
const HOST = 'gcr.test';

describe('docker-registry behind token auth', { timeout: 300_000 }, () => {
  let work: string;
  let tokens: TokenServer;
  let registry: RegistryProcess;
  let image: Image;
  let mirror: MirrorProcess;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-token-'));
    const storageDir = join(work, 'storage');
    image = makeImage('token-app', [150 * 1024, 90 * 1024], 'docker');
    // Fill the storage through an open registry, then serve it behind token auth.
    const filler = await startRegistry(join(work, 'filler'), { storageDir });
    await pushImage(filler.url, 'team/app', 'v1', image);
    await filler.stop();
    const signer = makeCa(join(work, 'pki'), 'token-signer');
    tokens = await startTokenServer(signer, { username: '_json_key', password: KEY_JSON });
    registry = await startRegistry(join(work, 'registry'), { storageDir, extraYaml: tokenAuthYaml(tokens.realm, signer.cert) });
    const keyFile = join(work, 'sa.json');
    writeFileSync(keyFile, `${KEY_JSON}\n`);
    mirror = await startMirror(work, mirrorToml(`[log]\nlevel = "debug"\n[[registry]]\nhost = "${HOST}"\nendpoint = "${registry.url}"\ngcr_key_file = "${keyFile}"\n`));
  });

  after(async () => {
    await mirror?.stop();
    await registry?.stop();
    await tokens?.close();
  });

  test('the registry really demands a token', async () => {
    const r = await fetch(`${registry.url}/v2/team/app/manifests/v1`);
    assert.equal(r.status, 401);
    assert.match(r.headers.get('www-authenticate') ?? '', new RegExp(`Bearer realm="${tokens.realm}",service="${TOKEN_SERVICE}",scope="repository:team/app:pull"`));
  });

  test('gcr_key_file: OAuth2 POST refused with 404, token GET with Basic _json_key:<key json>, pull succeeds (skopeo)', async () => {
    const dest = mkdtempSync(join(work, 'pull-'));
    await skopeo(['copy', '--src-tls-verify=false', `docker://${mirror.hostPort}/${HOST}/team/app:v1`, `dir:${dest}`]);
    const post = tokens.requests.find((r) => r.method === 'POST');
    const get = tokens.requests.find((r) => r.method === 'GET' && r.issued !== undefined);
    assert.ok(post, 'tried the OAuth2 POST first');
    assert.ok(get, 'fell back to GET');
    assert.equal(get.headers.authorization, `Basic ${Buffer.from(`_json_key:${KEY_JSON}`).toString('base64')}`);
    assert.equal(tokens.requests.filter((r) => r.issued !== undefined).length, 1, 'one token for the whole pull');
  });

  test('a token near its expiry is refreshed before it is used again', async () => {
    // A fresh mirror so the next token is issued with a 60 s lifetime (the floor regmirror honours).
    tokens.lifetimeS = 60;
    const dir = mkdtempSync(join(work, 'refresh-'));
    const m = await startMirror(dir, mirrorToml(`[[registry]]\nhost = "${HOST}"\nendpoint = "${registry.url}"\ngcr_key_file = "${join(work, 'sa.json')}"\ntag_ttl = "0s"\n`));
    try {
      const issued = () => tokens.requests.filter((r) => r.issued !== undefined).length;
      const before = issued();
      const first = await fetch(`${m.url}/v2/${HOST}/team/app/manifests/v1`);
      assert.equal(first.status, 200);
      assert.equal(issued(), before + 1);
      const again = await fetch(`${m.url}/v2/${HOST}/team/app/manifests/v1`);
      assert.equal(again.status, 200);
      assert.equal(issued(), before + 1, 'cached while fresh');
      await new Promise((r) => setTimeout(r, 51_000));
      const later = await fetch(`${m.url}/v2/${HOST}/team/app/manifests/v1`);
      assert.equal(later.status, 200);
      assert.equal(later.headers.get('x-regmirror-cache'), 'hit', 'revalidated upstream with the new token');
      assert.equal(issued(), before + 2, 'a new token 10 s before the old one expired');
    } finally {
      tokens.lifetimeS = 300;
      await m.stop();
    }
  });

  test('a wrong key file is refused clearly', async () => {
    const bad = join(work, 'bad.json');
    writeFileSync(bad, '{"type":"service_account","private_key_id":"other"}');
    const m = await startMirror(mkdtempSync(join(work, 'bad-')), mirrorToml(`[[registry]]\nhost = "${HOST}"\nendpoint = "${registry.url}"\ngcr_key_file = "${bad}"\n`));
    try {
      const r = await fetch(`${m.url}/v2/${HOST}/team/app/manifests/v1`);
      assert.equal(r.status, 401);
      assert.match(((await r.json()) as { errors: Array<{ message: string }> }).errors[0]?.message ?? '', /gcr_key_file/);
    } finally {
      await m.stop();
    }
  });

  test('the key file and the tokens never reach the log', () => {
    const log = mirror.logText();
    assert.ok(log.includes('"msg":"request"'));
    for (const secret of [KEY_JSON, 'ZmFrZS1rZXktbWF0ZXJpYWwtZm9yLXRlc3Rz', Buffer.from(`_json_key:${KEY_JSON}`).toString('base64'), ...tokens.requests.flatMap((r) => (r.issued === undefined ? [] : [r.issued]))]) {
      assert.ok(!log.includes(secret), `log contains ${secret.slice(0, 10)}...`);
    }
  });
});

describe('upstream refusals: 403 and rate limiting (429)', { timeout: 60_000 }, () => {
  test('429 with nothing cached → TOOMANYREQUESTS with Retry-After; with a cached tag → served stale', async () => {
    let limited = false;
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }));
    const server = createServer((req, res) => {
      if ((req.url ?? '').includes('/forbidden/')) {
        return void res.writeHead(403, { 'content-type': 'application/json' }).end('{"errors":[{"code":"DENIED","message":"no"}]}');
      }
      if (limited || (req.url ?? '').includes('/never/')) {
        return void res.writeHead(429, { 'retry-after': '17', 'content-type': 'application/json' }).end('{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}');
      }
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.index.v1+json', 'docker-content-digest': sha256(body), 'content-length': body.length }).end(req.method === 'HEAD' ? undefined : body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const dir = mkdtempSync(join(tmpdir(), 'regmirror-429-'));
    const m = await startMirror(dir, mirrorToml(`[[registry]]\nhost = "limited.test"\nendpoint = "http://127.0.0.1:${port}"\ntag_ttl = "0s"\n`));
    try {
      const none = await fetch(`${m.url}/v2/limited.test/never/pulled/manifests/v1`);
      assert.equal(none.status, 429);
      assert.equal(none.headers.get('retry-after'), '17');
      assert.equal(((await none.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'TOOMANYREQUESTS');
      const denied = await fetch(`${m.url}/v2/limited.test/forbidden/repo/manifests/v1`);
      assert.equal(denied.status, 403);
      const deniedErr = ((await denied.json()) as { errors: Array<{ code: string; message: string }> }).errors[0];
      assert.equal(deniedErr?.code, 'DENIED');
      assert.match(deniedErr?.message ?? '', /limited\.test denied the mirror access to forbidden\/repo/);
      const warm = await fetch(`${m.url}/v2/limited.test/app/manifests/v1`);
      assert.equal(warm.headers.get('x-regmirror-cache'), 'miss');
      limited = true;
      const stale = await fetch(`${m.url}/v2/limited.test/app/manifests/v1`);
      assert.equal(stale.status, 200);
      assert.equal(stale.headers.get('x-regmirror-cache'), 'stale');
      assert.equal(sha256(Buffer.from(await stale.arrayBuffer())), sha256(body));
    } finally {
      await m.stop();
      server.closeAllConnections();
      server.close();
    }
  });
});
