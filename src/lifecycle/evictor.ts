/**
 * The byte budget (DESIGN §11): `[cache] max_size` with a high and a low watermark (evict_at,
 * evict_to) and a floor of free space on the cache's filesystem (min_free). The server's Evictor
 * checks as fills start and finish (it follows them on the event stream) and every CHECK_MS;
 * above the high watermark (counting fills in flight) it removes least recently used images until
 * the low one, whole images at a time (cache-plan.ts), and says so: one log line and one `evicted`
 * event per image.
 *
 * Crash safety: rows go first (one transaction per image, re-checked against uses since the plan),
 * then the bytes. A crash between the two leaves bytes without rows, which start-up reconciliation
 * adopts and the next sweep or `cache gc` removes; a row never points at missing bytes for long
 * (reconciliation forgets those too). A reader that opened a blob keeps reading it after a delete
 * (BlobStore contract); a fill in flight is never planned (its blob has no row yet), nor is
 * anything younger than evict_grace.
 */
import { parseDigest } from '../oci/index.ts';
import type { BlobStore } from '../store/index.ts';
import type { CacheInventory, MetaStore } from '../meta/index.ts';
import type { EventStream } from '../events/index.ts';
import type { Logger } from '../log/index.ts';
import { formatBytes } from '../config/units.ts';
import { evictionPlan, imageName, orphanStream, type CacheImage } from './cache-plan.ts';

/** How often the budget is checked besides fill events. */
const CHECK_MS = 30_000;
/** A budget nothing could be evicted for is planned again after the cache grew this share... */
const STUCK_GROWTH = 0.01;
/** ...or after this long (pins expire, grace periods pass). */
const STUCK_RETRY_MS = 5 * 60_000;

export type RemovalReason = 'budget' | 'min_free' | 'rm' | 'gc' | 'repair';

export interface BudgetOptions {
  maxBytes?: number;
  evictAt: number;
  evictTo: number;
  minFreeBytes?: number;
  graceMs: number;
  evictLocal: boolean;
}

export interface RemovalDeps {
  store: BlobStore;
  meta: MetaStore;
  log: Logger;
  events?: EventStream;
}

/**
 * Objects per removeContent transaction, by default: the server's sweeps hold the event loop a few ms
 * a batch at this size (~30 µs an object); a command that nothing waits on passes more (gc: 2000).
 */
const BATCH_OBJECTS = 100;

/** Sizes of an inventory's objects, for removeImages (an orphan image carries its own); yields every 2000. */
export async function inventorySizes(inv: CacheInventory): Promise<(d: string) => number> {
  const size = new Map<string, number>();
  let n = 0;
  for (const o of [...inv.manifests, ...inv.blobs]) {
    size.set(o.digest, o.size);
    if (++n % 2000 === 0) await new Promise((r) => setImmediate(r));
  }
  return (d) => size.get(d) ?? 0;
}

/**
 * Removes `images` (rows, then bytes), each re-checked against uses at or after `usedBefore`,
 * in transactions of up to `batchObjects` objects, taking them from `images` as it goes (a plan
 * still being made, or a list). Stops early when `stop()` says so. Returns the bytes freed and the
 * images removed (whole or in part); each is one log line and one `evicted` event.
 */
export async function removeImages(deps: RemovalDeps, sizeOf: (d: string) => number, images: Iterable<CacheImage> | AsyncIterable<CacheImage>, reason: RemovalReason, usedBefore: number, batchObjects = BATCH_OBJECTS, stop: () => boolean = () => false): Promise<{ bytes: number; images: number }> {
  let bytes = 0;
  let count = 0;
  let batch: CacheImage[] = [];
  let objects = 0;
  const flush = async (): Promise<void> => {
    const removed = await deps.meta.removeContent(batch.flatMap((b) => b.manifests), batch.flatMap((b) => b.blobs), usedBefore);
    const gone = new Set([...removed.manifests, ...removed.blobs]);
    // Every delete of the batch at once: one wait per batch (under load each wait is a full turn
    // of a busy event loop; a few at a time, a sweep of 100k blobs crawled).
    await Promise.all([...gone].map((d) => deps.store.delete(parseDigest(d))));
    for (const img of batch) {
      let freed = 0;
      let objectsGone = 0;
      for (const d of [...img.manifests, ...img.blobs]) {
        if (!gone.delete(d)) continue; // kept, or counted with an earlier image of the batch
        freed += img.root === undefined ? img.bytes : sizeOf(d);
        objectsGone++;
      }
      if (objectsGone === 0) continue;
      bytes += freed;
      count++;
      const digest = img.root ?? img.blobs[0] ?? '';
      deps.log.info({ image: imageName(img), digest, bytes: freed, objects: objectsGone, reason }, reason === 'budget' || reason === 'min_free' ? 'evicted' : 'removed from the cache');
      if (deps.events?.has('evicted') === true) deps.events.emit('evicted', { digest, bytes: freed, reason });
    }
    batch = [];
    objects = 0;
    await new Promise((r) => setImmediate(r));
  };
  for await (const img of images) {
    if (stop()) break;
    const n = img.manifests.length + img.blobs.length;
    if (batch.length > 0 && objects + n > batchObjects) await flush();
    batch.push(img);
    objects += n;
  }
  if (batch.length > 0) await flush();
  return { bytes, images: count };
}

export interface SweepResult {
  usedBytes: number;
  freeBytes: number | undefined;
  freedBytes: number;
  images: number;
  reason?: 'budget' | 'min_free';
}

export class Evictor {
  /** Fills in flight: digest → declared size (0 when unknown). */
  private readonly inFlight = new Map<string, number>();
  private running: Promise<SweepResult> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly unsubscribe: Array<() => void> = [];
  /** A budget that cannot be met is said once per state, not at every check. */
  private warned = false;
  /**
   * Set when a sweep could free nothing (all pinned, local, young or in use): the bytes then in
   * use and when. Until the cache grows by STUCK_GROWTH or STUCK_RETRY_MS passes, later checks
   * do not plan again over the whole inventory for nothing.
   */
  private stuck: { usedBytes: number; at: number } | undefined;
  private stopped = false;

  constructor(
    private readonly deps: RemovalDeps & { events: EventStream },
    private readonly budget: BudgetOptions,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether there is anything to enforce (a max_size or a min_free). */
  get enabled(): boolean {
    return this.budget.maxBytes !== undefined || this.budget.minFreeBytes !== undefined;
  }

  start(): void {
    if (!this.enabled) return;
    const { events } = this.deps;
    this.unsubscribe.push(
      events.on('fillStarted', (e) => {
        this.inFlight.set(e.digest, e.size ?? 0);
        this.schedule();
      }),
      events.on('fillFinished', (e) => {
        this.inFlight.delete(e.digest);
        if (e.outcome === 'stored') this.schedule();
      }),
    );
    this.timer = setInterval(() => this.schedule(), CHECK_MS);
    this.timer.unref();
    this.schedule();
  }

  /** Runs a sweep soon; one at a time, a request during a sweep runs one more after it. */
  schedule(): void {
    if (this.stopped) return;
    if (this.running !== undefined) {
      this.again = true;
      return;
    }
    this.running = this.sweep()
      .catch((e: unknown) => {
        this.deps.log.warn({ err: (e as Error).message }, 'cache eviction failed; retrying at the next check');
        return undefined;
      })
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.schedule();
        }
      }) as Promise<SweepResult>;
  }

  /** Checks the budget once and evicts what it needs. */
  async sweep(): Promise<SweepResult> {
    const { meta, store, log } = this.deps;
    const b = this.budget;
    await meta.flushReads();
    let inFlight = 0;
    for (const s of this.inFlight.values()) inFlight += s;
    const usedBytes = (await meta.cacheBytes()) + inFlight;
    const freeBytes = b.minFreeBytes === undefined ? undefined : await store.freeBytes();
    const overBudget = b.maxBytes !== undefined && usedBytes > b.maxBytes * b.evictAt ? usedBytes - b.maxBytes * b.evictTo : 0;
    const underFloor = b.minFreeBytes !== undefined && freeBytes !== undefined && freeBytes < b.minFreeBytes ? b.minFreeBytes - freeBytes + Math.ceil(b.minFreeBytes * 0.05) : 0;
    const toFree = Math.max(overBudget, underFloor);
    if (toFree <= 0) {
      this.warned = false;
      this.stuck = undefined;
      return { usedBytes, freeBytes, freedBytes: 0, images: 0 };
    }
    const reason = overBudget >= underFloor ? 'budget' : 'min_free';
    const planned = this.now();
    if (this.stuck !== undefined && usedBytes < this.stuck.usedBytes * (1 + STUCK_GROWTH) && planned - this.stuck.at < STUCK_RETRY_MS) {
      return { usedBytes, freeBytes, freedBytes: 0, images: 0, reason };
    }
    // Referenced content in memory, unreferenced blobs a page at a time, removed as planned: the
    // sweep's memory is the images', not the cache's (100k orphan blobs held whole: +90 MiB RSS).
    const inv = await meta.inventory({ orphans: false });
    if (this.stopped) return { usedBytes, freeBytes, freedBytes: 0, images: 0 };
    const plan = evictionPlan(inv, toFree, { now: planned, graceMs: b.graceMs, evictLocal: b.evictLocal, inUse: new Set(this.inFlight.keys()) }, orphanStream(meta));
    const done = await removeImages(this.deps, await inventorySizes(inv), plan, reason, planned, BATCH_OBJECTS, () => this.stopped);
    this.stuck = done.images === 0 ? { usedBytes, at: planned } : undefined;
    if (done.bytes < toFree && !this.warned) {
      this.warned = true;
      log.warn(
        { usedBytes, maxBytes: b.maxBytes, freeBytes, minFreeBytes: b.minFreeBytes, freed: done.bytes, wanted: toFree },
        `the cache cannot get under its ${reason === 'budget' ? 'max_size' : 'min_free'} (${formatBytes(toFree - done.bytes)} short): the rest is pinned, local (evict_local = false), younger than evict_grace or in use`,
      );
    }
    return { usedBytes, freeBytes, freedBytes: done.bytes, images: done.images, reason };
  }

  /** Stops checking and waits for a running sweep. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    for (const u of this.unsubscribe) u();
    await this.running?.catch(() => undefined);
  }
}
