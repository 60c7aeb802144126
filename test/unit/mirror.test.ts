/**
 * The Mirror in process, in seconds: the real FsBlobStore and SqliteMetaStore behind a counting
 * decorator, upstreams answered by undici's MockAgent. Tag TTL, stale-on-error, the
 * cross-repository link rule, single-flight, error mapping and the event stream.
 */
import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockAgent } from 'undici';
import { parseConfigText } from '../../src/config/index.ts';
import { createLogger } from '../../src/log/index.ts';
import { FsBlobStore } from '../../src/store/index.ts';
import { CachingMetaStore, SqliteMetaStore, type MetaStore } from '../../src/meta/index.ts';
import { UpstreamClient } from '../../src/upstream/index.ts';
import { Mirror } from '../../src/mirror/index.ts';
import { EventStream, type MirrorEvents } from '../../src/events/index.ts';
import { buildRoutingTable, routeRequest } from '../../src/routing/index.ts';
import { RegistryError } from '../../src/oci/index.ts';

const ORIGIN = 'http://upstream.test';
const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** Counts the calls that reach the MetaStore it wraps, by method name. */
function counting(inner: MetaStore): { meta: MetaStore; calls: Map<string, number> } {
  const calls = new Map<string, number>();
  const meta = new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        calls.set(String(prop), (calls.get(String(prop)) ?? 0) + 1);
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { meta, calls };
}

interface Upstream {
  /** Requests the mock upstream answered, as "METHOD path". */
  seen: string[];
  count(prefix: string): number;
}

interface Fixture {
  mirror: Mirror;
  agent: MockAgent;
  up: Upstream;
  calls: Map<string, number>;
  events: EventStream;
  clock: { now: number };
  route(path: string): ReturnType<typeof routeRequest>;
}

let dir: string;
let cleanups: Array<() => Promise<void>> = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'regmirror-mirror-'));
  cleanups = [];
});
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  rmSync(dir, { recursive: true, force: true });
});

async function fixture(toml = ''): Promise<Fixture> {
  const config = parseConfigText(`default_registry = "gcr.io"\n[server]\ndata_dir = "${dir}"\n[cache]\ntag_ttl = "1m"\n${toml}\n[[registry]]\nhost = "gcr.io"\nendpoint = "${ORIGIN}"\n`, dir);
  const store = new FsBlobStore(dir, false);
  await store.init();
  const { meta: inner, calls } = counting(SqliteMetaStore.open(join(dir, 'meta.db')));
  const meta = new CachingMetaStore(inner, { checkMs: 0 });
  const agent = new MockAgent();
  agent.disableNetConnect();
  const events = new EventStream();
  const log = createLogger('silent');
  const reg = config.registries.find((r) => r.host === 'gcr.io');
  assert.ok(reg !== undefined);
  const clock = { now: 1_000_000 };
  const mirror = new Mirror({ config, store, meta, upstreams: new Map([['gcr.io', new UpstreamClient(reg, log, agent, events)]]), log, events, now: () => clock.now });
  cleanups.push(async () => {
    await mirror.close(1000);
    await meta.close();
    await store.close();
    await agent.close();
  });
  const table = buildRoutingTable(['gcr.io'], config.namespaces, config.defaultRegistry);
  const seen: string[] = [];
  events.on('upstreamRequest', () => undefined);
  return {
    mirror,
    agent,
    up: { seen, count: (p) => seen.filter((s) => s.startsWith(p)).length },
    calls,
    events,
    clock,
    route: (path) => routeRequest(path, undefined, table),
  };
}

/** An image: config + one layer + its manifest bytes. */
function image(seed: string): { manifest: Buffer; digest: string; layer: Buffer; layerDigest: string; config: Buffer; configDigest: string } {
  const layer = Buffer.from(`layer of ${seed} `.repeat(5000));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(layer), size: layer.length }],
    }),
  );
  return { manifest, digest: sha(manifest), layer, layerDigest: sha(layer), config, configDigest: sha(config) };
}

type Reply = { status: number; body?: Buffer | string; headers?: Record<string, string> };

/** Answers `method path` on the mock upstream with `reply` (every time), recording each request. */
function serve(f: Fixture, method: string, path: string, reply: Reply | (() => Reply)): void {
  f.agent
    .get(ORIGIN)
    .intercept({ method, path })
    .reply(() => {
      f.up.seen.push(`${method} ${path}`);
      const r = typeof reply === 'function' ? reply() : reply;
      return { statusCode: r.status, data: method === 'HEAD' ? '' : (r.body ?? ''), responseOptions: { headers: r.headers ?? {} } };
    })
    .persist();
}

function serveImage(f: Fixture, repo: string, tag: string, im: ReturnType<typeof image>): void {
  const mh = { 'content-type': OCI_MANIFEST, 'docker-content-digest': im.digest, 'content-length': String(im.manifest.length) };
  serve(f, 'GET', `/v2/${repo}/manifests/${tag}`, { status: 200, body: im.manifest, headers: mh });
  serve(f, 'HEAD', `/v2/${repo}/manifests/${tag}`, { status: 200, headers: mh });
  serve(f, 'GET', `/v2/${repo}/manifests/${im.digest}`, { status: 200, body: im.manifest, headers: mh });
  serve(f, 'GET', `/v2/${repo}/blobs/${im.layerDigest}`, { status: 200, body: im.layer, headers: { 'content-length': String(im.layer.length) } });
  serve(f, 'HEAD', `/v2/${repo}/blobs/${im.layerDigest}`, { status: 200, headers: { 'content-length': String(im.layer.length) } });
  serve(f, 'GET', `/v2/${repo}/blobs/${im.configDigest}`, { status: 200, body: im.config, headers: { 'content-length': String(im.config.length) } });
}

async function readAll(s: AsyncIterable<unknown>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of s) out.push(c as Buffer);
  return Buffer.concat(out);
}

async function blobBytes(f: Fixture, path: string): Promise<Buffer> {
  const b = await f.mirror.getBlob(f.route(path), false);
  const bytes = await readAll(await b.open());
  await b.stored(); // readers finish once the bytes are verified; the blob is in place a moment later
  return bytes;
}

test('a tag is fetched once, trusted for its TTL, then revalidated with one HEAD', async () => {
  const f = await fixture();
  const im = image('ttl');
  serveImage(f, 'team/app', 'v1', im);
  const r = f.route('/v2/gcr.io/team/app/manifests/v1');
  const first = await f.mirror.getManifest(r);
  assert.equal(first.cache, 'miss');
  assert.equal(first.digest, im.digest);
  assert.deepEqual(first.bytes, im.manifest);
  f.clock.now += 59_000;
  const second = await f.mirror.getManifest(r);
  assert.equal(second.cache, 'hit');
  assert.equal(f.up.count('GET /v2/team/app/manifests/v1'), 1);
  assert.equal(f.up.count('HEAD /v2/team/app/manifests/v1'), 0, 'no revalidation inside the TTL');
  assert.equal(f.calls.get('getTag'), 1, 'only the first lookup reached the store; the second came from the caching decorator');
  f.clock.now += 2_000;
  const third = await f.mirror.getManifest(r, true);
  assert.equal(third.cache, 'hit');
  assert.equal(f.up.count('HEAD /v2/team/app/manifests/v1'), 1, 'one HEAD after the TTL');
  f.clock.now += 1_000;
  await f.mirror.getManifest(r, true);
  assert.equal(f.up.count('HEAD /v2/team/app/manifests/v1'), 1, 'the HEAD renewed the TTL');
});

test('a tag that moved upstream is fetched by its new digest', async () => {
  const f = await fixture();
  const old = image('old');
  const moved = image('moved');
  let current = old;
  const mh = (): Record<string, string> => ({ 'content-type': OCI_MANIFEST, 'docker-content-digest': current.digest });
  serve(f, 'GET', '/v2/team/app/manifests/v1', () => ({ status: 200, body: current.manifest, headers: mh() }));
  serve(f, 'HEAD', '/v2/team/app/manifests/v1', () => ({ status: 200, headers: mh() }));
  serve(f, 'GET', `/v2/team/app/manifests/${moved.digest}`, { status: 200, body: moved.manifest, headers: { 'content-type': OCI_MANIFEST } });
  serve(f, 'GET', `/v2/team/app/blobs/${old.configDigest}`, { status: 200, body: old.config });
  serve(f, 'GET', `/v2/team/app/blobs/${moved.configDigest}`, { status: 200, body: moved.config });
  const r = f.route('/v2/gcr.io/team/app/manifests/v1');
  assert.equal((await f.mirror.getManifest(r)).digest, old.digest);
  current = moved;
  f.clock.now += 61_000;
  const after = await f.mirror.getManifest(r);
  assert.equal(after.cache, 'miss');
  assert.equal(after.digest, moved.digest);
  assert.equal(f.up.count(`GET /v2/team/app/manifests/${moved.digest}`), 1, 'fetched by the digest the HEAD named');
});

test('an upstream failing at revalidation serves the cached tag as stale', async () => {
  const f = await fixture();
  const im = image('stale');
  let failing = false;
  const mh = { 'content-type': OCI_MANIFEST, 'docker-content-digest': im.digest };
  serve(f, 'GET', '/v2/team/app/manifests/v1', { status: 200, body: im.manifest, headers: mh });
  serve(f, 'HEAD', '/v2/team/app/manifests/v1', () => (failing ? { status: 503 } : { status: 200, headers: mh }));
  serve(f, 'GET', `/v2/team/app/blobs/${im.configDigest}`, { status: 200, body: im.config });
  const r = f.route('/v2/gcr.io/team/app/manifests/v1');
  await f.mirror.getManifest(r);
  failing = true;
  f.clock.now += 61_000;
  const s = await f.mirror.getManifest(r);
  assert.equal(s.cache, 'stale');
  assert.equal(s.digest, im.digest);
  assert.deepEqual(s.bytes, im.manifest);
});

test('concurrent misses make one upstream fetch: 10 tag GETs, 10 blob GETs', async () => {
  const f = await fixture();
  const im = image('flight');
  serveImage(f, 'team/app', 'v1', im);
  const r = f.route('/v2/gcr.io/team/app/manifests/v1');
  const ms = await Promise.all(Array.from({ length: 10 }, () => f.mirror.getManifest(r)));
  assert.ok(ms.every((m) => m.digest === im.digest));
  assert.equal(f.up.count('GET /v2/team/app/manifests/v1'), 1);
  const blobs = await Promise.all(Array.from({ length: 10 }, () => blobBytes(f, `/v2/gcr.io/team/app/blobs/${im.layerDigest}`)));
  assert.ok(blobs.every((b) => b.equals(im.layer)));
  assert.equal(f.up.count(`GET /v2/team/app/blobs/${im.layerDigest}`), 1);
  const hit = await f.mirror.getBlob(f.route(`/v2/gcr.io/team/app/blobs/${im.layerDigest}`), false);
  assert.equal(hit.cache, 'hit');
  hit.discard();
});

test('the cross-repository rule: a cached blob is served to another repository only once its upstream confirms it', async () => {
  const f = await fixture();
  const im = image('cross');
  serveImage(f, 'team/app', 'v1', im);
  assert.ok((await blobBytes(f, `/v2/gcr.io/team/app/blobs/${im.layerDigest}`)).equals(im.layer));
  serve(f, 'HEAD', `/v2/team/secret/blobs/${im.layerDigest}`, { status: 404 });
  await assert.rejects(f.mirror.getBlob(f.route(`/v2/gcr.io/team/secret/blobs/${im.layerDigest}`), false), (e: unknown) => e instanceof RegistryError && e.code === 'BLOB_UNKNOWN');
  serve(f, 'HEAD', `/v2/team/other/blobs/${im.layerDigest}`, { status: 200, headers: { 'content-length': String(im.layer.length) } });
  const ok = await f.mirror.getBlob(f.route(`/v2/gcr.io/team/other/blobs/${im.layerDigest}`), false);
  assert.equal(ok.cache, 'hit', 'served from the cache after the HEAD');
  assert.ok((await readAll(await ok.open())).equals(im.layer));
  assert.equal(f.up.count(`GET /v2/team/other/blobs/${im.layerDigest}`), 0, 'never downloaded again');
  const again = await f.mirror.getBlob(f.route(`/v2/gcr.io/team/other/blobs/${im.layerDigest}`), false);
  again.discard();
  assert.equal(f.up.count(`HEAD /v2/team/other/blobs/${im.layerDigest}`), 1, 'the link is remembered');
});

test('upstream failures map to OCI errors that say what to do', async () => {
  const f = await fixture();
  serve(f, 'GET', '/v2/team/gone/manifests/v1', { status: 404 });
  serve(f, 'GET', '/v2/team/private/manifests/v1', { status: 401 });
  serve(f, 'GET', '/v2/team/busy/manifests/v1', { status: 429, headers: { 'retry-after': '30' } });
  serve(f, 'GET', '/v2/team/broken/manifests/v1', { status: 500 });
  const err = async (path: string): Promise<RegistryError> => {
    try {
      await f.mirror.getManifest(f.route(path));
    } catch (e) {
      assert.ok(e instanceof RegistryError, String(e));
      return e;
    }
    assert.fail(`${path} did not fail`);
  };
  const gone = await err('/v2/gcr.io/team/gone/manifests/v1');
  assert.equal(gone.code, 'MANIFEST_UNKNOWN');
  assert.equal(gone.status, 404);
  const priv = await err('/v2/gcr.io/team/private/manifests/v1');
  assert.equal(priv.code, 'UNAUTHORIZED');
  assert.match(priv.message, /requires credentials .* give its \[\[registry\]\] a credential/);
  const busy = await err('/v2/gcr.io/team/busy/manifests/v1');
  assert.equal(busy.code, 'TOOMANYREQUESTS');
  assert.equal(busy.headers['Retry-After'], '30');
  const broken = await err('/v2/gcr.io/team/broken/manifests/v1');
  assert.equal(broken.code, 'UNAVAILABLE');
  assert.equal(broken.status, 502);
  const offline = await fixture('offline = true');
  await assert.rejects(offline.mirror.getManifest(offline.route('/v2/gcr.io/team/app/manifests/v1')), /not in the cache and cannot be fetched: gcr\.io \(the mirror is offline for it\)/);
});

test('a manifest whose bytes do not hash to the requested digest is refused and not cached', async () => {
  const f = await fixture();
  const im = image('liar');
  const wanted = sha(Buffer.from('something else'));
  serve(f, 'GET', `/v2/team/app/manifests/${wanted}`, { status: 200, body: im.manifest, headers: { 'content-type': OCI_MANIFEST } });
  await assert.rejects(f.mirror.getManifest(f.route(`/v2/gcr.io/team/app/manifests/${wanted}`)), (e: unknown) => e instanceof RegistryError && e.status === 502 && /hashing to/.test(e.message));
  assert.equal(f.calls.get('putManifest') ?? 0, 0);
});

test('the event stream reports manifests and blobs served, fills and upstream requests', async () => {
  const f = await fixture();
  const im = image('events');
  serveImage(f, 'team/app', 'v1', im);
  const got: { [K in keyof MirrorEvents]?: Array<MirrorEvents[K]> } = {};
  const collect = <T extends keyof MirrorEvents>(type: T): void => {
    const list: Array<MirrorEvents[T]> = [];
    (got as Record<string, unknown>)[type] = list;
    f.events.on(type, (e) => list.push(e));
  };
  for (const type of ['manifestServed', 'blobServed', 'fillStarted', 'fillFinished', 'upstreamRequest'] as const) collect(type);
  const r = f.route('/v2/gcr.io/team/app/manifests/v1');
  await f.mirror.getManifest(r);
  await f.mirror.getManifest(r);
  await blobBytes(f, `/v2/gcr.io/team/app/blobs/${im.layerDigest}`);
  await blobBytes(f, `/v2/gcr.io/team/app/blobs/${im.layerDigest}`);
  assert.deepEqual(got.manifestServed?.map((e) => e.cache), ['miss', 'hit']);
  assert.deepEqual(got.blobServed?.map((e) => [e.cache, e.bytes]), [['miss', im.layer.length], ['hit', im.layer.length]]);
  const layerFill = got.fillFinished?.find((e) => e.digest === im.layerDigest);
  assert.equal(layerFill?.outcome, 'stored');
  assert.equal(layerFill?.bytes, im.layer.length);
  assert.ok((got.fillStarted ?? []).some((e) => e.digest === im.layerDigest && e.size === im.layer.length));
  const ups = got.upstreamRequest ?? [];
  assert.ok(ups.some((e) => e.kind === 'manifest' && e.method === 'GET' && e.status === 200 && e.registry === 'gcr.io'));
  assert.ok(ups.some((e) => e.kind === 'blob' && e.status === 200));
});
