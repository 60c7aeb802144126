/**
 * Pull-through core, end to end: a real upstream (docker-registry), regmirror as its own process,
 * and the real skopeo client. Issue 2's acceptance list, in order.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { startMirror, type MirrorProcess } from '../helpers/mirror-process.ts';
import { startFaultServer, type FaultServer } from '../helpers/fault-server.ts';
import { skopeo } from '../helpers/skopeo.ts';
import { rawRequest } from '../helpers/net.ts';
import { makeImage, makeIndex, makeLayer, pushBlob, pushImage, pushIndex, randomBytesFor, sha256, MT, type Image, type IndexImage, type Layer } from '../helpers/fixtures.ts';

const MiB = 1024 * 1024;

describe('pull-through core against a real docker-registry', { timeout: 600_000 }, () => {
  let work: string;
  let upstream: RegistryProcess;
  let faulty: FaultServer;
  let mirror: MirrorProcess;
  let dockerImage: Image;
  let bigImage: Image;
  let multi: IndexImage;
  let coalesceBlob: Layer;
  let movedImage: Image;
  let abandonBlob: Layer;
  let crossBlob: Layer;
  let prefetchImage: Image;
  const faultyBlob = randomBytesFor('faulty', 3 * MiB + 17);
  const faultyDigest = sha256(faultyBlob);

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-it-'));
    upstream = await startRegistry(join(work, 'upstream'));
    dockerImage = makeImage('docker-app', [512 * 1024, 2 * MiB], 'docker');
    bigImage = makeImage('oci-big', [64 * MiB + 123, 300 * 1024], 'oci');
    multi = makeIndex('multi', ['amd64', 'arm64'], 700 * 1024);
    coalesceBlob = makeLayer('coalesce', 64 * MiB, MT.ociLayer);
    await pushImage(upstream.url, 'team/app', 'v1', dockerImage);
    await pushImage(upstream.url, 'library/small', 'v1', dockerImage);
    await pushImage(upstream.url, 'team/big', 'v1', bigImage);
    await pushIndex(upstream.url, 'team/multi', 'v1', multi);
    await pushBlob(upstream.url, 'team/coalesce', coalesceBlob);
    movedImage = makeImage('moved', [100 * 1024], 'docker');
    abandonBlob = makeLayer('abandon', 24 * MiB, MT.ociLayer);
    crossBlob = makeLayer('crossfill', 48 * MiB, MT.ociLayer);
    await pushBlob(upstream.url, 'team/crossfill', crossBlob);
    await pushBlob(upstream.url, 'team/abandon', abandonBlob);
    await pushImage(upstream.url, 'library/moving', 'v1', dockerImage);
    prefetchImage = makeImage('prefetch', [300 * 1024], 'oci');
    await pushImage(upstream.url, 'team/prefetch', 'v1', prefetchImage);
    faulty = await startFaultServer();
    faulty.blobs.set(faultyDigest, faultyBlob);
    mirror = await startMirror(
      work,
      `default_registry = "docker.io"
[server]
listen = "127.0.0.1:0"
data_dir = "data"
[cache]
tag_ttl = "1h"
[log]
level = "info"
[[registry]]
host = "gcr.io"
endpoint = "${upstream.url}"
[[registry]]
host = "docker.io"
endpoint = "${upstream.url}"
tag_ttl = "1s"
[[registry]]
host = "faulty.test"
endpoint = "${faulty.url}"
[[namespace]]
name = "test-namespace"
registry = "gcr.io"
`,
    );
  });

  after(async () => {
    await mirror?.stop();
    await upstream?.stop();
    await faulty?.close();
  });

  const dataDir = (): string => join(work, 'data');

  /** skopeo-copies `ref` out of the mirror into a dir: layout and returns the stored manifest's digest. */
  async function pullDigest(ref: string, all = false): Promise<string> {
    const dest = mkdtempSync(join(work, 'pull-'));
    await skopeo(['copy', '--src-tls-verify=false', ...(all ? ['--all'] : []), `docker://${mirror.hostPort}/${ref}`, `dir:${dest}`]);
    return sha256(readFileSync(join(dest, 'manifest.json')));
  }

  test('GET /v2/ answers 200 with the API version header', async () => {
    const r = await fetch(`${mirror.url}/v2/`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('docker-distribution-api-version'), 'registry/2.0');
  });

  test('skopeo copy by host-prefixed path gives the upstream digests (schema 2, OCI 64 MiB layer, multi-arch index)', async () => {
    assert.equal(await pullDigest('gcr.io/team/app:v1'), dockerImage.manifest.digest);
    assert.equal(await pullDigest('gcr.io/team/big:v1'), bigImage.manifest.digest);
    assert.equal(await pullDigest('gcr.io/team/multi:v1', true), multi.index.digest);
    const raw = await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${mirror.hostPort}/gcr.io/team/multi:v1`]);
    assert.equal(sha256(Buffer.from(raw)), multi.index.digest, 'index bytes served unchanged');
  });

  test('skopeo copy by namespace path (/v2/test-namespace/...) gives the upstream digest', async () => {
    assert.equal(await pullDigest('test-namespace/team/app:v1'), dockerImage.manifest.digest);
    assert.equal(await pullDigest('test-namespace/team/multi:v1', true), multi.index.digest);
  });

  test('skopeo copy by default-registry path maps to docker.io library/', async () => {
    assert.equal(await pullDigest('small:v1'), dockerImage.manifest.digest);
    assert.ok(upstream.accessCount('GET', '/v2/library/small/manifests/v1') >= 1, 'upstream saw the library/ path');
  });

  test('ns=gcr.io requests (containerd style): manifest HEAD, manifest GET, blob GET', async () => {
    const accept = `${MT.ociIndex}, ${MT.ociManifest}, ${MT.dockerManifest}, */*`;
    const h = await fetch(`${mirror.url}/v2/team/app/manifests/v1?ns=gcr.io`, { method: 'HEAD', headers: { accept } });
    assert.equal(h.status, 200);
    assert.equal(h.headers.get('docker-content-digest'), dockerImage.manifest.digest);
    assert.equal(h.headers.get('content-type'), MT.dockerManifest);
    assert.equal(h.headers.get('content-length'), String(dockerImage.manifest.size));
    assert.equal(h.headers.get('oci-namespace'), 'gcr.io');
    assert.equal(h.headers.get('x-regmirror-registry'), 'gcr.io');
    assert.equal(h.headers.get('x-regmirror-cache'), 'hit');
    const g = await fetch(`${mirror.url}/v2/team/app/manifests/${dockerImage.manifest.digest}?ns=gcr.io`, { headers: { accept } });
    assert.equal(g.status, 200);
    assert.equal(sha256(Buffer.from(await g.arrayBuffer())), dockerImage.manifest.digest);
    const layer = dockerImage.layers[1];
    assert.ok(layer);
    const b = await fetch(`${mirror.url}/v2/team/app/blobs/${layer.digest}?ns=gcr.io`);
    assert.equal(b.status, 200);
    assert.equal(b.headers.get('docker-content-digest'), layer.digest);
    assert.equal(sha256(Buffer.from(await b.arrayBuffer())), layer.digest);
  });

  test('HEAD answers are written once: no second head from the HTTP adapter (ERR_HTTP_HEADERS_SENT)', async () => {
    for (const path of ['/v2/', '/v2/team/app/manifests/v1?ns=gcr.io', `/v2/team/app/blobs/${dockerImage.layers[0]?.digest ?? ''}?ns=gcr.io`, '/v2/team/app/tags/list?ns=gcr.io']) {
      const h = await fetch(`${mirror.url}${path}`, { method: 'HEAD' });
      assert.equal(h.status, 200, path);
      assert.equal(await h.text(), '', `${path}: no body`);
    }
    const missing = await fetch(`${mirror.url}/v2/team/app/manifests/nope?ns=gcr.io`, { method: 'HEAD' });
    assert.equal(missing.status, 404);
    await new Promise((r) => setTimeout(r, 100));
    assert.doesNotMatch(mirror.logText(), /ERR_HTTP_HEADERS_SENT|Cannot write headers after they are sent/);
  });

  test('doubled namespace prefix /v2/<ns>/v2/<repo> (containerd without override_path) is served', async () => {
    const r = await fetch(`${mirror.url}/v2/test-namespace/v2/team/app/manifests/v1?ns=gcr.io`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('docker-content-digest'), dockerImage.manifest.digest);
  });

  test('blob Range requests get 206 with the right slice, and 416 past the end', async () => {
    const layer = dockerImage.layers[1];
    assert.ok(layer);
    const r = await fetch(`${mirror.url}/v2/gcr.io/team/app/blobs/${layer.digest}`, { headers: { range: 'bytes=1000-' } });
    assert.equal(r.status, 206);
    assert.equal(r.headers.get('content-range'), `bytes 1000-${layer.size - 1}/${layer.size}`);
    assert.deepEqual(Buffer.from(await r.arrayBuffer()), layer.bytes.subarray(1000));
    const bad = await fetch(`${mirror.url}/v2/gcr.io/team/app/blobs/${layer.digest}`, { headers: { range: `bytes=${layer.size + 10}-` } });
    assert.equal(bad.status, 416);
    assert.equal(bad.headers.get('content-range'), `bytes */${layer.size}`);
    assert.equal(((await bad.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'RANGE_INVALID');
  });

  test('a cold image manifest starts fetching its config blob (not its layers) before the client asks', async () => {
    const configPath = `/v2/team/prefetch/blobs/${prefetchImage.config.digest}`;
    const layerPath = `/v2/team/prefetch/blobs/${prefetchImage.layers[0]?.digest}`;
    const m = await fetch(`${mirror.url}/v2/gcr.io/team/prefetch/manifests/v1`, { headers: { accept: MT.ociManifest } });
    assert.equal(m.status, 200);
    await m.arrayBuffer();
    assert.equal(await upstream.settledCount('GET', configPath, 1), 1, 'config fetched once, unasked');
    let cache: string | null = null;
    for (let i = 0; i < 50 && cache !== 'hit'; i++) {
      await new Promise((r) => setTimeout(r, 20));
      const h = await fetch(`${mirror.url}/v2/gcr.io/team/prefetch/blobs/${prefetchImage.config.digest}`, { method: 'HEAD' });
      cache = h.headers.get('x-regmirror-cache');
    }
    assert.equal(cache, 'hit', 'the config is cached');
    const c = await fetch(`${mirror.url}/v2/gcr.io/team/prefetch/blobs/${prefetchImage.config.digest}`);
    assert.equal(sha256(Buffer.from(await c.arrayBuffer())), prefetchImage.config.digest);
    assert.equal(upstream.accessCount('GET', configPath), 1, 'served from the cache');
    assert.equal(upstream.accessCount('GET', layerPath), 0, 'layers are left to the client');
  });

  test('20 concurrent GETs of one cold 64 MiB blob make exactly one upstream GET, and all 20 get the right bytes', async () => {
    const path = `/v2/team/coalesce/blobs/${coalesceBlob.digest}`;
    assert.equal(upstream.accessCount('GET', path), 0, 'blob is cold');
    const results = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const r = await fetch(`${mirror.url}/v2/gcr.io/team/coalesce/blobs/${coalesceBlob.digest}`);
        const bytes = Buffer.from(await r.arrayBuffer());
        return { status: r.status, cache: r.headers.get('x-regmirror-cache'), digest: sha256(bytes), size: bytes.length };
      }),
    );
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.equal(r.size, coalesceBlob.size);
      assert.equal(r.digest, coalesceBlob.digest);
    }
    assert.equal(await upstream.settledCount('GET', path, 1), 1, 'exactly one upstream GET');
    const again = await fetch(`${mirror.url}/v2/gcr.io/team/coalesce/blobs/${coalesceBlob.digest}`);
    assert.equal(again.headers.get('x-regmirror-cache'), 'hit');
    await again.arrayBuffer();
  });

  test('the cache fill goes on when the only client disconnects mid-transfer', async () => {
    const path = `/v2/team/abandon/blobs/${abandonBlob.digest}`;
    const ac = new AbortController();
    const r = await fetch(`${mirror.url}/v2/gcr.io/team/abandon/blobs/${abandonBlob.digest}`, { signal: ac.signal });
    assert.equal(r.status, 200);
    const reader = r.body?.getReader();
    await reader?.read();
    ac.abort();
    await reader?.cancel().catch(() => undefined);
    await waitCommitted(abandonBlob.digest);
    const hit = await fetch(`${mirror.url}/v2/gcr.io/team/abandon/blobs/${abandonBlob.digest}`);
    assert.equal(hit.headers.get('x-regmirror-cache'), 'hit');
    assert.equal(sha256(Buffer.from(await hit.arrayBuffer())), abandonBlob.digest);
    assert.equal(await upstream.settledCount('GET', path, 1), 1);
  });

  test('a cached blob is served for another repository only when the upstream confirms that repository has it', async () => {
    const layer = dockerImage.layers[0];
    assert.ok(layer);
    const leak = await fetch(`${mirror.url}/v2/gcr.io/team/big/blobs/${layer.digest}`);
    assert.equal(leak.status, 404, 'team/big does not contain the layer of team/app');
    assert.equal(((await leak.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'BLOB_UNKNOWN');
    await pushImage(upstream.url, 'team/app-copy', 'v1', dockerImage);
    const heads = await upstream.settledCount('HEAD', `/v2/team/app-copy/blobs/${layer.digest}`, 1);
    const shared = await fetch(`${mirror.url}/v2/gcr.io/team/app-copy/blobs/${layer.digest}`);
    assert.equal(shared.status, 200);
    assert.equal(shared.headers.get('x-regmirror-cache'), 'hit', 'served from the cache after the upstream confirmed it');
    assert.equal(sha256(Buffer.from(await shared.arrayBuffer())), layer.digest);
    assert.equal(await upstream.settledCount('HEAD', `/v2/team/app-copy/blobs/${layer.digest}`, heads + 1), heads + 1);
  });

  test('a request through a repository without the blob cannot join another repository\'s running download', async () => {
    const owner = await fetch(`${mirror.url}/v2/gcr.io/team/crossfill/blobs/${crossBlob.digest}`);
    assert.equal(owner.headers.get('x-regmirror-cache'), 'miss');
    const intruder = await fetch(`${mirror.url}/v2/gcr.io/team/big/blobs/${crossBlob.digest}`);
    assert.equal(intruder.status, 404);
    assert.equal(((await intruder.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'BLOB_UNKNOWN');
    assert.equal(sha256(Buffer.from(await owner.arrayBuffer())), crossBlob.digest);
  });

  test('an upstream that cuts a blob mid-body on every answer: the client transfer fails after the resumes, nothing is committed, the next request fetches again', async () => {
    faulty.plans.set(faultyDigest, { framing: 'length', fault: 'cut' });
    const url = `${mirror.url}/v2/faulty.test/bad/blob/blobs/${faultyDigest}`;
    const before = faulty.blobGets.get(faultyDigest) ?? 0;
    const r = await fetch(url);
    assert.equal(r.status, 200, 'headers go out at once');
    await assert.rejects(r.arrayBuffer(), 'the body must fail, not end short');
    assert.equal(existsSync(join(dataDir(), 'blobs/sha256', faultyDigest.slice(7, 9), faultyDigest.slice(7))), false);
    faulty.plans.delete(faultyDigest);
    const ok = await fetch(url);
    assert.equal(ok.headers.get('x-regmirror-cache'), 'miss');
    assert.equal(sha256(Buffer.from(await ok.arrayBuffer())), faultyDigest);
    // The cut answer, 5 resumes (resume_attempts' default; this upstream ignores Range and cuts
    // again), then the good fetch.
    assert.equal(faulty.blobGets.get(faultyDigest), before + 1 + 5 + 1, 'fetched again after the failure');
    assert.match(mirror.logText(), /5 resumes did not complete it/);
    await waitCommitted(faultyDigest);
    const hit = await fetch(url);
    assert.equal(hit.headers.get('x-regmirror-cache'), 'hit');
    await hit.arrayBuffer();
  });

  test('an upstream that sends bytes not matching the digest: the transfer fails and nothing is committed', async () => {
    const fresh = randomBytesFor('faulty-wrong', MiB + 3);
    const freshDigest = sha256(fresh);
    faulty.blobs.set(freshDigest, fresh);
    faulty.plans.set(freshDigest, { framing: 'length', fault: 'wrong' });
    const url = `${mirror.url}/v2/faulty.test/bad/other/blobs/${freshDigest}`;
    const before = faulty.blobGets.get(freshDigest) ?? 0;
    const r = await fetch(url);
    await assert.rejects(r.arrayBuffer(), 'wrong bytes must end in a failed transfer');
    const again = await fetch(url);
    assert.equal(again.headers.get('x-regmirror-cache'), 'miss', 'nothing was committed');
    await assert.rejects(again.arrayBuffer());
    assert.equal(faulty.blobGets.get(freshDigest), before + 2);
    assert.equal(existsSync(join(dataDir(), 'blobs/sha256', freshDigest.slice(7, 9), freshDigest.slice(7))), false);
    assert.match(mirror.logText(), /digest mismatch/);
  });

  test('a relative redirect Location is resolved against the request URL', async () => {
    const blob = randomBytesFor('relative', 300 * 1024);
    const digest = sha256(blob);
    faulty.blobs.set(digest, blob);
    faulty.plans.set(digest, { framing: 'length', fault: 'good', relativeRedirect: true });
    const r = await fetch(`${mirror.url}/v2/faulty.test/team/rel/blobs/${digest}`);
    assert.equal(r.status, 200);
    assert.equal(sha256(Buffer.from(await r.arrayBuffer())), digest);
    assert.match(mirror.logText(), /following upstream redirect|blob cached/);
  });

  test('malformed names, digests and paths get 4xx OCI errors and touch nothing outside the data dir', async () => {
    const siblingsBefore = readdirSync(work).sort();
    const cases: Array<[string, number, string]> = [
      ['/v2/gcr.io/../etc/manifests/latest', 400, 'NAME_INVALID'],
      ['/v2/../../etc/blobs/sha256:' + 'a'.repeat(64), 400, 'NAME_INVALID'],
      ['/v2/gcr.io/team/app/blobs/sha256:../../../../etc/passwd', 404, 'NAME_UNKNOWN'],
      ['/v2/gcr.io/team/app/blobs/sha256:..%2f..%2fx', 400, 'NAME_INVALID'],
      ['/v2/gcr.io/team/%2e%2e/manifests/latest', 400, 'NAME_INVALID'],
      ['/v2/gcr.io/Team/App/manifests/latest', 400, 'NAME_INVALID'],
      ['/v2/gcr.io/team/app/blobs/sha256:totallywrong', 400, 'DIGEST_INVALID'],
      ['/v2/gcr.io/team/app/blobs/sha256:ZZZZ', 400, 'DIGEST_INVALID'],
      [`/v2/gcr.io/team/app/blobs/md5:${'a'.repeat(32)}`, 400, 'UNSUPPORTED'],
      [`/v2/gcr.io/team/app/blobs/sha256:${'A'.repeat(64)}`, 400, 'DIGEST_INVALID'],
      ['/v2/gcr.io/team/app/manifests/-bad-tag', 400, 'TAG_INVALID'],
      ['/v2/evil.example.com/x/manifests/latest', 403, 'DENIED'],
      ['/v2/team/app/manifests/v1?ns=evil.example.com', 403, 'DENIED'],
      ['/v2/gcr.io/team/app/nothing/here', 404, 'NAME_UNKNOWN'],
      ['/etc/passwd', 404, 'NAME_UNKNOWN'],
    ];
    for (const [path, status, code] of cases) {
      const r = await rawRequest(mirror.port, 'GET', path);
      assert.equal(r.status, status, path);
      const body = JSON.parse(r.body) as { errors: Array<{ code: string; message: string }> };
      assert.equal(body.errors[0]?.code, code, path);
      assert.ok((body.errors[0]?.message.length ?? 0) > 10, `${path} has a message`);
    }
    const put = await fetch(`${mirror.url}/v2/gcr.io/team/app/manifests/v1`, { method: 'PUT', body: '{}' });
    assert.equal(put.status, 403);
    const putError = ((await put.json()) as { errors: Array<{ code: string; message: string }> }).errors[0];
    assert.equal(putError?.code, 'DENIED');
    assert.match(putError?.message ?? '', /gcr\.io is mirrored read-only/);
    assert.deepEqual(readdirSync(work).sort(), siblingsBefore, 'no new files beside the data dir');
    assert.ok(!existsSync(join(dataDir(), '..', 'etc')));
  });

  test('tags: fresh within tag_ttl with no upstream call; after it one HEAD keeps the digest; a moved tag is fetched anew', async () => {
    const url = `${mirror.url}/v2/moving/manifests/v1`; // docker.io, tag_ttl = 1s
    const manifestPath = '/v2/library/moving/manifests/v1';
    const first = await fetch(url);
    assert.equal(first.headers.get('x-regmirror-cache'), 'miss');
    assert.equal(first.headers.get('docker-content-digest'), dockerImage.manifest.digest);
    const gets = await upstream.settledCount('GET', manifestPath, 1);
    const heads = await upstream.settledCount('HEAD', manifestPath, 0);
    const fresh = await fetch(url);
    assert.equal(fresh.headers.get('x-regmirror-cache'), 'hit');
    assert.equal((await upstream.settledCount('GET', manifestPath, gets)) + (await upstream.settledCount('HEAD', manifestPath, heads)), gets + heads, 'no upstream call within the TTL');
    await new Promise((r) => setTimeout(r, 1_100));
    const revalidated = await fetch(url);
    assert.equal(revalidated.headers.get('x-regmirror-cache'), 'hit');
    assert.equal(revalidated.headers.get('docker-content-digest'), dockerImage.manifest.digest);
    assert.equal(await upstream.settledCount('HEAD', manifestPath, heads + 1), heads + 1, 'one HEAD upstream');
    assert.equal(await upstream.settledCount('GET', manifestPath, gets), gets, 'no GET when the digest is unchanged');
    await pushImage(upstream.url, 'library/moving', 'v1', movedImage);
    await new Promise((r) => setTimeout(r, 1_100));
    const moved = await fetch(url);
    assert.equal(moved.headers.get('x-regmirror-cache'), 'miss');
    assert.equal(moved.headers.get('docker-content-digest'), movedImage.manifest.digest);
    assert.equal(sha256(Buffer.from(await moved.arrayBuffer())), movedImage.manifest.digest);
  });

  test('tags/list is passed through from the upstream', async () => {
    const r = await fetch(`${mirror.url}/v2/gcr.io/team/app/tags/list`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'application/json');
    assert.deepEqual(await r.json(), { name: 'team/app', tags: ['v1'] });
  });

  test('with the upstream stopped, the same pulls still succeed from the cache (fresh tags hit, expired tags served stale)', async () => {
    await upstream.stop();
    assert.equal(await pullDigest('gcr.io/team/app:v1'), dockerImage.manifest.digest);
    assert.equal(await pullDigest('gcr.io/team/big:v1'), bigImage.manifest.digest);
    assert.equal(await pullDigest('test-namespace/team/multi:v1', true), multi.index.digest);
    await new Promise((r) => setTimeout(r, 1_100));
    assert.equal(await pullDigest('small:v1'), dockerImage.manifest.digest);
    const r = await fetch(`${mirror.url}/v2/small/manifests/v1`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-regmirror-cache'), 'stale', 'docker.io tag TTL (1s) expired and the upstream is down');
    const tags = await fetch(`${mirror.url}/v2/gcr.io/team/app/tags/list`);
    assert.equal(tags.headers.get('x-regmirror-cache'), 'stale');
    assert.deepEqual(await tags.json(), { name: 'team/app', tags: ['v1'] }, 'tags the mirror has seen');
    const miss = await fetch(`${mirror.url}/v2/gcr.io/team/never-pulled/manifests/v1`);
    assert.equal(miss.status, 502);
    assert.equal(((await miss.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAVAILABLE');
  });

  async function waitCommitted(digest: string): Promise<void> {
    const p = join(dataDir(), 'blobs/sha256', digest.slice(7, 9), digest.slice(7));
    const deadline = Date.now() + 10_000;
    while (!existsSync(p) || statSync(p).size === 0) {
      if (Date.now() > deadline) throw new Error(`blob ${digest} not committed in time`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
});
