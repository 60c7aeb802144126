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
