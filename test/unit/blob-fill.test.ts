import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { FsBlobStore, BlobVerifyError, blobPath } from '../../src/store/index.ts';
import { BlobFill, SingleFlight } from '../../src/mirror/index.ts';
import { parseDigest } from '../../src/oci/index.ts';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function collect(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function setup(content: Buffer) {
  const store = new FsBlobStore(mkdtempSync(join(tmpdir(), 'regmirror-fill-')));
  await store.init();
  const d = parseDigest(sha(content));
  const writer = await store.createWriter(d, content.length);
  return { store, d, writer, fill: new BlobFill(writer, content.length) };
}

test('readers follow a fill and get every byte once it commits; a late reader too', async () => {
  const content = Buffer.alloc(1_000_000, 7);
  content.write('tail', content.length - 4);
  const { store, d, writer, fill } = await setup(content);
  fill.acquire();
  const early = collect(fill.createReader());
  fill.acquire();
  const ranged = collect(fill.createReader(10, 20));
  for (let off = 0; off < content.length; off += 65536) {
    await writer.write(content.subarray(off, off + 65536));
    fill.progress();
  }
  fill.acquire();
  const late = collect(fill.createReader(content.length - 4));
  await writer.commit();
  fill.commit();
  assert.deepEqual(await early, content);
  assert.deepEqual(await ranged, content.subarray(10, 20));
  assert.equal((await late).toString(), 'tail');
  assert.equal(await store.stat(d), content.length);
});

test('readers that keep up are served the recent chunks from memory, readers that fall behind from the file', async () => {
  const content = Buffer.alloc(9 * 1024 * 1024 + 123);
  for (let i = 0; i < content.length; i += 4) content.writeUInt32LE((i * 2654435761) >>> 0, Math.min(i, content.length - 4));
  const { writer, fill } = await setup(content);
  fill.acquire();
  const keepingUp = collect(fill.createReader());
  fill.acquire();
  const ranged = collect(fill.createReader(5 * 1024 * 1024 + 7, 5 * 1024 * 1024 + 300_000));
  let late: Promise<Buffer> | undefined;
  for (let off = 0; off < content.length; off += 100_000) {
    const chunk = Buffer.from(content.subarray(off, off + 100_000)); // the filler's own chunk
    await writer.write(chunk);
    fill.progress(chunk);
    await new Promise((r) => setImmediate(r));
    if (late === undefined && off > 6 * 1024 * 1024) {
      fill.acquire();
      late = collect(fill.createReader(1000)); // starts far behind the in-memory window
    }
  }
  await writer.commit();
  fill.commit();
  assert.ok((await keepingUp).equals(content));
  assert.ok((await ranged).equals(content.subarray(5 * 1024 * 1024 + 7, 5 * 1024 * 1024 + 300_000)));
  assert.ok(late !== undefined && (await late).equals(content.subarray(1000)));
});

/** A destination that copies what it gets (buffers are reused by the sender) and acknowledges later. */
function copyingSink(): Writable & { bytes: () => Buffer } {
  const got: Buffer[] = [];
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      got.push(Buffer.from(chunk));
      setImmediate(cb);
    },
  });
  return Object.assign(w, { bytes: () => Buffer.concat(got) });
}

test('sendTo writes a following fill to a destination, from memory or the file, and ends it only after verification', async () => {
  const content = Buffer.alloc(9 * 1024 * 1024 + 5);
  for (let i = 0; i < content.length; i++) content[i] = (i * 13 + (i >> 10)) & 0xff;
  const { writer, fill } = await setup(content);
  const early = copyingSink();
  fill.acquire();
  const earlyDone = fill.sendTo(early);
  let late: ReturnType<typeof copyingSink> | undefined;
  let lateDone: Promise<void> | undefined;
  for (let off = 0; off < content.length; off += 100_000) {
    const chunk = Buffer.from(content.subarray(off, off + 100_000));
    await writer.write(chunk);
    fill.progress(chunk);
    await new Promise((r) => setImmediate(r));
    if (late === undefined && off > 6 * 1024 * 1024) {
      late = copyingSink();
      fill.acquire();
      lateDone = fill.sendTo(late, 10); // starts far behind the in-memory window: reads the file
    }
  }
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(early.writableEnded, false, 'not ended before the digest is verified');
  await writer.commit();
  fill.commit();
  await earlyDone;
  await lateDone;
  assert.ok(early.bytes().equals(content));
  assert.ok(late !== undefined && late.bytes().equals(content.subarray(10)));
  assert.equal(early.writableFinished, true);
});

test('sendTo rejects without ending the destination when the fill fails', async () => {
  const content = Buffer.alloc(300_000, 3);
  const { writer, fill } = await setup(content);
  const out = copyingSink();
  fill.acquire();
  const done = fill.sendTo(out);
  await writer.write(Buffer.alloc(300_000, 4)); // wrong bytes
  fill.progress();
  await assert.rejects(writer.commit(), BlobVerifyError);
  fill.fail(new BlobVerifyError('digest mismatch'));
  await assert.rejects(done, /digest mismatch/);
  assert.equal(out.writableEnded, false);
});

test('a reader never emits its last byte before the digest is verified; a bad fill errors the reader', async () => {
  const content = Buffer.from('0123456789');
  const { d, writer, fill, store } = await setup(content);
  fill.acquire();
  const reader = fill.createReader();
  const got: Buffer[] = [];
  reader.on('data', (c: Buffer) => got.push(c));
  const errored = new Promise<Error>((resolve) => reader.on('error', resolve));
  await writer.write(Buffer.from('0123456780'));
  fill.progress();
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(Buffer.concat(got).length, 9, 'last byte withheld while unverified');
  await assert.rejects(writer.commit(), BlobVerifyError);
  fill.fail(new BlobVerifyError('digest mismatch'));
  assert.match((await errored).message, /digest mismatch/);
  assert.equal(existsSync(blobPath(store.dataDir, d)), false, 'nothing committed');
  assert.deepEqual(readdirSync(join(store.dataDir, 'tmp')), [], 'temp file removed');
});

test('readers finish once the digest is verified, before the file is fsynced and renamed', async () => {
  const content = Buffer.from('verified-before-durable');
  const { writer, fill, store, d } = await setup(content);
  fill.acquire();
  const reader = collect(fill.createReader());
  await writer.write(content);
  fill.progress();
  await writer.verify();
  fill.verified();
  assert.deepEqual(await reader, content, 'complete before persist');
  assert.equal(await store.stat(d), undefined, 'not yet in place');
  await writer.persist();
  fill.commit();
  assert.equal(await store.stat(d), content.length);
});

test('a short body fails verification on size', async () => {
  const content = Buffer.from('abcdef');
  const { writer } = await setup(content);
  await writer.write(Buffer.from('abc'));
  await assert.rejects(writer.commit(), /size mismatch/);
});

test('the store removes leftover temp files at start', async () => {
  const { store, writer } = await setup(Buffer.from('x'));
  await writer.write(Buffer.from('x'));
  assert.equal(readdirSync(join(store.dataDir, 'tmp')).length, 1);
  assert.equal(await new FsBlobStore(store.dataDir).init(), 1);
  assert.deepEqual(readdirSync(join(store.dataDir, 'tmp')), []);
});

test('single-flight runs concurrent work for one key once and frees the key after', async () => {
  const sf = new SingleFlight<number>();
  let runs = 0;
  const work = async () => {
    runs++;
    await new Promise((r) => setTimeout(r, 10));
    return 42;
  };
  assert.deepEqual(await Promise.all([sf.do('k', work), sf.do('k', work), sf.do('k', work)]), [42, 42, 42]);
  assert.equal(runs, 1);
  assert.equal(sf.size, 0);
  await sf.do('k', work);
  assert.equal(runs, 2);
});
