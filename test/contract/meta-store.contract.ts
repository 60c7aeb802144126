/**
 * The MetaStore contract (src/meta/meta-store.ts), run against every implementation and the
 * caching decorator: unknown is an answer, writes are idempotent, links and tags follow unlink,
 * transactions commit together or not at all, buffered blob reads reach the store by close, and
 * generation() moves when another process (a second connection) writes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ManifestEntry, MetaStore } from '../../src/meta/index.ts';

export interface MetaStoreFixture {
  meta: MetaStore;
  /** A second, independent handle on the same data (another process); closed by the fixture. */
  other(): Promise<MetaStore>;
  /** Reopens the data after meta.close() (persistence). */
  reopen(): Promise<MetaStore>;
  cleanup(): Promise<void>;
}

const D = (n: number): string => `sha256:${n.toString(16).padStart(64, '0')}`;

function entry(repo: string, digest: string, refs: string[] = [], children: ManifestEntry['children'] = []): ManifestEntry {
  return {
    repo,
    digest,
    size: 123,
    references: refs,
    blobs: refs.filter((d) => !children.some((c) => c.digest === d)),
    children,
    provenance: { registry: 'gcr.io', repository: repo.replace(/^gcr\.io\//, ''), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 123, source: 'upstream', sourceUrl: 'https://gcr.io' },
  };
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

async function all(it: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const x of it) out.push(x);
  return out.sort();
}

export function metaStoreContract(name: string, make: () => Promise<MetaStoreFixture>): void {
  const withMeta = (title: string, fn: (f: MetaStoreFixture) => Promise<void>): void => {
    test(`${name}: ${title}`, async () => {
      const f = await make();
      try {
        await fn(f);
      } finally {
        await f.cleanup();
      }
    });
  };

  withMeta('unknown is an answer, not an error', async ({ meta }) => {
    assert.equal(await meta.getTag('gcr.io/a', 'latest'), undefined);
    assert.equal(await meta.getManifest(D(1)), undefined);
    assert.equal(await meta.getBlobSize(D(1)), undefined);
    assert.equal(await meta.hasLink('gcr.io/a', D(1)), false);
    assert.equal(await meta.knows(D(1)), false);
    assert.equal(await meta.deleteTag('gcr.io/a', 'latest'), false);
    assert.deepEqual(await meta.unlink('gcr.io/a', D(1)), []);
    assert.deepEqual(await meta.listTags('gcr.io/a'), []);
    assert.deepEqual(await meta.children(D(1)), []);
    assert.equal(await meta.getProvenance('gcr.io/a', D(1)), undefined);
  });

  withMeta('tags: put, touch (only for the same digest), list sorted, delete', async ({ meta }) => {
    await meta.putTag('gcr.io/a', 'v2', D(2), 1000);
    await meta.putTag('gcr.io/a', 'v1', D(1), 1000);
    assert.deepEqual(await meta.getTag('gcr.io/a', 'v1'), { digest: D(1), fetchedAt: 1000, checkedAt: 1000 });
    await meta.touchTag('gcr.io/a', 'v1', D(1), 2000);
    assert.equal((await meta.getTag('gcr.io/a', 'v1'))?.checkedAt, 2000);
    await meta.touchTag('gcr.io/a', 'v1', D(9), 3000);
    assert.equal((await meta.getTag('gcr.io/a', 'v1'))?.checkedAt, 2000, 'a touch for another digest changes nothing');
    await meta.putTag('gcr.io/a', 'v1', D(3), 4000);
    assert.deepEqual(await meta.getTag('gcr.io/a', 'v1'), { digest: D(3), fetchedAt: 4000, checkedAt: 4000 });
    assert.deepEqual(await meta.listTags('gcr.io/a'), ['v1', 'v2']);
    assert.deepEqual(await meta.tagsFor('gcr.io/a', D(3)), ['v1']);
    assert.equal(await meta.deleteTag('gcr.io/a', 'v1'), true);
    assert.equal(await meta.getTag('gcr.io/a', 'v1'), undefined);
  });

  withMeta('a manifest links itself and its references to its repository only, with children and provenance', async ({ meta }) => {
    await meta.putManifest(entry('gcr.io/a', D(10), [D(11), D(12)], [{ digest: D(12), mediaType: 'application/vnd.oci.image.manifest.v1+json', platform: 'linux/amd64' }]), 5000);
    await meta.putManifest(entry('gcr.io/a', D(10), [D(11), D(12)]), 6000);
    assert.deepEqual(await meta.getManifest(D(10)), { mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 123 });
    for (const d of [D(10), D(11), D(12)]) assert.equal(await meta.hasLink('gcr.io/a', d), true);
    assert.equal(await meta.hasLink('gcr.io/b', D(10)), false);
    assert.deepEqual(await meta.children(D(10)), [{ digest: D(12), mediaType: 'application/vnd.oci.image.manifest.v1+json', platform: 'linux/amd64' }]);
    const p = await meta.getProvenance('gcr.io/a', D(10));
    assert.equal(p?.firstFetched, 5000);
    assert.equal(p?.lastChecked, 6000);
    assert.equal(p?.source, 'upstream');
    assert.deepEqual(await all(meta.manifestDigests()), [D(10)]);
    assert.equal(await meta.knows(D(10)), true);
    await meta.forgetManifest(D(10));
    assert.equal(await meta.getManifest(D(10)), undefined);
  });

  withMeta('unlink removes the link and the tags pointing at the digest, in that repository only', async ({ meta }) => {
    await meta.putManifest(entry('gcr.io/a', D(20)), 1);
    await meta.putManifest(entry('gcr.io/b', D(20)), 1);
    await meta.putTag('gcr.io/a', 'x', D(20), 1);
    await meta.putTag('gcr.io/a', 'y', D(20), 1);
    await meta.putTag('gcr.io/b', 'x', D(20), 1);
    assert.equal(await meta.hasLink('gcr.io/a', D(20)), true);
    assert.deepEqual(await meta.unlink('gcr.io/a', D(20)), ['x', 'y']);
    assert.equal(await meta.hasLink('gcr.io/a', D(20)), false);
    assert.equal(await meta.getTag('gcr.io/a', 'x'), undefined);
    assert.equal((await meta.getTag('gcr.io/b', 'x'))?.digest, D(20));
    assert.equal(await meta.hasLink('gcr.io/b', D(20)), true);
  });

  withMeta('blobs: put links, adopt and forget, read times buffered until close', async (f) => {
    const { meta } = f;
    await meta.putBlob('gcr.io/a', D(30), 42, 1);
    assert.equal(await meta.getBlobSize(D(30)), 42);
    assert.equal(await meta.hasLink('gcr.io/a', D(30)), true);
    await meta.adoptBlobs([{ digest: D(31), size: 7 }], 2);
    assert.deepEqual(await all(meta.blobDigests()), [D(30), D(31)]);
    await meta.forgetBlobs([D(30), D(31)]);
    assert.deepEqual(await all(meta.blobDigests()), []);
    await meta.putBlob('gcr.io/a', D(33), 5, 1);
    meta.noteBlobRead(D(32), 99, 3);
    meta.noteBlobRead(D(33), 5, 4);
    await meta.close();
    const again = await f.reopen();
    assert.equal(await again.getBlobSize(D(32)), undefined, 'a read never brings back a row (content evicted meanwhile stays gone)');
    assert.equal((await again.inventory()).blobs.find((b) => b.digest === D(33))?.usedAt, 4, 'the read time was written at close');
  });

  withMeta('counters add up; totals count manifests, hits, misses, blobs and bytes', async ({ meta }) => {
    await meta.putManifest(entry('gcr.io/a', D(40)), 1);
    await meta.putBlob('gcr.io/a', D(41), 1000, 1);
    await meta.addCounts(new Map([[`gcr.io/a\n${D(40)}`, { hits: 2, misses: 1, lastServed: 9 }]]), new Map([['blob_hits', 3]]));
    await meta.addCounts(new Map(), new Map([['blob_hits', 4]]));
    assert.deepEqual(await meta.counters(), { blob_hits: 7 });
    assert.deepEqual(await meta.totals(), { manifests: 1, hits: 2, misses: 1, blobs: 1, blobBytes: 1000 });
    const p = await meta.getProvenance('gcr.io/a', D(40));
    assert.equal(p?.lastServed, 9);
    const listed = await meta.listProvenance({ registry: 'gcr.io', limit: 10, offset: 0 });
    assert.deepEqual(listed.map((r) => r.digest), [D(40)]);
  });

  withMeta('a transaction commits every write together, or none when its fn throws', async ({ meta }) => {
    await meta.transaction(async (tx) => {
      await tx.putTag('gcr.io/a', 'one', D(50), 1);
      await tx.putBlob('gcr.io/a', D(51), 5, 1);
    });
    assert.equal((await meta.getTag('gcr.io/a', 'one'))?.digest, D(50));
    await assert.rejects(
      meta.transaction(async (tx) => {
        await tx.putTag('gcr.io/a', 'two', D(52), 1);
        assert.equal((await tx.getTag('gcr.io/a', 'two'))?.digest, D(52), 'the transaction sees its own writes');
        throw new Error('changed my mind');
      }),
      /changed my mind/,
    );
    assert.equal(await meta.getTag('gcr.io/a', 'two'), undefined);
  });

  withMeta('calls from outside a transaction wait for it: they never land in it', async ({ meta }) => {
    let outside: Promise<void> | undefined;
    await assert.rejects(
      meta.transaction(async (tx) => {
        await tx.putTag('gcr.io/a', 'in', D(60), 1);
        outside = meta.putTag('gcr.io/a', 'out', D(61), 1);
        await new Promise((r) => setTimeout(r, 20));
        throw new Error('roll back');
      }),
      /roll back/,
    );
    await outside;
    assert.equal(await meta.getTag('gcr.io/a', 'in'), undefined);
    assert.equal((await meta.getTag('gcr.io/a', 'out'))?.digest, D(61), 'the outside write was not rolled back with it');
  });

  withMeta("another process's writes move generation() and are seen", async (f) => {
    const { meta } = f;
    await meta.putTag('gcr.io/a', 'moving', D(70), 1);
    assert.equal((await meta.getTag('gcr.io/a', 'moving'))?.digest, D(70));
    const g1 = await meta.generation();
    const other = await f.other();
    await other.putTag('gcr.io/a', 'moving', D(71), 2);
    assert.notEqual(await meta.generation(), g1);
    await nextTurn(); // the next request arrives in a later turn of the event loop
    assert.equal((await meta.getTag('gcr.io/a', 'moving'))?.digest, D(71), 'the next lookup sees the other write');
    await other.unlink('gcr.io/a', D(71));
    await nextTurn();
    assert.equal(await meta.getTag('gcr.io/a', 'moving'), undefined);
  });

  withMeta('upload sessions: recorded with their repository, touched, found idle, deleted', async ({ meta }) => {
    const a = 'a'.repeat(32);
    const b = 'b'.repeat(32);
    await meta.putUpload(a, '_local/site/app', 1000);
    await meta.putUpload(b, '_local/site/app', 1000);
    assert.deepEqual(await meta.getUpload(a), { repo: '_local/site/app', createdAt: 1000, updatedAt: 1000 });
    await meta.touchUpload(b, 5000);
    assert.deepEqual(await meta.uploadsIdleSince(3000), [a]);
    await meta.deleteUpload(a);
    assert.equal(await meta.getUpload(a), undefined);
    assert.deepEqual(await meta.uploadsIdleSince(9000), [b]);
  });

  withMeta('process notes: opened, listed, closed; the reconciled flag persists', async ({ meta }) => {
    await meta.processOpened('p1-1', 1);
    await meta.processOpened('p2-2', 1);
    assert.deepEqual((await meta.openProcesses()).sort(), ['p1-1', 'p2-2']);
    await meta.processClosed('p1-1');
    assert.deepEqual(await meta.openProcesses(), ['p2-2']);
    assert.equal(await meta.filesReconciled(), false);
    await meta.setFilesReconciled(true);
    assert.equal(await meta.filesReconciled(), true);
  });

  withMeta('lifecycle: inventory with blob references and children, last use from reads, cacheBytes, cacheObjects', async ({ meta }) => {
    await meta.putBlob('gcr.io/a', D(11), 1000, 100);
    await meta.putBlob('gcr.io/a', D(12), 2000, 100);
    await meta.putManifest(entry('gcr.io/a', D(10), [D(11), D(12)]), 100);
    await meta.putManifest(entry('gcr.io/a', D(20), [D(10)], [{ digest: D(10) }]), 100);
    await meta.putTag('gcr.io/a', 'v1', D(20), 100);
    assert.equal(await meta.cacheBytes(), 1000 + 2000 + 123 + 123);
    assert.deepEqual(await meta.cacheObjects(), { blobs: { count: 2, bytes: 3000 }, manifests: { count: 2, bytes: 246 } });
    meta.noteManifestRead(D(10), 500);
    meta.noteBlobRead(D(11), 1000, 700);
    await meta.flushReads();
    const inv = await meta.inventory();
    const m10 = inv.manifests.find((m) => m.digest === D(10));
    assert.deepEqual(m10?.blobs.sort(), [D(11), D(12)]);
    assert.equal(m10?.usedAt, 500);
    assert.deepEqual(inv.manifests.find((m) => m.digest === D(20))?.children, [D(10)]);
    assert.equal(inv.blobs.find((b) => b.digest === D(11))?.usedAt, 700);
    assert.deepEqual(inv.tags, [{ repo: 'gcr.io/a', tag: 'v1', digest: D(20) }]);
  });

  withMeta('lifecycle: orphanBlobs pages the unreferenced blobs least recently used first; inventory({ orphans: false }) leaves them out', async ({ meta }) => {
    await meta.putBlob('gcr.io/a', D(11), 10, 100); // referenced below
    for (let i = 0; i < 7; i++) await meta.putBlob('gcr.io/a', D(50 + i), 1 + i, 100 + (i % 3));
    await meta.putManifest(entry('gcr.io/a', D(10), [D(11)]), 100);
    meta.noteBlobRead(D(50), 1, 900); // the oldest, read since: now the newest
    await meta.flushReads();
    const seen: Array<{ digest: string; usedAt: number }> = [];
    let after: { usedAt: number; digest: string } | undefined;
    for (;;) {
      const page = await meta.orphanBlobs(after, 3);
      assert.ok(page.length <= 3);
      seen.push(...page.map((b) => ({ digest: b.digest, usedAt: b.usedAt })));
      const last = page[page.length - 1];
      if (last === undefined || page.length < 3) break;
      after = { usedAt: last.usedAt, digest: last.digest };
    }
    assert.equal(seen.length, 7, 'every unreferenced blob once, the referenced one never');
    assert.ok(!seen.some((b) => b.digest === D(11)));
    const order = [...seen].sort((a, b) => a.usedAt - b.usedAt || (a.digest < b.digest ? -1 : 1));
    assert.deepEqual(seen, order, 'by last use, then digest');
    assert.equal(seen[seen.length - 1]?.digest, D(50));
    const inv = await meta.inventory({ orphans: false });
    assert.deepEqual(inv.blobs.map((b) => b.digest), [D(11)]);
    assert.equal((await meta.inventory()).blobs.length, 8);
  });

  withMeta('lifecycle: removeContent re-checks uses since the plan, children and references', async ({ meta }) => {
    await meta.putBlob('gcr.io/a', D(11), 1000, 100);
    await meta.putBlob('gcr.io/a', D(12), 1000, 100);
    await meta.putManifest(entry('gcr.io/a', D(10), [D(11), D(12)]), 100);
    await meta.putManifest(entry('gcr.io/b', D(30), [D(12)]), 100);
    await meta.putTag('gcr.io/a', 'v1', D(10), 100);
    // Used after the plan (at 150): stays.
    meta.noteManifestRead(D(10), 200);
    await meta.flushReads();
    assert.deepEqual(await meta.removeContent([D(10)], [D(11), D(12)], 150), { manifests: [], blobs: [], links: [] });
    // Planned after that use: the manifest, its tag and its own blob go; the blob D(30) holds stays.
    const r = await meta.removeContent([D(10)], [D(11), D(12)], 300);
    assert.deepEqual({ manifests: r.manifests, blobs: r.blobs }, { manifests: [D(10)], blobs: [D(11)] });
    assert.deepEqual(r.links.map((l) => `${l.repo} ${l.digest}`).sort(), [`gcr.io/a ${D(10)}`, `gcr.io/a ${D(11)}`].sort(), 'the links that went with them');
    assert.equal(await meta.getTag('gcr.io/a', 'v1'), undefined);
    assert.equal(await meta.getManifest(D(10)), undefined);
    assert.equal(await meta.getBlobSize(D(12)), 1000);
    assert.equal(await meta.hasLink('gcr.io/a', D(11)), false);
    // A removed blob's buffered read does not bring its row back.
    meta.noteBlobRead(D(11), 1000, 400);
    await meta.flushReads();
    assert.equal(await meta.getBlobSize(D(11)), undefined);
    // A child another index still lists stays.
    await meta.putManifest(entry('gcr.io/a', D(40), [D(30)], [{ digest: D(30) }]), 100);
    assert.deepEqual((await meta.removeContent([D(30)], [], 1000)).manifests, []);
  });

  withMeta('pins: put, list, unpin; a pinned tag that moves keeps its previous digest pinned; config pins replaced', async ({ meta }) => {
    await meta.pin({ repo: 'gcr.io/a', reference: 'v1', source: 'cli' });
    await meta.putTag('gcr.io/a', 'v1', D(1), Date.now());
    await meta.putTag('gcr.io/a', 'v1', D(2), Date.now());
    const pins = await meta.pins();
    assert.ok(pins.some((p) => p.reference === 'v1' && p.source === 'cli'));
    const moved = pins.find((p) => p.reference === D(1));
    assert.equal(moved?.source, 'moved');
    assert.ok((moved?.until ?? 0) > Date.now());
    await meta.setConfigPins([{ repo: 'gcr.io/b', reference: 'x' }]);
    await meta.setConfigPins([{ repo: 'gcr.io/c', reference: 'y' }]);
    const after = (await meta.pins()).map((p) => `${p.repo}:${p.reference}`);
    assert.ok(after.includes('gcr.io/c:y') && !after.includes('gcr.io/b:x'), after.join(' '));
    assert.equal(await meta.unpin('gcr.io/a', 'v1'), true);
    assert.equal(await meta.unpin('gcr.io/a', 'v1'), false);
  });
}
