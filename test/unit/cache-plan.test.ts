/** The eviction planner (src/lifecycle/cache-plan.ts): images, LRU order, shared blobs, protection. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cacheImages, planEviction } from '../../src/lifecycle/index.ts';
import type { CacheInventory } from '../../src/meta/index.ts';

const D = (n: number): string => `sha256:${n.toString(16).padStart(64, '0')}`;
const obj = (n: number, size: number, usedAt: number, createdAt = 0) => ({ digest: D(n), size, usedAt, createdAt });

/** Two images sharing base blob 1; image A (manifest 10) used at 100, B (manifest 20) at 200; orphan blob 9. */
function inventory(extra: Partial<CacheInventory> = {}): CacheInventory {
  return {
    manifests: [
      { ...obj(10, 1, 100), blobs: [D(1), D(2)], children: [] },
      { ...obj(20, 1, 200), blobs: [D(1), D(3)], children: [] },
      { ...obj(30, 1, 50), blobs: [], children: [D(31)] },
      { ...obj(31, 1, 300), blobs: [D(4)], children: [] },
    ],
    blobs: [obj(1, 100, 0), obj(2, 50, 0), obj(3, 70, 0), obj(4, 10, 0), obj(9, 5, 10)],
    tags: [{ repo: 'gcr.io/a', tag: '1', digest: D(10) }, { repo: 'gcr.io/pin', tag: 'x', digest: D(20) }],
    local: new Set(),
    pins: [],
    ...extra,
  };
}

test('images: an index and its platform manifest are one image, last use the latest of its parts; own bytes exclude shared blobs', async () => {
  const images = await cacheImages(inventory(), 1000);
  assert.deepEqual(images.map((i) => i.root ?? i.blobs[0]), [D(9), D(10), D(20), D(30)]);
  const index = images.find((i) => i.root === D(30));
  assert.deepEqual(index?.manifests, [D(30), D(31)]);
  assert.equal(index?.usedAt, 300);
  const a = images.find((i) => i.root === D(10));
  assert.equal(a?.bytes, 1 + 100 + 50);
  assert.equal(a?.ownBytes, 1 + 50, 'the base blob is shared');
  assert.deepEqual(a?.names, ['gcr.io/a:1']);
});

test('plan: least recently used first, orphans included, until enough is freed; shared blobs counted once freed', async () => {
  const o = { now: 1000, graceMs: 0, evictLocal: false };
  assert.deepEqual((await planEviction(inventory(), 5, o)).map((i) => i.root ?? i.blobs[0]), [D(9)]);
  assert.deepEqual((await planEviction(inventory(), 50, o)).map((i) => i.root ?? i.blobs[0]), [D(9), D(10)]);
  // Removing A frees 51 (base still held by B); B then frees its blob and the base.
  assert.deepEqual((await planEviction(inventory(), 100, o)).map((i) => i.root ?? i.blobs[0]), [D(9), D(10), D(20)]);
});

test('plan: pinned tags, pinned digests, local content, the grace period and fills in flight are protected', async () => {
  const o = { now: 1000, graceMs: 0, evictLocal: false };
  const pinnedTag = await planEviction(inventory({ pins: [{ repo: 'gcr.io/pin', reference: 'x', source: 'cli' }] }), 1e9, o);
  assert.ok(!pinnedTag.some((i) => i.root === D(20)));
  const expired = await planEviction(inventory({ pins: [{ repo: 'gcr.io/a', reference: D(10), source: 'moved', until: 500 }] }), 1e9, o);
  assert.ok(expired.some((i) => i.root === D(10)), 'an expired pin protects nothing');
  const local = await planEviction(inventory({ local: new Set([D(10)]) }), 1e9, o);
  assert.ok(!local.some((i) => i.root === D(10)));
  assert.ok((await planEviction(inventory({ local: new Set([D(10)]) }), 1e9, { ...o, evictLocal: true })).some((i) => i.root === D(10)));
  const young = await planEviction(inventory({ manifests: inventory().manifests.map((m) => (m.digest === D(20) ? { ...m, createdAt: 900 } : m)) }), 1e9, { ...o, graceMs: 200 });
  assert.ok(!young.some((i) => i.root === D(20)));
  assert.ok(!(await planEviction(inventory(), 1e9, { ...o, inUse: new Set([D(3)]) })).some((i) => i.root === D(20)));
});

test('plan: an image whose layer is still filling (no row yet) is in use, not evicted before its blobs arrive', async () => {
  const o = { now: 1000, graceMs: 0, evictLocal: false };
  // Manifest 50 references blob 5, which a fill is writing: no blob row yet.
  const inv = inventory({ manifests: [...inventory().manifests, { ...obj(50, 1, 10), blobs: [D(5)], children: [] }] });
  assert.ok(!(await planEviction(inv, 1e9, { ...o, inUse: new Set([D(5)]) })).some((i) => i.root === D(50)));
  assert.ok((await planEviction(inv, 1e9, o)).some((i) => i.root === D(50)), 'with no fill in flight it is an ordinary (partly evicted) image');
});

test('plan with an orphan stream: the same order as with every blob in memory, orphans merged by last use, protected orphans skipped', async () => {
  const o = { now: 1000, graceMs: 0, evictLocal: false };
  const all = inventory({ blobs: [...inventory().blobs, obj(7, 8, 150), obj(8, 9, 400, 990)] });
  const referencedOnly: CacheInventory = { ...all, blobs: all.blobs.filter((b) => [D(1), D(2), D(3), D(4)].includes(b.digest)) };
  const orphans = all.blobs.filter((b) => !referencedOnly.blobs.includes(b)).sort((a, b) => a.usedAt - b.usedAt);
  async function* stream() {
    yield* orphans;
  }
  const order = (plan: Awaited<ReturnType<typeof planEviction>>) => plan.map((i) => i.root ?? i.blobs[0]);
  for (const want of [5, 60, 200, 1e9]) {
    assert.deepEqual(order(await planEviction(referencedOnly, want, o, stream())), order(await planEviction(all, want, o)), `to free ${want}`);
  }
  // Blob 8 is younger than the grace period: never planned, from either source.
  const graced = { ...o, graceMs: 100 };
  assert.ok(!order(await planEviction(referencedOnly, 1e9, graced, stream())).includes(D(8)));
  assert.deepEqual(order(await planEviction(referencedOnly, 1e9, graced, stream())), order(await planEviction(all, 1e9, graced)));
  // An orphan pinned by digest stays.
  const pinned = { ...referencedOnly, pins: [{ repo: 'gcr.io/a', reference: D(7), source: 'cli' as const }] };
  assert.ok(!order(await planEviction(pinned, 1e9, o, stream())).includes(D(7)));
});
