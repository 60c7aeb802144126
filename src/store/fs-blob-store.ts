/**
 * FsBlobStore: content-addressed blobs on the local filesystem (DESIGN §5).
 * Write path: temp file on the same filesystem, hash while writing, check size and digest,
 * fsync, rename, fsync the folder. An existing target means the content is already there.
 * Bytes are staged in 1 MiB blocks that readers of a fill can copy from, and written a block at a
 * time, with direct I/O where the filesystem takes it (staging.ts).
 */
import { existsSync, type Stats } from 'node:fs';
import { open, mkdir, readdir, rename, rm, stat, statfs, readFile, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { parseDigest, type Digest } from '../oci/index.ts';
import type { BlobReader, BlobStore, BlobWriter } from './blob-store.ts';

const SHA256_HEX = /^[0-9a-f]{64}$/;
const SHA512_HEX = /^[0-9a-f]{128}$/;
import { SEND_CHUNK, sendFileRange } from './send-file.ts';
import { blobPath, blobsRoot, newTempPath, processTmpDir, quarantinePath, tmpDir } from './paths.ts';
import { ownerAlive, ownerToken } from './owner.ts';

import { StagedFile, probeDirectIo, writeAll } from './staging.ts';
import { ContentCheck } from './content-check.ts';

/** A loose file in tmp/ (the layout before per-process folders) is a leftover once this old. */
const LEGACY_TEMP_AGE_MS = 60 * 60_000;

/** A committed blob file opened for reading. */
class FsBlobReader implements BlobReader {
  private closed = false;

  constructor(
    private readonly handle: FileHandle,
    readonly size: number,
  ) {}

  async read(buf: Buffer, off: number, len: number, pos: number): Promise<number> {
    return (await this.handle.read(buf, off, len, pos)).bytesRead;
  }

  stream(start: number, end: number): Readable {
    if (end <= start) {
      void this.close();
      return Readable.from([]);
    }
    this.closed = true; // the stream closes the handle (autoClose)
    return this.handle.createReadStream({ start, end: end - 1, highWaterMark: SEND_CHUNK, autoClose: true });
  }

  async sendTo(dest: Writable, start: number, end: number): Promise<void> {
    try {
      await sendFileRange(this.handle, dest, start, end);
    } finally {
      await this.close();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close().catch(() => undefined);
  }
}

/**
 * A blob being written to a temp file in this process's temp folder; hashed as written, renamed to
 * its content address on commit. The newest few MiB sit in staging blocks (staging.ts) that
 * readers of a fill copy from; older bytes are read back from the file.
 */
export class FsBlobWriter implements BlobWriter {
  private readonly content: ContentCheck;
  /** Bytes accepted and handed to the file or the staging blocks (readers follow this count). */
  private written = 0;
  private verified = false;
  private committed = false;
  private aborted = false;
  /** Open read-write until close(), so readers can follow the fill with positional reads. */
  private handle: FileHandle | undefined;
  onProgress: (() => void) | undefined;

  constructor(
    private readonly store: FsBlobStore,
    readonly digest: Digest,
    private readonly tempPath: string,
    handle: FileHandle,
    expectedSize: number | undefined,
    /** Staging blocks for the same file; undefined (none free): each chunk is written as it comes. */
    private readonly staged?: StagedFile,
  ) {
    this.handle = handle;
    this.content = new ContentCheck(digest, expectedSize);
  }

  get bytesWritten(): number {
    return this.written;
  }

  /** Bytes readable from the file: when staged, the last few MiB may be in memory only. */
  get bytesInFile(): number {
    return this.staged === undefined ? this.written : this.staged.bytesInFile;
  }

  /** Copies up to `len` accepted bytes at `pos` from the staging memory; 0: not there (read the file). */
  copyRecent(pos: number, dst: Buffer, dstOff: number, len: number): number {
    return this.staged === undefined ? 0 : this.staged.copyOut(pos, dst, dstOff, len);
  }

  /** Positional read of the temp file itself (bytes below bytesInFile). */
  async readFileAt(buf: Buffer, off: number, len: number, pos: number): Promise<number> {
    return (await this.open().read(buf, off, len, pos)).bytesRead;
  }

  /** Called by staging whenever more bytes reached the file. */
  fileGrew(): void {
    this.onProgress?.();
  }

  private open(): FileHandle {
    if (this.handle === undefined) throw new Error('FsBlobWriter used after close()');
    return this.handle;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.verified || this.aborted) throw new Error('FsBlobWriter.write after verify or abort');
    this.content.add(chunk);
    if (this.staged !== undefined) await this.staged.append(chunk);
    else await writeAll(this.open(), chunk, chunk.byteLength, this.written);
    this.written += chunk.byteLength;
  }

  async verify(): Promise<void> {
    if (this.verified) return;
    if (this.aborted) throw new Error('FsBlobWriter.verify after abort');
    if (this.staged !== undefined) {
      await this.staged.finish();
      if (this.staged.direct) await this.open().truncate(this.written); // drops the last block's padding
    }
    try {
      this.content.check();
    } catch (e) {
      await this.abort();
      throw e;
    }
    this.verified = true;
  }

  async commit(): Promise<void> {
    if (this.committed) return;
    await this.verify();
    // A writer closed after verify (bundles stage every blob before committing any) syncs through a fresh handle.
    const h = this.handle ?? (await open(this.tempPath, 'r'));
    try {
      await h.sync();
    } finally {
      if (h !== this.handle) await h.close();
    }
    await this.store.place(this.tempPath, this.digest);
    this.committed = true;
    await this.staged?.release();
  }

  async abort(): Promise<void> {
    if (this.committed || this.aborted) return;
    this.aborted = true;
    await this.staged?.release().catch(() => undefined);
    await rm(this.tempPath, { force: true });
  }

  async readAt(pos: number, buf: Buffer, off: number, len: number): Promise<number> {
    const n = this.copyRecent(pos, buf, off, len);
    if (n > 0) return n;
    const inFile = this.bytesInFile;
    if (pos >= inFile) return 0;
    const bytesRead = await this.readFileAt(buf, off, Math.min(len, inFile - pos), pos);
    if (bytesRead === 0) throw new Error(`blob file ended at byte ${pos}`);
    return bytesRead;
  }

  async close(): Promise<void> {
    const h = this.handle;
    if (h === undefined) return;
    this.handle = undefined;
    await this.staged?.release().catch(() => undefined);
    await h.close().catch(() => undefined);
  }
}

/** Content-addressed blob store on disk (the layout is drawn in paths.ts). */
export class FsBlobStore implements BlobStore {
  /** Whether writers use direct I/O; settled by init(). */
  directIo = false;
  /** Why direct I/O is off though it was asked for (the filesystem refused it), for the log. */
  directIoRefused: string | undefined;

  constructor(
    readonly dataDir: string,
    /** Ask for direct I/O (config cache.direct_io); init() checks that the filesystem takes it. */
    private readonly wantDirectIo = true,
  ) {}

  /** This process's own folder for temporary files (owner.ts); set by init(). */
  private tmp = '';

  /** This process's own temp folder (fills in progress); '' before init(). */
  get tempDir(): string {
    return this.tmp;
  }

  /**
   * Creates the folders, this process's own temp folder among them, and with `removeLeftovers`
   * removes temporary files no live process owns: the folders of processes that have exited, and
   * loose files of the older flat layout that have not changed for LEGACY_TEMP_AGE_MS. Every command
   * may pass true: a live process's folder is never touched. Returns how many entries were removed.
   */
  async init(removeLeftovers = true): Promise<number> {
    await mkdir(blobsRoot(this.dataDir), { recursive: true });
    this.tmp = processTmpDir(this.dataDir, ownerToken());
    await mkdir(this.tmp, { recursive: true });
    if (this.wantDirectIo) {
      const probe = await probeDirectIo(this.tmp);
      this.directIo = probe.ok;
      this.directIoRefused = probe.ok ? undefined : probe.reason;
    }
    if (!removeLeftovers) return 0;
    const root = tmpDir(this.dataDir);
    let removed = 0;
    for (const entry of await readdir(root, { withFileTypes: true })) {
      const path = `${root}/${entry.name}`;
      if (entry.isDirectory()) {
        if (ownerAlive(entry.name)) continue;
      } else {
        const age = await stat(path).then((st) => Date.now() - st.mtimeMs, () => 0);
        if (age < LEGACY_TEMP_AGE_MS) continue;
      }
      await rm(path, { force: true, recursive: true });
      removed++;
    }
    return removed;
  }

  /** Removes this process's temp folder (what is left in it is unfinished work). */
  async close(): Promise<void> {
    if (this.tmp !== '') await rm(this.tmp, { force: true, recursive: true });
  }

  /** A write, a sync and a removal in this process's temp folder (the folder itself is made again if gone). */
  async probe(): Promise<void> {
    if (this.tmp === '') throw new Error('the blob store was not initialised (init)');
    await mkdir(this.tmp, { recursive: true });
    const path = `${this.tmp}/ready-probe`;
    const fh = await open(path, 'w');
    try {
      await fh.write('ready');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rm(path, { force: true });
  }

  /** Bytes an unprivileged writer may still put on the cache's filesystem (statfs). */
  async freeBytes(): Promise<number> {
    const st = await statfs(this.dataDir);
    return st.bavail * st.bsize;
  }

  async stat(d: Digest): Promise<number | undefined> {
    return (await this.statOf(d))?.size;
  }

  /** The committed file's stats; undefined when there is none. */
  private async statOf(d: Digest): Promise<Stats | undefined> {
    try {
      return await stat(blobPath(this.dataDir, d));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  /**
   * A synchronous existence check (one stat syscall, ~2 µs on a local disk): reconciliation asks
   * it for every row, and a promise-based stat per row cost 2 s of CPU for 100k blobs.
   */
  async has(d: Digest): Promise<boolean> {
    return existsSync(blobPath(this.dataDir, d));
  }

  async open(d: Digest): Promise<BlobReader | undefined> {
    let handle: FileHandle;
    try {
      handle = await open(blobPath(this.dataDir, d), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    try {
      return new FsBlobReader(handle, (await handle.stat()).size);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  async read(d: Digest): Promise<Buffer | undefined> {
    try {
      return await readFile(blobPath(this.dataDir, d));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async begin(d: Digest, expectedSize?: number): Promise<FsBlobWriter> {
    if (this.tmp === '') throw new Error('FsBlobStore.begin before init()');
    const path = newTempPath(this.tmp);
    const handle = await open(path, 'w+', 0o644);
    let staged: StagedFile | undefined;
    try {
      staged = await StagedFile.open(path, handle, this.directIo, () => writer.fileGrew());
    } catch (e) {
      await handle.close();
      await rm(path, { force: true });
      throw e;
    }
    const writer = new FsBlobWriter(this, d, path, handle, expectedSize, staged);
    return writer;
  }

  async put(d: Digest, bytes: Uint8Array): Promise<void> {
    const w = await this.begin(d, bytes.byteLength);
    try {
      await w.write(bytes);
      await w.commit();
    } catch (e) {
      await w.abort();
      throw e;
    } finally {
      await w.close();
    }
  }

  async delete(d: Digest): Promise<boolean> {
    try {
      await unlink(blobPath(this.dataDir, d));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
  }

  async modifiedAt(d: Digest): Promise<number | undefined> {
    return (await this.statOf(d))?.mtimeMs;
  }

  async quarantine(d: Digest): Promise<string | undefined> {
    const target = quarantinePath(this.dataDir, d, Date.now());
    await mkdir(dirname(target), { recursive: true });
    try {
      await rename(blobPath(this.dataDir, d), target);
      return target;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  /**
   * Every committed blob, read folder by folder (a readdir per 2-hex prefix), yielding to the event
   * loop between folders so a large cache never blocks requests. Files whose names are not digests
   * are skipped.
   */
  async *list(): AsyncIterable<string[]> {
    const root = blobsRoot(this.dataDir);
    for (const algorithm of ['sha256', 'sha512']) {
      const prefixes = await readdir(join(root, algorithm)).catch(() => [] as string[]);
      for (const prefix of prefixes) {
        const names = await readdir(join(root, algorithm, prefix)).catch(() => [] as string[]);
        const page: string[] = [];
        // Content files are named by their canonical hex; anything else (a stray file) is not listed.
        const hex = algorithm === 'sha256' ? SHA256_HEX : SHA512_HEX;
        for (const name of names) if (hex.test(name)) page.push(`${algorithm}:${name}`);
        if (page.length > 0) yield page;
      }
    }
  }

  /** Moves a verified temp file to its content address and makes the rename durable. */
  async place(tempPath: string, d: Digest): Promise<void> {
    const target = blobPath(this.dataDir, d);
    const dir = dirname(target);
    await mkdir(dir, { recursive: true });
    await rename(tempPath, target);
    const dh = await open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  }
}

/**
 * True for a failure of the cache's own storage (disk full, read-only, I/O error, a file gone),
 * as opposed to the upstream's: file-system calls, never socket reads.
 */
export function isStorageError(e: unknown): boolean {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ENOSPC' || err?.code === 'EDQUOT' || err?.code === 'EROFS') return true;
  return typeof err?.syscall === 'string' && ['open', 'write', 'rename', 'fsync', 'fdatasync', 'ftruncate', 'mkdir', 'close', 'unlink'].includes(err.syscall);
}
