/**
 * The bytes of blob uploads in progress (OCI distribution-spec "Pushing blobs": monolithic and
 * chunked, with status and cancel), one file per upload: `<data_dir>/uploads/<id>.data`, on the
 * blob store's filesystem so finishing is a rename. Which repository an upload belongs to and when
 * it last moved are MetaStore records (the Pusher keeps both in step). The bytes survive a restart,
 * so an upload resumes from its size. Finishing hashes the whole file and checks the digest before
 * the blob becomes visible.
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { newHasher, type Digest } from '../oci/index.ts';
import { UploadError } from './errors.ts';
import type { FsBlobStore } from './fs-blob-store.ts';

const ID = /^[a-f0-9]{32}$/;

export class FsUploadStore {
  private readonly dir: string;
  /** One operation at a time per upload (a client may send chunks faster than they are written). */
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly blobs: FsBlobStore) {
    this.dir = join(blobs.dataDir, 'uploads');
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  private path(id: string): string {
    if (!ID.test(id)) throw FsUploadStore.unknown(id);
    return join(this.dir, `${id}.data`);
  }

  /** The error for an upload id that is not (or no longer) there. */
  static unknown(id: string): UploadError {
    return new UploadError('unknown', `upload ${id.slice(0, 40)} is unknown, finished, cancelled or was abandoned; start a new upload with POST .../blobs/uploads/`);
  }

  private async locked<T>(id: string, work: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const next = prev.then(work, work);
    this.locks.set(id, next);
    try {
      return await next;
    } finally {
      if (this.locks.get(id) === next) this.locks.delete(id);
    }
  }

  /** Starts an upload; returns its id. */
  async create(): Promise<string> {
    const id = randomBytes(16).toString('hex');
    await writeFile(this.path(id), Buffer.alloc(0));
    return id;
  }

  /** Bytes received so far. Throws UploadError unknown. */
  async size(id: string): Promise<number> {
    try {
      return (await stat(this.path(id))).size;
    } catch (e) {
      if (e instanceof UploadError) throw e;
      throw FsUploadStore.unknown(id);
    }
  }

  /**
   * Appends a chunk. `start`, when the client sent Content-Range, must equal the current size
   * (else UploadError out_of_order with the size, so the client can resume). Returns the new size.
   */
  append(id: string, body: AsyncIterable<Uint8Array>, start?: number): Promise<number> {
    return this.locked(id, () => this.write(id, body, start));
  }

  /** append() without the lock, for callers that hold it. */
  private async write(id: string, body: AsyncIterable<Uint8Array>, start?: number): Promise<number> {
    const size = await this.size(id);
    if (start !== undefined && start !== size) {
      throw new UploadError('out_of_order', `chunk starts at byte ${start} but the upload has ${size} bytes; resume from ${size}`, { size });
    }
    const fh = await open(this.path(id), 'a');
    let n = size;
    try {
      for await (const chunk of body) {
        let off = 0;
        while (off < chunk.byteLength) off += (await fh.write(chunk, off, chunk.byteLength - off)).bytesWritten;
        n += chunk.byteLength;
      }
    } finally {
      await fh.close();
    }
    return n;
  }

  /**
   * Completes an upload: appends `body` (the last chunk, possibly empty), hashes the file and
   * places it at `digest` when it matches. Throws UploadError digest_mismatch (the upload is kept,
   * so the client may retry with the right digest) or unknown. Returns the blob's size.
   */
  async finish(id: string, digest: Digest, body: AsyncIterable<Uint8Array>): Promise<number> {
    return this.locked(id, async () => {
      // The last chunk and the check under one lock: no other chunk can land in between.
      await this.write(id, body);
      const path = this.path(id);
      const hasher = newHasher(digest.algorithm);
      let size = 0;
      for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
        hasher.update(chunk as Buffer);
        size += (chunk as Buffer).byteLength;
      }
      const actual = `${digest.algorithm}:${hasher.digest('hex')}`;
      if (actual !== digest.value) {
        throw new UploadError('digest_mismatch', `the uploaded ${size} bytes hash to ${actual}, not ${digest.value}; nothing was stored`, { expected: digest.value, actual });
      }
      const fh = await open(path, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await this.blobs.place(path, digest);
      return size;
    });
  }

  /** Removes an upload's bytes (cancelled, abandoned). Removing one that is gone is no error. */
  async remove(id: string): Promise<void> {
    if (!ID.test(id)) return;
    await this.locked(id, () => rm(this.path(id), { force: true }));
  }

  /**
   * Files in the upload area not written to since `before` (ms), whose ids are not in `keep`:
   * bytes without a record (a process killed between the file and the record) and the `<id>.json`
   * records of the layout before upload records moved into the MetaStore. Removes them; returns how many.
   */
  async removeStray(before: number, keep: (id: string) => Promise<boolean>): Promise<number> {
    let removed = 0;
    for (const f of await readdir(this.dir).catch(() => [] as string[])) {
      const m = /^([a-f0-9]{32})\.(data|json)$/.exec(f);
      if (m === null || this.locks.has(m[1] ?? '')) continue;
      const path = join(this.dir, f);
      const mtime = await stat(path).then((s) => s.mtimeMs, () => undefined);
      if (mtime === undefined || mtime >= before) continue;
      if (m[2] === 'data' && (await keep(m[1] ?? ''))) continue;
      await rm(path, { force: true });
      if (m[2] === 'data') removed++;
    }
    return removed;
  }
}
