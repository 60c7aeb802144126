/**
 * Blob uploads in progress (OCI distribution-spec "Pushing blobs": monolithic and chunked, with
 * status and cancel). Each upload is two files under `<data_dir>/uploads/`: `<id>.data` (the bytes
 * so far, on the blob store's filesystem so finishing is a rename) and `<id>.json` (the repository
 * it belongs to). State lives on disk, so an upload survives a restart and resumes from its size.
 * Finishing hashes the whole file and checks the digest before the blob becomes visible.
 * Uploads untouched for `abandon_after` are removed by `sweep`.
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { RegistryError, newHasher, type Digest } from '../oci/index.ts';
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

  private paths(id: string): { data: string; info: string } {
    return { data: join(this.dir, `${id}.data`), info: join(this.dir, `${id}.json`) };
  }

  private unknown(id: string): RegistryError {
    return new RegistryError('BLOB_UPLOAD_UNKNOWN', `upload ${id.slice(0, 40)} is unknown, finished, cancelled or was abandoned; start a new upload with POST .../blobs/uploads/`);
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

  /** Starts an upload for `repo`; returns its id. */
  async create(repo: string): Promise<string> {
    const id = randomBytes(16).toString('hex');
    const p = this.paths(id);
    await writeFile(p.data, Buffer.alloc(0));
    await writeFile(p.info, JSON.stringify({ repo, created: Date.now() }));
    return id;
  }

  /** Size so far of an upload of `repo`. Throws BLOB_UPLOAD_UNKNOWN. */
  async size(id: string, repo: string): Promise<number> {
    if (!ID.test(id)) throw this.unknown(id);
    const p = this.paths(id);
    let info: { repo?: unknown };
    try {
      info = JSON.parse(await readFile(p.info, 'utf8')) as { repo?: unknown };
      if (info.repo !== repo) throw this.unknown(id);
      return (await stat(p.data)).size;
    } catch (e) {
      if (e instanceof RegistryError) throw e;
      throw this.unknown(id);
    }
  }

  /**
   * Appends a chunk. `start`, when the client sent Content-Range, must equal the current size
   * (else RANGE_INVALID with the size, so the client can resume). Returns the new size.
   */
  append(id: string, repo: string, body: AsyncIterable<Uint8Array>, start?: number): Promise<number> {
    return this.locked(id, () => this.write(id, repo, body, start));
  }

  /** append() without the lock, for callers that hold it. */
  private async write(id: string, repo: string, body: AsyncIterable<Uint8Array>, start?: number): Promise<number> {
    const size = await this.size(id, repo);
    if (start !== undefined && start !== size) {
      throw new RegistryError('RANGE_INVALID', `chunk starts at byte ${start} but the upload has ${size} bytes; resume from ${size}`, {
        headers: { Range: `0-${Math.max(size - 1, 0)}` },
      });
    }
    const fh = await open(this.paths(id).data, 'a');
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
   * places it at `digest` when it matches. Throws DIGEST_INVALID (the upload is kept, so the
   * client may retry with the right digest) or BLOB_UPLOAD_UNKNOWN. Returns the blob's size.
   */
  async finish(id: string, repo: string, digest: Digest, body: AsyncIterable<Uint8Array>): Promise<number> {
    return this.locked(id, async () => {
      // The last chunk and the check under one lock: no other chunk can land in between.
      await this.write(id, repo, body);
      const p = this.paths(id);
      const hasher = newHasher(digest.algorithm);
      let size = 0;
      for await (const chunk of createReadStream(p.data, { highWaterMark: 1024 * 1024 })) {
        hasher.update(chunk as Buffer);
        size += (chunk as Buffer).byteLength;
      }
      const actual = `${digest.algorithm}:${hasher.digest('hex')}`;
      if (actual !== digest.value) {
        throw new RegistryError('DIGEST_INVALID', `the uploaded ${size} bytes hash to ${actual}, not ${digest.value}; nothing was stored`, { detail: { expected: digest.value, actual } });
      }
      const fh = await open(p.data, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await this.blobs.place(p.data, digest);
      await rm(p.info, { force: true });
      return size;
    });
  }

  /** Cancels an upload of `repo`. Throws BLOB_UPLOAD_UNKNOWN. */
  async cancel(id: string, repo: string): Promise<void> {
    await this.locked(id, async () => {
      await this.size(id, repo);
      const p = this.paths(id);
      await rm(p.data, { force: true });
      await rm(p.info, { force: true });
    });
  }

  /** Removes uploads not written to for `olderThanMs`; returns how many. */
  async sweep(olderThanMs: number, now = Date.now()): Promise<number> {
    let removed = 0;
    const ids = new Set<string>();
    for (const f of await readdir(this.dir)) {
      const m = /^([a-f0-9]{32})\.(data|json)$/.exec(f);
      if (m !== null) ids.add(m[1] ?? '');
    }
    for (const id of ids) {
      const p = this.paths(id);
      const last = Math.max(await stat(p.data).then((s) => s.mtimeMs, () => 0), await stat(p.info).then((s) => s.mtimeMs, () => 0));
      if (now - last < olderThanMs || this.locks.has(id)) continue;
      await rm(p.data, { force: true });
      await rm(p.info, { force: true });
      removed++;
    }
    return removed;
  }
}
