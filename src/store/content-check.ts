/**
 * The integrity rule for blob bytes on their way in (DESIGN §2): hashed as they arrive, refused as
 * soon as more than the expected size arrives, and checked for size and digest at the end. One
 * piece for every path that takes blob bytes from an upstream: a fill's writer and a relay.
 */
import type { Hash } from 'node:crypto';
import { newHasher, type Digest } from '../oci/index.ts';

/** Thrown when bytes do not match the expected digest or size. */
export class BlobVerifyError extends Error {
  readonly code = 'ERR_BLOB_VERIFY';
  constructor(message: string) {
    super(message);
    this.name = 'BlobVerifyError';
  }
}

export class ContentCheck {
  private readonly hasher: Hash;
  private seen = 0;

  constructor(
    readonly digest: Digest,
    readonly expectedSize: number | undefined,
  ) {
    this.hasher = newHasher(digest.algorithm);
  }

  /** Bytes taken so far. */
  get bytes(): number {
    return this.seen;
  }

  /** Hashes `chunk`. Throws BlobVerifyError when it takes the bytes past the expected size. */
  add(chunk: Uint8Array): void {
    if (this.expectedSize !== undefined && this.seen + chunk.byteLength > this.expectedSize) {
      throw new BlobVerifyError(`upstream sent more than the expected ${this.expectedSize} bytes for ${this.digest.value}`);
    }
    this.hasher.update(chunk);
    this.seen += chunk.byteLength;
  }

  /** Throws BlobVerifyError unless the bytes taken have the expected size and digest. Call once. */
  check(): void {
    const actual = `${this.digest.algorithm}:${this.hasher.digest('hex')}`;
    if (this.expectedSize !== undefined && this.seen !== this.expectedSize) {
      throw new BlobVerifyError(`size mismatch for ${this.digest.value}: expected ${this.expectedSize} bytes, got ${this.seen}`);
    }
    if (actual !== this.digest.value) throw new BlobVerifyError(`digest mismatch: expected ${this.digest.value}, content hashes to ${actual}`);
  }
}
