/**
 * The BlobStore contract (src/store/blob-store.ts), run against every implementation: visibility
 * only after a verified commit, abort and wrong content leave nothing, unknown is an answer,
 * readers keep their bytes across a delete, iteration lists exactly what was committed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { BlobVerifyError, type BlobStore } from '../../src/store/index.ts';
import { parseDigest, type Digest } from '../../src/oci/index.ts';

export interface BlobStoreFixture {
  store: BlobStore;
  /** Removes whatever the fixture created. */
  cleanup(): Promise<void>;
}

const digestOf = (b: Buffer): Digest => parseDigest(`sha256:${createHash('sha256').update(b).digest('hex')}`);
const bytes = (n: number, seed: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

async function drain(r: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

class Collect extends Writable {
  readonly chunks: Buffer[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.chunks.push(Buffer.from(chunk));
    cb();
  }
}

export function blobStoreContract(name: string, make: () => Promise<BlobStoreFixture>): void {
  const withStore = (title: string, fn: (s: BlobStore) => Promise<void>): void => {
    test(`${name}: ${title}`, async () => {
      const f = await make();
      try {
        await fn(f.store);
      } finally {
        await f.cleanup();
      }
    });
  };

  withStore('an unknown blob is an answer: stat, open and read undefined, delete false, not listed', async (s) => {
    const d = digestOf(Buffer.from('never stored'));
    assert.equal(await s.stat(d), undefined);
    assert.equal(await s.has(d), false);
    assert.equal(await s.open(d), undefined);
    assert.equal(await s.read(d), undefined);
    assert.equal(await s.delete(d), false);
    const listed: string[] = [];
    for await (const page of s.list()) listed.push(...page);
    assert.deepEqual(listed, []);
  });

  withStore('probe (readiness) writes and removes only a temporary object: nothing is listed after it', async (s) => {
    await s.probe();
    await s.probe();
    const listed: string[] = [];
    for await (const page of s.list()) listed.push(...page);
    assert.deepEqual(listed, []);
  });

  withStore('a blob is visible only after commit, then byte for byte through read, open, stream and sendTo', async (s) => {
    const content = bytes(300_000, 1);
    const d = digestOf(content);
    const w = await s.begin(d, content.length);
    await w.write(content.subarray(0, 100_000));
    assert.equal(await s.stat(d), undefined, 'not visible while being written');
    await w.write(content.subarray(100_000));
    assert.equal(w.bytesWritten, content.length);
    await w.verify();
    assert.equal(await s.stat(d), undefined, 'not visible after verify, before commit');
    assert.equal(await s.has(d), false);
    await w.commit();
    await w.close();
    assert.equal(await s.stat(d), content.length);
    assert.equal(await s.has(d), true);
    assert.deepEqual(await s.read(d), content);
    const r = await s.open(d);
    assert.ok(r !== undefined);
    assert.equal(r.size, content.length);
    const part = Buffer.alloc(10);
    assert.equal(await r.read(part, 0, 10, 1000), 10);
    assert.deepEqual(part, content.subarray(1000, 1010));
    assert.deepEqual(await drain(r.stream(5, 20_005)), content.subarray(5, 20_005));
    const r2 = await s.open(d);
    assert.ok(r2 !== undefined);
    const sink = new Collect();
    await r2.sendTo(sink, 250_000, content.length);
    assert.deepEqual(Buffer.concat(sink.chunks), content.subarray(250_000));
  });

  withStore('readers follow a write through readAt before it is committed', async (s) => {
    const content = bytes(50_000, 2);
    const w = await s.begin(digestOf(content), content.length);
    await w.write(content.subarray(0, 30_000));
    const out = Buffer.alloc(30_000);
    let got = 0;
    while (got < 30_000) {
      const n = await w.readAt(got, out, got, 30_000 - got);
      assert.ok(n > 0, 'written bytes are readable');
      got += n;
    }
    assert.deepEqual(out, content.subarray(0, 30_000));
    await w.abort();
    await w.close();
  });

  withStore('wrong content or a wrong size is refused with BlobVerifyError and leaves nothing', async (s) => {
    const content = bytes(1000, 3);
    const d = digestOf(content);
    const wrong = await s.begin(d, content.length);
    const other = Buffer.from(content);
    other[10] = (other[10] ?? 0) ^ 1;
    await wrong.write(other);
    await assert.rejects(wrong.commit(), BlobVerifyError);
    await wrong.close();
    const short = await s.begin(d, content.length);
    await short.write(content.subarray(0, 999));
    await assert.rejects(short.verify(), BlobVerifyError);
    await short.close();
    const long = await s.begin(d, 10);
    await assert.rejects(long.write(content), BlobVerifyError, 'more than the expected size is refused as it arrives');
    await long.abort();
    await long.close();
    await assert.rejects(s.put(d, other), BlobVerifyError);
    assert.equal(await s.stat(d), undefined);
  });

  withStore('abort leaves nothing, also after verify, and may be repeated; abort after commit keeps the blob', async (s) => {
    const content = bytes(5000, 4);
    const d = digestOf(content);
    const w = await s.begin(d);
    await w.write(content);
    await w.verify();
    await w.abort();
    await w.abort();
    await w.close();
    assert.equal(await s.stat(d), undefined);
    const w2 = await s.begin(d);
    await w2.write(content);
    await w2.commit();
    await w2.abort();
    await w2.close();
    assert.equal(await s.stat(d), content.length);
  });

  withStore('a verified writer closed before commit can still be committed (bundles stage first)', async (s) => {
    const content = bytes(7000, 5);
    const d = digestOf(content);
    const w = await s.begin(d, content.length);
    await w.write(content);
    await w.verify();
    await w.close();
    assert.equal(await s.stat(d), undefined);
    await w.commit();
    assert.deepEqual(await s.read(d), content);
  });

  withStore('committing a digest that is already stored is success; put of an empty blob works', async (s) => {
    const content = bytes(100, 6);
    const d = digestOf(content);
    await s.put(d, content);
    await s.put(d, content);
    assert.equal(await s.stat(d), 100);
    const empty = digestOf(Buffer.alloc(0));
    await s.put(empty, Buffer.alloc(0));
    assert.equal(await s.stat(empty), 0);
  });

  withStore('delete removes a blob; an open reader keeps reading what it opened', async (s) => {
    const content = bytes(64_000, 7);
    const d = digestOf(content);
    await s.put(d, content);
    const r = await s.open(d);
    assert.ok(r !== undefined);
    assert.equal(await s.delete(d), true);
    assert.equal(await s.stat(d), undefined);
    assert.equal(await s.has(d), false);
    assert.equal(await s.delete(d), false);
    assert.deepEqual(await drain(r.stream(0, r.size)), content);
  });

  withStore('list yields every committed blob (stat gives its size), nothing in progress', async (s) => {
    const a = bytes(10, 8);
    const b = bytes(20, 9);
    await s.put(digestOf(a), a);
    await s.put(digestOf(b), b);
    const pending = await s.begin(digestOf(bytes(30, 10)));
    await pending.write(bytes(30, 10));
    const listed = new Map<string, number>();
    for await (const page of s.list()) for (const d of page) listed.set(d, (await s.stat(parseDigest(d))) ?? -1);
    const written = await s.modifiedAt(digestOf(a));
    assert.ok(written !== undefined && Math.abs(written - Date.now()) < 60_000, 'modifiedAt: when it was committed');
    assert.equal(await s.modifiedAt(digestOf(bytes(30, 10))), undefined, 'nothing for a blob in progress');
    assert.deepEqual(listed, new Map([[digestOf(a).value, 10], [digestOf(b).value, 20]]));
    await pending.abort();
    await pending.close();
  });
}
