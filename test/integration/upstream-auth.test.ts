/**
 * Upstream auth and redirects, end to end with regmirror as its own process: the Bearer challenge
 * → token → retry dance with credentials, tokens cached, blob redirects to another origin followed
 * without Authorization, the client's own Authorization never forwarded, and no secret in the logs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMirror, mirrorToml, type MirrorProcess } from '../helpers/mirror-process.ts';
import { startTokenRegistry, type TokenRegistry } from '../helpers/token-registry.ts';
import { skopeo } from '../helpers/skopeo.ts';
import { makeImage, sha256, type Image } from '../helpers/fixtures.ts';

const PASSWORD = 'pw-Zk9-very-secret-4711';
const CLIENT_SECRET = 'client-secret-Qx7-do-not-forward';

describe('upstream token auth and redirects', { timeout: 120_000 }, () => {
  let work: string;
  let upstream: TokenRegistry;
  let mirror: MirrorProcess;
  let image: Image;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-auth-'));
    image = makeImage('auth-app', [300 * 1024, 200 * 1024], 'oci');
    upstream = await startTokenRegistry('team/private', 'v1', image, { username: 'robot', password: PASSWORD });
    mirror = await startMirror(
      work,
      `default_registry = ""
[server]
listen = "127.0.0.1:0"
data_dir = "data"
[log]
level = "debug"
[[registry]]
host = "private.example"
endpoint = "${upstream.url}"
username = "robot"
password_env = "PRIVATE_PW"
`,
      { PRIVATE_PW: PASSWORD },
    );
  });

  after(async () => {
    await mirror?.stop();
    await upstream?.close();
  });

  test('a 401 Bearer challenge is answered with an OAuth2 POST (password grant) to the realm, then the pull succeeds', async () => {
    const dest = mkdtempSync(join(work, 'pull-'));
    await skopeo(['copy', '--src-tls-verify=false', `docker://${mirror.hostPort}/private.example/team/private:v1`, `dir:${dest}`]);
    assert.equal(sha256(readFileSync(join(dest, 'manifest.json'))), image.manifest.digest);
    assert.ok(upstream.tokenRequests.length >= 1);
    const tokenReq = upstream.tokenRequests[0];
    assert.equal(tokenReq?.method, 'POST');
    const form = new URLSearchParams(tokenReq?.body ?? '');
    assert.equal(form.get('grant_type'), 'password');
    assert.equal(form.get('service'), 'token-registry');
    assert.equal(form.get('scope'), 'repository:team/private:pull');
    assert.equal(form.get('username'), 'robot');
    assert.equal(form.get('password'), PASSWORD);
    const authed = upstream.requests.filter((r) => r.headers.authorization?.startsWith('Bearer tok-') === true);
    assert.ok(authed.length >= 1, 'retried with the token');
  });

  test('the token is cached: one token serves every upstream request of the pull', async () => {
    const authed = upstream.requests.filter((r) => r.headers.authorization?.startsWith('Bearer tok-') === true);
    assert.ok(authed.length >= 4, `manifest, config and two layers went upstream with the token (${authed.length})`);
    assert.equal(upstream.tokenRequests.length, 1, 'exactly one token fetched');
    const unauthenticated = upstream.requests.filter((r) => r.headers.authorization === undefined);
    assert.equal(unauthenticated.length, 1, 'only the first request met the challenge');
  });

  test('blob redirects to another origin are followed and that origin never receives Authorization', async () => {
    assert.ok(upstream.storageRequests.length >= 2, 'blobs came from the storage origin');
    for (const r of upstream.storageRequests) {
      assert.equal(r.headers.authorization, undefined, `storage request ${r.url} carried Authorization`);
      assert.equal(r.headers.cookie, undefined);
    }
  });

  test("the client's own Authorization header is never forwarded upstream", async () => {
    const layer = image.layers[0];
    assert.ok(layer);
    const r = await fetch(`${mirror.url}/v2/private.example/team/private/manifests/v1`, { headers: { authorization: `Bearer ${CLIENT_SECRET}` } });
    assert.equal(r.status, 200);
    for (const req of [...upstream.requests, ...upstream.storageRequests, ...upstream.tokenRequests]) {
      assert.ok(!JSON.stringify(req.headers).includes(CLIENT_SECRET), `${req.url} saw the client's secret`);
    }
  });

  test('a realm that refuses the OAuth2 POST (404, like GCR) gets the token GET with Basic auth', async () => {
    upstream.oauthPost = false;
    const m2 = await startMirror(mkdtempSync(join(work, 'fallback-')), mirrorToml(`[[registry]]\nhost = "private.example"\nendpoint = "${upstream.url}"\nusername = "robot"\npassword = "${PASSWORD}"\n`));
    const before = upstream.tokenRequests.length;
    try {
      const r = await fetch(`${m2.url}/v2/private.example/team/private/manifests/v1`);
      assert.equal(r.status, 200);
      const [post, get] = upstream.tokenRequests.slice(before);
      assert.equal(post?.method, 'POST');
      assert.equal(get?.method, 'GET');
      assert.match(decodeURIComponent(get?.url ?? ''), /service=token-registry&scope=repository:team\/private:pull/);
      assert.equal(get?.headers.authorization, `Basic ${Buffer.from(`robot:${PASSWORD}`).toString('base64')}`);
    } finally {
      upstream.oauthPost = true;
      await m2.stop();
    }
  });

  test('a config.json identitytoken is used as an OAuth2 refresh token (refresh_token grant)', async () => {
    const dir = mkdtempSync(join(work, 'identity-'));
    const dc = join(dir, 'config.json');
    writeFileSync(dc, JSON.stringify({ auths: { 'https://private.example/v1/': { auth: Buffer.from('robot:').toString('base64'), identitytoken: upstream.refreshToken } } }));
    const m2 = await startMirror(dir, mirrorToml(`[[registry]]\nhost = "private.example"\nendpoint = "${upstream.url}"\ndocker_config = "${dc}"\n`));
    const before = upstream.tokenRequests.length;
    try {
      const r = await fetch(`${m2.url}/v2/private.example/team/private/manifests/v1`);
      assert.equal(r.status, 200);
      const post = upstream.tokenRequests[before];
      const form = new URLSearchParams(post?.body ?? '');
      assert.equal(form.get('grant_type'), 'refresh_token');
      assert.equal(form.get('refresh_token'), upstream.refreshToken);
      assert.ok(!m2.logText().includes(upstream.refreshToken));
    } finally {
      await m2.stop();
    }
  });

  test('a static bearer token is sent as is, with no token request', async () => {
    const staticToken = 'static-Tk9-bearer-token';
    upstream.allowStatic(staticToken);
    const m2 = await startMirror(mkdtempSync(join(work, 'static-')), mirrorToml(`[[registry]]\nhost = "private.example"\nendpoint = "${upstream.url}"\ntoken = "${staticToken}"\n`));
    const tokensBefore = upstream.tokenRequests.length;
    const requestsBefore = upstream.requests.length;
    try {
      const r = await fetch(`${m2.url}/v2/private.example/team/private/manifests/v1`);
      assert.equal(r.status, 200);
      assert.equal(upstream.tokenRequests.length, tokensBefore);
      const sent = upstream.requests.slice(requestsBefore);
      assert.ok(sent.length >= 1 && sent.every((q) => q.headers.authorization === `Bearer ${staticToken}`));
      assert.ok(!m2.logText().includes(staticToken));
    } finally {
      await m2.stop();
    }
  });

  test('an unconfigured credential gives a clear UNAUTHORIZED naming the keys to set', async () => {
    const w2 = mkdtempSync(join(work, 'nocreds-'));
    const m2 = await startMirror(w2, mirrorToml(`[[registry]]\nhost = "private.example"\nendpoint = "${upstream.url}"\n`));
    try {
      const r = await fetch(`${m2.url}/v2/private.example/team/private/manifests/v1`);
      assert.equal(r.status, 401);
      const body = (await r.json()) as { errors: Array<{ code: string; message: string }> };
      assert.equal(body.errors[0]?.code, 'UNAUTHORIZED');
      assert.match(body.errors[0]?.message ?? '', /private\.example.*password_env/);
    } finally {
      await m2.stop();
    }
  });

  test('no secret appears in the mirror log: password, tokens, presigned query, client Authorization', async () => {
    const log = mirror.logText();
    assert.ok(log.includes('"msg":"request"'), 'the log has request lines');
    assert.ok(log.includes('"reqId"'));
    for (const secret of [PASSWORD, CLIENT_SECRET, 'presigned-secret', ...upstream.issued, Buffer.from(`robot:${PASSWORD}`).toString('base64')]) {
      assert.ok(!log.includes(secret), `log contains ${secret.slice(0, 8)}...`);
    }
  });
});
