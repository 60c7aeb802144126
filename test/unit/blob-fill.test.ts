import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
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
  const writer = await store.begin(d, content.length);
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
    const chunk = content.subarray(off, off + 65536);
    await writer.write(chunk);
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

test('readers that keep up are served from the writer\'s memory, readers that fall behind from the file', async () => {
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
    fill.progress();
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
    fill.progress();
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
  const wrong = Buffer.alloc(300_000, 4);
  await writer.write(wrong);
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
  const wrong = Buffer.from('0123456780');
  await writer.write(wrong);
  fill.progress();
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(Buffer.concat(got).length, 9, 'last byte withheld while unverified');
  await assert.rejects(writer.commit(), BlobVerifyError);
  fill.fail(new BlobVerifyError('digest mismatch'));
  assert.match((await errored).message, /digest mismatch/);
  assert.equal(existsSync(blobPath(store.dataDir, d)), false, 'nothing committed');
  assert.deepEqual(readdirSync(store.tempDir), [], 'temp file removed');
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
  await writer.commit();
  fill.commit();
  assert.equal(await store.stat(d), content.length);
});

test('a short body fails verification on size', async () => {
  const content = Buffer.from('abcdef');
  const { writer } = await setup(content);
  await writer.write(Buffer.from('abc'));
  await assert.rejects(writer.commit(), /size mismatch/);
});

test("the store removes the temp files of processes that exited, never a live process's", async () => {
  const { store, writer } = await setup(Buffer.from('x'));
  await writer.write(Buffer.from('x'));
  assert.equal(readdirSync(store.tempDir).length, 1);
  // A folder of a process that is gone (no such pid), and one of a live process whose pid was reused.
  const root = join(store.dataDir, 'tmp');
  mkdirSync(join(root, 'p999999999-1'));
  writeFileSync(join(root, 'p999999999-1', 'a.partial'), 'left');
  mkdirSync(join(root, `p${process.pid}-1`));
  const other = new FsBlobStore(store.dataDir);
  assert.equal(await other.init(), 2, 'the dead folder and the one of a reused pid');
  assert.deepEqual(readdirSync(root).sort(), [basename(store.tempDir)], 'this live process keeps its folder');
  assert.equal(readdirSync(store.tempDir).length, 1, 'and the file being written');
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

/** A destination that counts what it got and acknowledges each write after `ackMs` (never: stalled). */
function countingSink(ackMs: number | 'never'): Writable & { received: number } {
  const w = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _enc, cb) {
      sink.received += chunk.byteLength;
      if (ackMs !== 'never') setTimeout(cb, ackMs);
    },
  });
  const sink = Object.assign(w, { received: 0 });
  return sink;
}

async function* chunks(content: Buffer, size: number, seen?: () => void): AsyncGenerator<Buffer> {
  for (let off = 0; off < content.length; off += size) {
    seen?.();
    yield Buffer.from(content.subarray(off, off + size));
  }
}

test('the download is paced to its fastest reader, who is then always served from memory', async () => {
  const content = Buffer.alloc(12 * 1024 * 1024);
  for (let i = 0; i < content.length; i++) content[i] = (i * 7 + (i >> 16)) & 0xff;
  const { writer, fill } = await setup(content);
  const slow = countingSink(2);
  fill.acquire();
  const sent = fill.sendTo(slow);
  let maxLead = 0;
  let fromFile = 0;
  const read = writer.readFileAt.bind(writer);
  writer.readFileAt = async (b, o, l, p) => {
    const n = await read(b, o, l, p);
    fromFile += n;
    return n;
  };
  await fill.download(chunks(content, 65536, () => (maxLead = Math.max(maxLead, fill.written - slow.received))));
  await writer.commit();
  fill.commit();
  await sent;
  assert.equal(slow.received, content.length);
  // Two MiB ahead at most, plus the chunk the reader is sending and the one it copied next.
  assert.ok(maxLead <= 2 * 1024 * 1024 + 2 * 256 * 1024 + 65536, `download ran ${maxLead} bytes ahead of its reader`);
  // Only what it had not sent when the fill committed (and its memory went back to the pool).
  assert.ok(fromFile <= 2 * 1024 * 1024 + 2 * 256 * 1024 + 65536, `${fromFile} bytes read back from the file`);
});

test('a stalled reader stops pacing: the download finishes without it', async () => {
  const content = Buffer.alloc(8 * 1024 * 1024, 5);
  const { writer, fill } = await setup(content);
  const stalled = countingSink('never');
  fill.acquire();
  const sent = fill.sendTo(stalled).catch((e: Error) => e);
  const t = performance.now();
  await fill.download(chunks(content, 65536));
  assert.ok(performance.now() - t < 5_000, 'not held back by the stalled client');
  assert.ok(stalled.received < content.length);
  await writer.commit();
  fill.commit();
  stalled.destroy();
  assert.match(String(await sent), /closed the connection/);
});
