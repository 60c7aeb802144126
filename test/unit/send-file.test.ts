import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { SEND_CHUNK, sendFileRange } from '../../src/store/index.ts';

/** A writable that copies what it gets (the sender reuses its buffers) and acknowledges each write on a later tick. */
function sink(opts: { failAfter?: number } = {}): Writable & { bytes: () => Buffer } {
  const got: Buffer[] = [];
  const w = new Writable({
    highWaterMark: 16 * 1024,
    write(chunk: Buffer, _enc, cb) {
      got.push(Buffer.from(chunk));
      if (opts.failAfter !== undefined && got.length >= opts.failAfter) {
        setImmediate(() => w.destroy());
        return;
      }
      setImmediate(cb);
    },
  });
  return Object.assign(w, { bytes: () => Buffer.concat(got) });
}

const dir = mkdtempSync(join(tmpdir(), 'send-file-'));
const file = join(dir, 'blob');
const content = Buffer.alloc(SEND_CHUNK * 3 + 12345);
for (let i = 0; i < content.length; i++) content[i] = (i * 31 + (i >> 11)) & 0xff;
writeFileSync(file, content);
test.after(() => rmSync(dir, { recursive: true, force: true }));

test('sends the whole file and ranges of it byte for byte through reused buffers, then ends', async () => {
  for (const [start, end] of [[0, content.length], [1, 2], [SEND_CHUNK - 1, 2 * SEND_CHUNK + 7], [content.length - 5, content.length]] as const) {
    const h = await open(file);
    const out = sink();
    await sendFileRange(h, out, start, end);
    await h.close();
    assert.equal(out.writableFinished, true);
    assert.ok(out.bytes().equals(content.subarray(start, end)), `range ${start}-${end}`);
  }
});

test('a file shorter than the range rejects instead of ending the response', async () => {
  const h = await open(file);
  const out = sink();
  await assert.rejects(sendFileRange(h, out, 0, content.length + 100), /ended at byte/);
  await h.close();
  assert.equal(out.writableEnded, false);
});

test('a destination that closes early rejects with a premature close', async () => {
  const h = await open(file);
  const out = sink({ failAfter: 2 });
  await assert.rejects(sendFileRange(h, out, 0, content.length), (e: NodeJS.ErrnoException) => e.code === 'ERR_STREAM_PREMATURE_CLOSE' || /destroyed/.test(e.message));
  await h.close();
});
