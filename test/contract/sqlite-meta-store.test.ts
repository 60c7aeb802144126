/** The MetaStore contract on SqliteMetaStore, bare and behind the caching decorator. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CachingMetaStore, SqliteMetaStore, type MetaStore } from '../../src/meta/index.ts';
import { metaStoreContract } from './meta-store.contract.ts';

for (const cached of [false, true]) {
  metaStoreContract(cached ? 'CachingMetaStore(SqliteMetaStore)' : 'SqliteMetaStore', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'regmirror-meta-contract-'));
    const path = join(dir, 'meta.db');
    const open = (): MetaStore => (cached ? new CachingMetaStore(SqliteMetaStore.open(path), { checkMs: 0 }) : SqliteMetaStore.open(path));
    const opened: MetaStore[] = [];
    const track = (m: MetaStore): MetaStore => {
      opened.push(m);
      return m;
    };
    const closed = new WeakSet<MetaStore>();
    const meta = track(open());
    return {
      meta,
      other: async () => track(SqliteMetaStore.open(path)),
      reopen: async () => track(open()),
      cleanup: async () => {
        for (const m of opened) {
          if (closed.has(m)) continue;
          closed.add(m);
          await m.close().catch(() => undefined);
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
  });
}

test('SqliteMetaStore: a schema 3 cache opens as schema 4: manifest last use from its creation, blob references pending until indexed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'regmirror-meta-v3-'));
  const path = join(dir, 'meta.db');
  const db = new Database(path);
  db.exec(`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE manifests (digest TEXT PRIMARY KEY, media_type TEXT NOT NULL, size INTEGER NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta VALUES ('schema_version', '3');
    INSERT INTO manifests VALUES ('sha256:${'a'.repeat(64)}', 'application/vnd.oci.image.manifest.v1+json', 10, 1234);`);
  db.close();
  const meta = SqliteMetaStore.open(path);
  try {
    assert.equal(await meta.blobRefsPending(), true);
    const inv = await meta.inventory();
    assert.equal(inv.manifests[0]?.usedAt, 1234);
    await meta.putBlobRefs(new Map([[`sha256:${'a'.repeat(64)}`, [`sha256:${'b'.repeat(64)}`]]]), true);
    assert.equal(await meta.blobRefsPending(), false);
    assert.deepEqual((await meta.inventory()).manifests[0]?.blobs, [`sha256:${'b'.repeat(64)}`]);
  } finally {
    await meta.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("SqliteMetaStore.watchCommits announces another connection's commit; the caching decorator then answers it without polling", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'regmirror-meta-watch-'));
  const path = join(dir, 'meta.db');
  const digestA = `sha256:${'a'.repeat(64)}`;
  const digestB = `sha256:${'b'.repeat(64)}`;
  const inner = SqliteMetaStore.open(path);
  // The same store with its watch hidden: only generation() polling (here once a minute) remains.
  const unwatched = SqliteMetaStore.open(path);
  const hidden = Object.assign(Object.create(unwatched) as MetaStore, { watchCommits: undefined });
  const watched = new CachingMetaStore(inner, { checkMs: 1, watchedCheckMs: 60_000 });
  const polled = new CachingMetaStore(hidden, { checkMs: 60_000 });
  const other = SqliteMetaStore.open(path);
  const announced: number[] = [];
  const stop = inner.watchCommits((() => announced.push(Date.now())), () => undefined);
  try {
    assert.ok(stop !== undefined, 'a file database can be watched');
    await other.putTag('gcr.io/a', 'latest', digestA, 1);
    assert.equal((await watched.getTag('gcr.io/a', 'latest'))?.digest, digestA);
    assert.equal((await polled.getTag('gcr.io/a', 'latest'))?.digest, digestA);
    const before = announced.length;
    await other.putTag('gcr.io/a', 'latest', digestB, 2);
    await new Promise((r) => setTimeout(r, 200)); // the announcement arrives through the event loop
    assert.ok(announced.length > before, 'the commit was announced');
    assert.equal((await watched.getTag('gcr.io/a', 'latest'))?.digest, digestB, 'announced: the next lookup sees the move');
    assert.equal((await polled.getTag('gcr.io/a', 'latest'))?.digest, digestA, 'not announced and not yet polled: still the old answer');
  } finally {
    stop?.();
    await watched.close();
    await unwatched.close();
    await other.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
