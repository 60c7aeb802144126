/**
 * Provenance counters (DESIGN §4) as a subscriber of the event stream: manifest serves per
 * (repo, digest), blob hits and misses, bytes served from the cache or while filling, bytes fetched
 * upstream. Batched in memory and written to the MetaStore every few seconds (and before any read
 * of the provenance API, and on close), so the hot path never waits on a metadata write.
 */
import type { MetaStore, ServeDelta } from '../meta/index.ts';
import type { EventStream } from '../events/index.ts';

const FLUSH_MS = 5_000;

/** Global counter names kept by the recorder. */
export const COUNTERS = {
  blobHits: 'blob_hits',
  blobMisses: 'blob_misses',
  bytesServedFromCache: 'bytes_served_from_cache',
  bytesServedDuringFill: 'bytes_served_during_fill',
  bytesFetchedUpstream: 'bytes_fetched_upstream',
} as const;

export class ProvenanceRecorder {
  private serves = new Map<string, ServeDelta>();
  private counters = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  private readonly unsubscribe: Array<() => void>;
  /** The write in progress, so flushes never overlap. */
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly meta: MetaStore,
    events: EventStream,
    private readonly onError: (e: unknown) => void,
  ) {
    this.timer = setInterval(() => void this.flush(), FLUSH_MS);
    this.timer.unref();
    this.unsubscribe = [
      events.on('manifestServed', (e) => this.served(e.repo, e.digest, e.cache === 'miss', e.at)),
      events.on('blobServed', (e) => {
        if (e.cache === 'miss') {
          this.add(COUNTERS.blobMisses, 1);
          this.add(COUNTERS.bytesServedDuringFill, e.bytes);
        } else {
          this.add(COUNTERS.blobHits, 1);
          this.add(COUNTERS.bytesServedFromCache, e.bytes);
        }
      }),
      events.on('fillFinished', (e) => {
        if (e.outcome !== 'failed') this.add(COUNTERS.bytesFetchedUpstream, e.bytes);
      }),
    ];
  }

  /** Counts one manifest response for (repo, digest). A stale answer counts as a hit. */
  private served(repo: string, digest: string, miss: boolean, now: number): void {
    const key = `${repo}\n${digest}`;
    let d = this.serves.get(key);
    if (d === undefined) {
      d = { hits: 0, misses: 0, lastServed: now };
      this.serves.set(key, d);
    }
    if (miss) d.misses++;
    else d.hits++;
    d.lastServed = now;
  }

  private add(name: string, value: number): void {
    this.counters.set(name, (this.counters.get(name) ?? 0) + value);
  }

  /** Writes the pending batch; settles when it (and any earlier one) is written. */
  flush(): Promise<void> {
    if (this.serves.size === 0 && this.counters.size === 0) return this.writing;
    const serves = this.serves;
    const counters = this.counters;
    this.serves = new Map();
    this.counters = new Map();
    this.writing = this.writing.then(() => this.meta.addCounts(serves, counters)).catch((e: unknown) => this.onError(e));
    return this.writing;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const off of this.unsubscribe) off();
    await this.flush();
  }
}
