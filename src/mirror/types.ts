import type { Readable, Writable } from 'node:stream';

import type { CacheResult } from '../events/index.ts';

export type { CacheResult };

/**
 * A manifest ready to send: its exact stored bytes, or for a HEAD answered from metadata alone
 * (not in memory) only its size.
 */
export interface ManifestResult {
  bytes: Buffer | undefined;
  size: number;
  mediaType: string;
  digest: string;
  cache: CacheResult;
}

/** A blob ready to send. `open` may be called once; `size` is undefined only for a miss whose upstream sent no length. */
export interface BlobResult {
  digest: string;
  size: number | undefined;
  cache: CacheResult;
  /** Streams bytes [start, end) (end exclusive; undefined = to the end). */
  open(start?: number, end?: number): Promise<Readable>;
  /**
   * Writes bytes [start, end) to `dest` and ends it (what the server does with a blob), calling
   * `ready` once the bytes can flow (the response head goes out there: a RegistryError thrown
   * before it can still become an error response). Rejects when the transfer fails; the caller
   * then destroys `dest`. Call one of open, sendTo and discard, once.
   */
  sendTo(dest: Writable, ready: () => void, start?: number, end?: number): Promise<void>;
  /**
   * Settles once the blob is verified and durably in the cache (at once for a hit); rejects with the
   * client-facing error when the fill failed, its last step (the rename into place) included.
   */
  stored(): Promise<void>;
  /** Releases resources when the caller decides not to open (HEAD, 416). */
  discard(): void;
}

export interface TagsResult {
  body: Buffer;
  link?: string;
  cache: CacheResult;
}
