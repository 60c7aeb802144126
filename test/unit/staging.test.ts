import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { FsBlobStore, blobPath } from '../../src/store/index.ts';
import { probeDirectIo, BLOCK as DIRECT_BLOCK } from '../../src/store/staging.ts';
import { parseDigest } from '../../src/oci/index.ts';
import { warmUp } from '../../src/mirror/index.ts';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

async function store(direct: boolean): Promise<FsBlobStore> {
  const s = new FsBlobStore(mkdtempSync(join(tmpdir(), 'regmirror-direct-')), direct);
  await s.init();
  return s;
}

// Sizes around the 4 KiB alignment and the 1 MiB staging block, in uneven chunks.
const SIZES = [0, 1, 4095, 4096, 4097, DIRECT_BLOCK - 1, DIRECT_BLOCK, DIRECT_BLOCK + 1, 2 * DIRECT_BLOCK, 3 * DIRECT_BLOCK + 777];

for (const direct of [true, false]) {
  test(`blobs written ${direct ? 'with direct I/O' : 'through the page cache'} are byte-exact at every size around the block boundaries`, async () => {
    const s = await store(direct);
    assert.equal(s.directIo, direct && s.directIoRefused === undefined);
    if (direct) assert.equal(s.directIoRefused, undefined, 'the test filesystem takes O_DIRECT');
    for (const [i, size] of SIZES.entries()) {
      const content = pattern(size, i + 1);
      const d = parseDigest(sha(content));
      const w = await s.begin(d, size);
      for (let off = 0, step = 1000; off < size; off += step, step = (step * 7) % 300_000 + 1) {
        await w.write(content.subarray(off, Math.min(size, off + step)));
      }
      await w.commit();
      await w.close();
      assert.equal(w.bytesInFile, size);
      assert.deepEqual(readFileSync(blobPath(s.dataDir, d)), content, `size ${size}`);
    }
    assert.deepEqual(readdirSync(s.tempDir), []);
  });
}

test('with direct I/O the file follows the accepted bytes one staging block at a time', async () => {
  const s = await store(true);
  const content = pattern(3 * DIRECT_BLOCK + 10, 9);
  const d = parseDigest(sha(content));
  const w = await s.begin(d, content.length);
  let grew = 0;
  w.onProgress = () => grew++;
  await w.write(content.subarray(0, DIRECT_BLOCK - 1));
  assert.equal(w.bytesWritten, DIRECT_BLOCK - 1);
  assert.equal(w.bytesInFile, 0, 'a partial block is staged, not written');
  await w.write(content.subarray(DIRECT_BLOCK - 1));
  await w.verify();
  assert.equal(w.bytesInFile, content.length);
  assert.equal(grew, 4, 'three full blocks and the padded tail');
  const copy = Buffer.alloc(content.length + 1);
  const bytesRead = await w.readFileAt(copy, 0, copy.length, 0);
  assert.equal(bytesRead, content.length, 'the padding is cut off');
  assert.deepEqual(copy.subarray(0, bytesRead), content);
  await w.commit();
  await w.close();
});

test('more concurrent writers than staging blocks write unstaged; all blobs are exact', async () => {
  const s = await store(true);
  const contents = Array.from({ length: 40 }, (_, i) => pattern(DIRECT_BLOCK + 100 * i, 100 + i));
  const writers = await Promise.all(contents.map((c) => s.begin(parseDigest(sha(c)), c.length)));
  await Promise.all(
    writers.map(async (w, i) => {
      const c = contents[i] as Buffer;
      for (let off = 0; off < c.length; off += 65536) await w.write(c.subarray(off, off + 65536));
      await w.commit();
      await w.close();
    }),
  );
  for (const c of contents) assert.deepEqual(readFileSync(blobPath(s.dataDir, parseDigest(sha(c)))), c);
  // The staging blocks went back to the pool: a new writer is staged again.
  const c = pattern(10, 1);
  const w = await s.begin(parseDigest(sha(c)), c.length);
  await w.write(c);
  assert.equal(w.bytesInFile, 0, 'staged');
  await w.commit();
  await w.close();
});

test('an aborted staged writer leaves no file and returns its blocks', async () => {
  const s = await store(true);
  for (let i = 0; i < 40; i++) {
    const w = await s.begin(parseDigest(sha(Buffer.from('x'))), 3 * DIRECT_BLOCK);
    await w.write(pattern(DIRECT_BLOCK + 5, i));
    assert.equal(w.bytesInFile === 0 || w.bytesInFile === DIRECT_BLOCK, true);
    await w.abort();
    await w.close();
  }
  assert.deepEqual(readdirSync(s.tempDir), []);
  const w = await s.begin(parseDigest(sha(Buffer.from('y'))), 1);
  await w.write(Buffer.from('y'));
  assert.equal(w.bytesInFile, 0, 'still staged: aborts gave their blocks back');
  await w.commit();
  await w.close();
});

test('the direct I/O probe reports why it cannot be used', async () => {
  const r = await probeDirectIo(join(tmpdir(), 'regmirror-no-such-dir', 'tmp'));
  assert.deepEqual(r, { ok: false, reason: 'ENOENT' });
  const s = await store(false);
  assert.equal(s.directIo, false);
  assert.equal(s.directIoRefused, undefined, 'not asked for, so not refused');
});

test('the newest 3 to 4 MiB stay in memory for readers; older bytes only in the file', async () => {
  for (const direct of [true, false]) {
    const s = await store(direct);
    const content = pattern(6 * DIRECT_BLOCK + 1234, 77);
    const w = await s.begin(parseDigest(sha(content)), content.length);
    for (let off = 0; off < content.length; off += 65536) await w.write(content.subarray(off, off + 65536));
    const out = Buffer.alloc(300_000);
    assert.equal(w.copyRecent(0, out, 0, out.length), 0, 'the first MiB was reused for newer bytes');
    const at = content.length - 3 * DIRECT_BLOCK;
    assert.equal(w.copyRecent(at, out, 0, out.length), out.length, 'across block boundaries');
    assert.deepEqual(out, content.subarray(at, at + out.length));
    assert.equal(w.copyRecent(content.length - 10, out, 5, 100), 10, 'up to the last byte accepted');
    assert.deepEqual(out.subarray(5, 15), content.subarray(content.length - 10));
    assert.ok(w.bytesInFile < content.length, 'the partial block is only in memory');
    assert.ok(w.copyRecent(w.bytesInFile, out, 0, 1) === 1, 'whatever is not in the file yet is in memory');
    await w.verify();
    assert.equal(w.bytesInFile, content.length);
    assert.equal(w.copyRecent(content.length - 10, out, 0, 10), 10, 'memory kept after verify, for the readers');
    await w.commit();
    assert.equal(w.copyRecent(content.length - 10, out, 0, 10), 0, 'blocks returned once verified');
    await w.close();
    assert.deepEqual(readFileSync(blobPath(s.dataDir, parseDigest(sha(content)))), content);
  }
});

test('the start-up warm-up moves bytes through a fill and a reader and leaves nothing behind', async () => {
  const s = await store(true);
  const r = await warmUp(s, 8);
  assert.equal(r.bytes, 8 * DIRECT_BLOCK);
  assert.deepEqual(readdirSync(s.tempDir), [], 'temp file removed');
  assert.deepEqual(readdirSync(join(s.dataDir, 'blobs')), [], 'nothing cached');
});
