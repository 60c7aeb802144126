/**
 * FsBlobStore: content-addressed blobs on the local filesystem (DESIGN §5).
 * Write path: temp file on the same filesystem, hash while writing, check size and digest,
 * fsync, rename, fsync the folder. An existing target means the content is already there.
 * Bytes are staged in 1 MiB blocks that readers of a fill can copy from, and written a block at a
 * time, with direct I/O where the filesystem takes it (staging.ts).
 */
import { open, mkdir, readdir, rename, rm, stat, statfs, readFile, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { RegistryError, type Digest } from '../oci/index.ts';
import { blobPath, blobsRoot, newTempPath, processTmpDir, tmpDir } from './paths.ts';
import { ownerAlive, ownerToken } from './owner.ts';

import { StagedFile, probeDirectIo, writeAll } from './staging.ts';
import { ContentCheck } from './content-check.ts';

/** A loose file in tmp/ (the layout before per-process folders) is a leftover once this old. */
const LEGACY_TEMP_AGE_MS = 60 * 60_000;

/** An open, committed blob ready to be read. The caller closes `handle`. */
export interface OpenBlob {
  handle: FileHandle;
  size: number;
}

/** A blob being written; bytes are hashed as they are written, visible only after commit. */
export class BlobWriter {
  private readonly content: ContentCheck;
  /** Bytes accepted and handed to the file or the staging blocks (readers follow this count). */
  private written = 0;
  private finished = false;
  private verified = false;
  /** Called whenever more bytes can be read from the file (set by whoever follows the write). */
  onFileGrow: (() => void) | undefined;

  constructor(
    private readonly store: FsBlobStore,
    readonly digest: Digest,
    readonly tempPath: string,
    /** Opened read-write, so readers can follow the fill with positional reads. */
    readonly handle: FileHandle,
    readonly expectedSize: number | undefined,
    /** Staging blocks for the same file; undefined (none free): each chunk is written as it comes. */
    private readonly staged?: StagedFile,
  ) {
    this.content = new ContentCheck(digest, expectedSize);
  }

  /** Bytes accepted (hashed and counted) so far. */
  get bytesWritten(): number {
    return this.written;
  }

  /** Bytes readable from the file through `handle`: when staged, the last few MiB may be in memory only. */
  get bytesInFile(): number {
    return this.staged === undefined ? this.written : this.staged.bytesInFile;
  }

  /**
   * Copies up to `len` accepted bytes at `pos` from the staging memory into `dst` at `dstOff`;
   * returns how many (0: read them from the file, or they are not there yet).
   */
  copyRecent(pos: number, dst: Buffer, dstOff: number, len: number): number {
    return this.staged === undefined ? 0 : this.staged.copyOut(pos, dst, dstOff, len);
  }

  /** Appends a chunk. Throws BlobVerifyError as soon as more than the expected size arrives. */
  async write(chunk: Uint8Array): Promise<void> {
    this.content.add(chunk);
    if (this.staged !== undefined) await this.staged.append(chunk);
    else await writeAll(this.handle, chunk, chunk.byteLength, this.written);
    this.written += chunk.byteLength;
  }

  /**
   * Checks size and digest of what was written. Throws BlobVerifyError (temp file removed) when the
   * content is wrong. After it succeeds the bytes may be handed out; persist() makes them durable.
   */
  async verify(): Promise<void> {
    if (this.finished) throw new Error('BlobWriter already finished');
    this.finished = true;
    if (this.staged !== undefined) {
      await this.staged.finish();
      if (this.staged.direct) await this.handle.truncate(this.written); // drops the last block's padding
    }
    try {
      this.content.check();
    } catch (e) {
      await rm(this.tempPath, { force: true });
      throw e;
    }
    this.verified = true;
  }

  /** fsyncs the verified file and renames it to its content address. Does not close `handle`. */
  async persist(): Promise<void> {
    if (!this.verified) throw new Error('BlobWriter.persist before verify');
    await this.handle.sync();
    await this.store.place(this.tempPath, this.digest);
  }

  /** verify(), persist() and releaseMemory(). Throws BlobVerifyError when the content is wrong. */
  async commit(): Promise<void> {
    await this.verify();
    await this.persist();
    await this.releaseMemory();
  }

  /**
   * Returns the staging blocks to the pool (after verify(): the file then has every byte).
   * Readers copying from memory go to the file from here on. commit() and abort() call it; the
   * owner of a writer that stops after verify() or persist() must.
   */
  async releaseMemory(): Promise<void> {
    await this.staged?.release();
  }

  /** Discards the temp file. Does not close `handle`. Safe to call more than once. */
  async abort(): Promise<void> {
    this.finished = true;
    await this.releaseMemory().catch(() => undefined);
    await rm(this.tempPath, { force: true });
  }
}

/** Content-addressed blob store on disk. */
export class FsBlobStore {
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

  /** Removes this process's temp folder (at exit; what is left in it is unfinished work). */
  async removeOwnTemp(): Promise<void> {
    if (this.tmp !== '') await rm(this.tmp, { force: true, recursive: true });
  }

  /** Bytes an unprivileged writer may still put on the cache's filesystem (statfs). */
  async freeBytes(): Promise<number> {
    const st = await statfs(this.dataDir);
    return st.bavail * st.bsize;
  }

  /** Size of a committed blob, or undefined when it is not in the store. */
  async stat(d: Digest): Promise<number | undefined> {
    try {
      return (await stat(blobPath(this.dataDir, d))).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  /** Opens a committed blob for reading, or undefined when it is not in the store. */
  async open(d: Digest): Promise<OpenBlob | undefined> {
    let handle: FileHandle;
    try {
      handle = await open(blobPath(this.dataDir, d), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    try {
      return { handle, size: (await handle.stat()).size };
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  /** Reads a whole committed blob (manifests), or undefined when absent. */
  async read(d: Digest): Promise<Buffer | undefined> {
    try {
      return await readFile(blobPath(this.dataDir, d));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  /** Starts writing a blob. The caller must commit() or abort(), then close the writer's handle. */
  async createWriter(d: Digest, expectedSize?: number): Promise<BlobWriter> {
    if (this.tmp === '') throw new Error('FsBlobStore.createWriter before init()');
    const path = newTempPath(this.tmp);
    const handle = await open(path, 'w+', 0o644);
    let staged: StagedFile | undefined;
    try {
      staged = await StagedFile.open(path, handle, this.directIo, () => writer.onFileGrow?.());
    } catch (e) {
      await handle.close();
      await rm(path, { force: true });
      throw e;
    }
    const writer = new BlobWriter(this, d, path, handle, expectedSize, staged);
    return writer;
  }

  /** Writes a whole blob held in memory, verifying its digest. Throws BlobVerifyError on mismatch. */
  async writeBytes(d: Digest, bytes: Uint8Array): Promise<void> {
    const w = await this.createWriter(d, bytes.byteLength);
    try {
      await w.write(bytes);
      await w.commit();
    } catch (e) {
      await w.abort();
      throw e;
    } finally {
      await w.handle.close();
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

/** Maps a storage failure to an OCI error for the client, without leaking paths. */
export function storageUnavailable(cause: unknown): RegistryError {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  return new RegistryError('UNAVAILABLE', `the mirror could not read or write its cache${typeof code === 'string' && /^E[A-Z]+$/.test(code) ? ` (${code})` : ''}; see the mirror log`, { cause });
}
