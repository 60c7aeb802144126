/** The MetaStore contract on SqliteMetaStore, bare and behind the caching decorator. */
import { mkdtempSync, rmSync } from 'node:fs';
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
