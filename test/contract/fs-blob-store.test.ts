/** The BlobStore contract on FsBlobStore, with direct I/O staging and through the page cache. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import assert from 'node:assert/strict';
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

test('FsBlobStore: probe throws the cause when its temp folder cannot be written', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'regmirror-probe-'));
  const store = new FsBlobStore(dir, false);
  await store.init();
  try {
    await store.probe();
    // A file where the temp folder was: no write can succeed there (as root too, unlike a chmod).
    rmSync(store.tempDir, { recursive: true, force: true });
    writeFileSync(store.tempDir, 'not a folder');
    await assert.rejects(store.probe(), (e: NodeJS.ErrnoException) => e.code === 'EEXIST' || e.code === 'ENOTDIR');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
