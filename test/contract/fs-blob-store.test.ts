/** The BlobStore contract on FsBlobStore, with direct I/O staging and through the page cache. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsBlobStore } from '../../src/store/index.ts';
import { blobStoreContract } from './blob-store.contract.ts';

for (const directIo of [true, false]) {
  blobStoreContract(`FsBlobStore (direct_io = ${directIo})`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'regmirror-contract-'));
    const store = new FsBlobStore(dir, directIo);
    await store.init();
    return {
      store,
      cleanup: async () => {
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  });
}
