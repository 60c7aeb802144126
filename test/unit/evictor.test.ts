/** The Evictor in process on the real FsBlobStore and SqliteMetaStore (src/lifecycle/evictor.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Evictor } from '../../src/lifecycle/index.ts';
import { SqliteMetaStore } from '../../src/meta/index.ts';
import { FsBlobStore, metaDbPath } from '../../src/store/index.ts';
import { EventStream } from '../../src/events/index.ts';
import { createLogger } from '../../src/log/index.ts';
import { digestOf, parseDigest } from '../../src/oci/index.ts';

async function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'regmirror-evictor-'));
  const store = new FsBlobStore(dir, false);
  await store.init();
  const meta = SqliteMetaStore.open(metaDbPath(dir));
  const events = new EventStream();
  const hour = Date.now() - 3600_000;
  /** An image: one layer of `size` bytes and its manifest, created and last used at `at`. */
  const image = async (repo: string, tag: string, size: number, at: number): Promise<{ manifest: string; layer: string }> => {
    const layerBytes = Buffer.alloc(size, repo);
    const layer = digestOf(layerBytes);
    await store.put(parseDigest(layer), layerBytes);
    await meta.putBlob(repo, layer, size, at);
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', layers: [{ digest: layer, size }] }));
    const manifest = digestOf(body);
    await store.put(parseDigest(manifest), body);
    await meta.putManifest({ repo, digest: manifest, size: body.length, references: [layer], blobs: [layer], children: [], provenance: { registry: 'gcr.io', repository: repo.slice(7), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: body.length, source: 'upstream' } }, at);
    await meta.putTag(repo, tag, manifest, at);
    return { manifest, layer };
  };
  return { dir, store, meta, events, hour, image, cleanup: async () => { await meta.close(); rmSync(dir, { recursive: true, force: true }); } };
}

test('a sweep over the budget evicts the least recently used image, rows and files, with an event', async () => {
  const s = await setup();
  try {
    const a = await s.image('gcr.io/a', '1', 1000, s.hour);
    const b = await s.image('gcr.io/b', '1', 1000, s.hour + 60_000);
    const seen: Array<{ digest: string; reason: string }> = [];
    s.events.on('evicted', (e) => seen.push(e));
    const ev = new Evictor({ store: s.store, meta: s.meta, log: createLogger('silent'), events: s.events }, { maxBytes: 2000, evictAt: 0.9, evictTo: 0.8, graceMs: 60_000, evictLocal: false });
    const r = await ev.sweep();
    assert.equal(r.images, 1);
    assert.equal(await s.meta.getManifest(a.manifest), undefined);
    assert.equal(await s.store.stat(parseDigest(a.layer)), undefined, "a's layer file is gone");
    assert.equal(await s.store.stat(parseDigest(b.layer)), 1000);
    assert.ok((await s.meta.getManifest(b.manifest)) !== undefined);
    assert.equal(await s.meta.getTag('gcr.io/a', '1'), undefined);
    assert.deepEqual(seen.map((e) => [e.digest, e.reason]), [[a.manifest, 'budget']]);
  } finally {
    await s.cleanup();
  }
});

test('a budget that pinned content alone exceeds: one plan, then no replanning until the cache grows', async () => {
  const s = await setup();
  try {
    await s.image('gcr.io/p', '1', 5000, s.hour);
    await s.meta.pin({ repo: 'gcr.io/p', reference: '1', source: 'cli' });
    let plans = 0;
    const inventory = s.meta.inventory.bind(s.meta);
    s.meta.inventory = async () => {
      plans++;
      return inventory();
    };
    const ev = new Evictor({ store: s.store, meta: s.meta, log: createLogger('silent'), events: s.events }, { maxBytes: 1000, evictAt: 0.9, evictTo: 0.8, graceMs: 0, evictLocal: false });
    assert.equal((await ev.sweep()).images, 0);
    assert.equal((await ev.sweep()).images, 0);
    assert.equal(plans, 1, 'the second check did not plan over the inventory again');
    await s.image('gcr.io/q', '1', 4000, s.hour);
    assert.equal((await ev.sweep()).images, 1, 'grown: planned again, the unpinned image goes');
    assert.equal(plans, 2);
  } finally {
    await s.cleanup();
  }
});

test('min_free: with less free on the filesystem than min_free, the least recently used image goes (reason min_free); evict_grace keeps new content', async () => {
  const s = await setup();
  try {
    const old = await s.image('gcr.io/a', '1', 1000, s.hour);
    const young = await s.image('gcr.io/b', '1', 1000, Date.now());
    const seen: string[] = [];
    s.events.on('evicted', (e) => seen.push(`${e.digest} ${e.reason}`));
    // A floor no disk here can meet: everything evictable goes, the content younger than the grace stays.
    const ev = new Evictor({ store: s.store, meta: s.meta, log: createLogger('silent'), events: s.events }, { evictAt: 0.9, evictTo: 0.8, minFreeBytes: 2 ** 60, graceMs: 60_000, evictLocal: false });
    assert.equal(ev.enabled, true);
    const r = await ev.sweep();
    assert.equal(r.reason, 'min_free');
    assert.deepEqual(seen, [`${old.manifest} min_free`]);
    assert.ok((await s.meta.getManifest(young.manifest)) !== undefined, 'younger than evict_grace');
  } finally {
    await s.cleanup();
  }
});

test('evict_local: a local namespace image stays unless evict_local is on', async () => {
  const s = await setup();
  try {
    const local = await s.image('_local/site/app', '1', 1000, s.hour);
    const budget = { maxBytes: 100, evictAt: 0.9, evictTo: 0.8, graceMs: 0 };
    const keep = new Evictor({ store: s.store, meta: s.meta, log: createLogger('silent'), events: s.events }, { ...budget, evictLocal: false });
    assert.equal((await keep.sweep()).images, 0);
    assert.ok((await s.meta.getManifest(local.manifest)) !== undefined);
    const evict = new Evictor({ store: s.store, meta: s.meta, log: createLogger('silent'), events: s.events }, { ...budget, evictLocal: true });
    assert.equal((await evict.sweep()).images, 1);
    assert.equal(await s.meta.getManifest(local.manifest), undefined);
  } finally {
    await s.cleanup();
  }
});
