/**
 * Batches provenance counters in memory and writes them to SQLite every few seconds (and before any
 * read of the provenance API), so the hot path never waits on a SQLite write.
 */
import type { SqliteProvenanceStore, ServeDelta } from '../meta/index.ts';
import type { CacheResult } from './types.ts';

const FLUSH_MS = 5_000;

export class ProvenanceRecorder {
  private serves = new Map<string, ServeDelta>();
  private counters = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly store: SqliteProvenanceStore,
    private readonly onError: (e: unknown) => void,
  ) {
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  /** Counts one manifest response for (repo, digest). A stale answer counts as a hit. */
  served(repo: string, digest: string, cache: CacheResult, now: number): void {
    const key = `${repo}\n${digest}`;
    let d = this.serves.get(key);
    if (d === undefined) {
      d = { hits: 0, misses: 0, lastServed: now };
      this.serves.set(key, d);
    }
    if (cache === 'miss') d.misses++;
    else d.hits++;
    d.lastServed = now;
  }

  /** Adds to a global counter (bytes served from cache, bytes fetched upstream, ...). */
  add(name: string, value: number): void {
    this.counters.set(name, (this.counters.get(name) ?? 0) + value);
  }

  /** Writes the pending batch. */
  flush(): void {
    if (this.serves.size === 0 && this.counters.size === 0) return;
    const serves = this.serves;
    const counters = this.counters;
    this.serves = new Map();
    this.counters = new Map();
    try {
      this.store.applyBatch(serves, counters);
    } catch (e) {
      this.onError(e);
    }
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
