/**
 * The answers the blob side of the mirror gives (BlobResult, types.ts): a cache hit read from the
 * BlobStore, a miss following the one fill of its digest, a HEAD of a miss answered from the
 * upstream's size, and a relay of a blob the cache disk cannot take (blob-relay.ts). Each is an
 * object with methods; each tells the event stream what it served.
 */
import type { Readable, Writable } from 'node:stream';
import type { BlobReader } from '../store/index.ts';
import type { EventStream } from '../events/index.ts';
import type { Route } from '../routing/index.ts';
import type { RegistryError } from '../oci/index.ts';
import type { BlobFill } from './blob-fill.ts';
import type { BlobResult, CacheResult } from './types.ts';

/** Emits blobServed for bytes [start, end) of a blob. */
function served(events: EventStream, route: Route, digest: string, cache: CacheResult, bytes: number): void {
  if (events.has('blobServed')) events.emit('blobServed', { registry: route.registry ?? `local/${route.namespace ?? ''}`, repo: route.localRepo, digest, cache, bytes });
}

/** A blob in the cache, opened. */
export class HitBlob implements BlobResult {
  readonly cache = 'hit';
  private used = false;

  constructor(
    private readonly reader: BlobReader,
    readonly digest: string,
    private readonly route: Route,
    private readonly events: EventStream,
  ) {}

  get size(): number {
    return this.reader.size;
  }

  private take(start: number, end: number | undefined): number {
    if (this.used) throw new Error('a blob result is sent once');
    this.used = true;
    const stop = end ?? this.reader.size;
    served(this.events, this.route, this.digest, 'hit', stop - start);
    return stop;
  }

  async open(start = 0, end?: number): Promise<Readable> {
    return this.reader.stream(start, this.take(start, end));
  }

  async sendTo(dest: Writable, ready: () => void, start = 0, end?: number): Promise<void> {
    const stop = this.take(start, end);
    ready();
    await this.reader.sendTo(dest, start, stop);
  }

  stored(): Promise<void> {
    return Promise.resolve();
  }

  discard(): void {
    if (this.used) return;
    this.used = true;
    void this.reader.close();
  }
}

/**
 * A miss: follows the fill of its digest (which the constructor's caller acquired a reference on).
 * `toClient` maps a fill failure to the error the client sees.
 */
export class FillBlob implements BlobResult {
  readonly cache = 'miss';
  private taken = false;

  constructor(
    private readonly fill: BlobFill,
    readonly digest: string,
    private readonly route: Route,
    private readonly events: EventStream,
    private readonly toClient: (e: unknown) => RegistryError,
  ) {}

  get size(): number | undefined {
    return this.fill.size;
  }

  /** Counts the serve; a range of a blob of unknown size waits for the fill to know it. */
  private async prepare(start: number, end: number | undefined): Promise<void> {
    if (this.taken) throw new Error('a blob result is sent once');
    this.taken = true;
    served(this.events, this.route, this.digest, 'miss', (end ?? this.fill.size ?? 0) - start);
    if (this.fill.size === undefined && (start !== 0 || end !== undefined)) {
      try {
        await this.fill.done();
      } catch (e) {
        this.fill.release();
        throw this.toClient(e);
      }
    }
  }

  async open(start = 0, end?: number): Promise<Readable> {
    await this.prepare(start, end);
    return this.fill.createReader(start, end);
  }

  async sendTo(dest: Writable, ready: () => void, start = 0, end?: number): Promise<void> {
    await this.prepare(start, end);
    let started = false;
    try {
      await this.fill.sendTo(dest, start, end, () => {
        started = true;
        ready();
      });
    } catch (e) {
      // A fill that fails before its first byte is still an error the client can read.
      throw started ? e : this.toClient(e);
    }
  }

  stored(): Promise<void> {
    return this.fill.done().catch((e: unknown) => {
      throw this.toClient(e);
    });
  }

  discard(): void {
    if (this.taken) return;
    this.taken = true;
    this.fill.release();
  }
}

/** A HEAD of a blob not in the cache: the upstream's size, no body. */
export class HeadMiss implements BlobResult {
  readonly cache = 'miss';

  constructor(
    readonly digest: string,
    readonly size: number | undefined,
  ) {}

  open(): Promise<Readable> {
    return Promise.reject(new Error('a HEAD result has no body'));
  }

  sendTo(): Promise<void> {
    return Promise.reject(new Error('a HEAD result has no body'));
  }

  stored(): Promise<void> {
    return Promise.reject(new Error('a HEAD result stores nothing'));
  }

  discard(): void {
    // nothing held
  }
}
