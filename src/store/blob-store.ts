/**
 * The BlobStore seam (DESIGN §5): content-addressed bytes, and nothing else. The mirror, the push
 * API, bundles, verification and reconciliation see only these interfaces; `FsBlobStore` (local
 * disk, the embedded default) implements them, and an object-store backend implements the same.
 *
 * Contracts every implementation keeps (test/contract/blob-store.contract.ts checks them):
 * - A blob is visible (stat, open, read, list) only after a writer's commit() checked its size and
 *   digest. A failed check, an abort or a crash leaves nothing visible.
 * - Content never changes under a digest: committing a digest that is already there is success.
 * - "Unknown" is an answer, not an error: stat/open/read return undefined, delete returns false.
 *   Errors thrown are failures of the storage itself (isStorageError tells them apart).
 * - A reader opened before a delete keeps reading the bytes it opened.
 * How bytes are staged (direct I/O, memory blocks, pacing) is the implementation's business.
 */
import type { Readable, Writable } from 'node:stream';
import type { Digest } from '../oci/index.ts';

/** A committed blob opened for reading. Close it when done (sendTo and stream close it themselves). */
export interface BlobReader {
  readonly size: number;
  /**
   * Reads up to `len` bytes at blob offset `pos` into `buf` at `off`; returns how many (0 at the end).
   * Throws on a storage failure.
   */
  read(buf: Buffer, off: number, len: number, pos: number): Promise<number>;
  /** A stream of bytes [start, end) (end exclusive). Closes the reader when it ends or is destroyed. */
  stream(start: number, end: number): Readable;
  /**
   * Writes bytes [start, end) to `dest` and ends it, with backpressure, then closes the reader.
   * Rejects when `dest` closes early or the storage fails.
   */
  sendTo(dest: Writable, start: number, end: number): Promise<void>;
  /** Releases the reader. Safe to call more than once. */
  close(): Promise<void>;
}

/**
 * A blob being written: bytes are hashed as they arrive and become visible under `digest` only on
 * commit(). Readers may follow the write with readAt() (a fill streamed to clients while cached).
 * Every writer ends with close(), after commit() or abort().
 */
export interface BlobWriter {
  readonly digest: Digest;
  /** Bytes accepted (hashed and counted) so far. */
  readonly bytesWritten: number;
  /** Set by whoever follows the write: called whenever more bytes became readable through readAt. */
  onProgress: (() => void) | undefined;
  /** Appends a chunk. Throws BlobVerifyError as soon as more than the expected size arrives. */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Checks size and digest of what was written; nothing is visible yet. Throws BlobVerifyError
   * (and discards the bytes) when they are wrong. After it, readers may be given the last byte.
   */
  verify(): Promise<void>;
  /**
   * verify() when not done yet, then makes the blob durable and visible under its digest.
   * Throws BlobVerifyError (nothing visible) or a storage error.
   */
  commit(): Promise<void>;
  /** Discards what was written; nothing becomes visible. Safe to call more than once, and after commit (no-op). */
  abort(): Promise<void>;
  /**
   * Copies up to `len` written bytes at `pos` into `buf` at `off`; returns how many, 0 when they
   * are not readable yet (wait for onProgress). `pos + len` must be within bytesWritten.
   */
  readAt(pos: number, buf: Buffer, off: number, len: number): Promise<number>;
  /**
   * Releases the writer's memory and handles, once nobody reads through it. Safe to call more than
   * once. A verified writer may be closed before commit() (bundles stage every blob first); readAt
   * and write are then no longer possible.
   */
  close(): Promise<void>;
}

export interface BlobStore {
  /** Size of a committed blob; undefined when the store does not have it. */
  stat(d: Digest): Promise<number | undefined>;
  /** When a committed blob was written (ms); undefined when the store does not have it. */
  modifiedAt(d: Digest): Promise<number | undefined>;
  /**
   * Whether the store has committed blob `d`: the cheapest question a store can answer
   * (reconciliation asks it for every row). Throws only when the store itself fails.
   */
  has(d: Digest): Promise<boolean>;
  /** Opens a committed blob; undefined when the store does not have it. */
  open(d: Digest): Promise<BlobReader | undefined>;
  /** A whole committed blob in memory (manifests, small configs); undefined when unknown. */
  read(d: Digest): Promise<Buffer | undefined>;
  /**
   * Starts writing blob `d`; `expectedSize` (when known) is checked as bytes arrive and at commit.
   * The caller must commit() or abort(), then close() the writer.
   */
  begin(d: Digest, expectedSize?: number): Promise<BlobWriter>;
  /** Writes a whole blob held in memory, verified. Throws BlobVerifyError when `bytes` do not hash to `d`. */
  put(d: Digest, bytes: Uint8Array): Promise<void>;
  /** Deletes a committed blob; false when it was not there. Open readers keep their bytes. */
  delete(d: Digest): Promise<boolean>;
  /**
   * Moves a committed blob aside (corrupt content kept for a person to look at): it is no longer
   * visible under its digest. Returns where it went; undefined when it was not there.
   */
  quarantine(d: Digest): Promise<string | undefined>;
  /**
   * The digest of every committed blob, in no particular order, in pages as the store reads them
   * (a directory, an object listing page), for reconciliation and garbage collection. Sizes are not
   * listed: on a filesystem that is one stat per blob, and callers need it only for the few blobs
   * they do not already know (stat them).
   */
  list(): AsyncIterable<string[]>;
  /** Bytes the store can still take (free disk space); undefined when it cannot tell (object storage). */
  freeBytes(): Promise<number | undefined>;
  /**
   * Checks that the store can take a new blob now (readiness): writes and removes a small
   * temporary object. Resolves when it could; throws the cause (read-only or full filesystem,
   * permissions, an unreachable bucket) when it could not. Never touches committed blobs.
   */
  probe(): Promise<void>;
  /** Ends this process's use of the store: its unfinished temporary data is removed. */
  close(): Promise<void>;
}
