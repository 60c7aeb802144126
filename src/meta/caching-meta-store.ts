/**
 * CachingMetaStore: a MetaStore decorator that answers the hot lookups (tag → digest, manifest rows,
 * repository links) from memory. The mirror itself keeps no metadata state: this is the one place.
 *
 * Staying right:
 * - its own writes update or drop the entries they touch (inside a transaction they only drop, so a
 *   rolled-back write leaves nothing behind);
 * - other processes' writes (a `regmirror import` or `seed` beside a running server, another
 *   replica) are noticed through the inner store's generation(): checked before a lookup is answered
 *   from memory, at most once per `checkMs` (0: every lookup; cheap for SQLite, a round trip for a
 *   networked store). A changed generation drops everything.
 * Only positive answers are kept: an unknown tag or link is always asked again.
 */
import { LRUCache } from 'lru-cache';
import type {
  RemovedContent,
  CacheInventory,
  CacheObjects,
  CachedObject,
  ChildManifest,
  ManifestEntry,
  ManifestRecord,
  MetaStore,
  MetaTotals,
  Pin,
  ProvenanceFilter,
  ProvenanceRecord,
  ServeDelta,
  TagRecord,
  UploadRecord,
} from './meta-store.ts';

export interface CachingOptions {
  /**
   * How often, at most, the inner store's generation is checked (ms). 0: once per turn of the
   * event loop, before the first cached answer of that turn (requests that arrived together share
   * one check; a request arriving after another process's commit always sees it).
   */
  checkMs: number;
  /**
   * With an inner store that announces commits (MetaStore.watchCommits), the generation is
   * checked after each announcement and otherwise only this often (ms; default 1000), a bound
   * should an announcement be missed. Without announcements (or once they are lost): checkMs.
   */
  watchedCheckMs?: number;
  maxTags?: number;
  maxManifests?: number;
  maxLinks?: number;
  now?: () => number;
}

/** The entries, shared by the decorator and the views it hands to transactions. */
class Entries {
  readonly tags: LRUCache<string, TagRecord>;
  readonly manifests: LRUCache<string, ManifestRecord>;
  readonly links: LRUCache<string, true>;
  generation: string | undefined;
  checkedAt = -Infinity;
  /** checkMs 0: a check was made in this turn of the event loop (cleared by setImmediate). */
  checkedThisTurn = false;
  /**
   * Bumped by every write through the decorator. A lookup caches what the inner store answered
   * only if no write happened while it waited: else a slow read could put back what a write replaced.
   */
  writes = 0;

  constructor(o: CachingOptions) {
    this.tags = new LRUCache({ max: o.maxTags ?? 100_000 });
    this.manifests = new LRUCache({ max: o.maxManifests ?? 100_000 });
    this.links = new LRUCache({ max: o.maxLinks ?? 200_000 });
  }

  clear(): void {
    this.writes++;
    this.tags.clear();
    this.manifests.clear();
    this.links.clear();
  }
}

const tagKey = (repo: string, tag: string): string => `${repo}:${tag}`;

/** One copy of each media type string for the cached manifest rows (a few distinct values, 100k rows). */
const mediaTypes = new Map<string, string>();
function shared(mediaType: string): string {
  const known = mediaTypes.get(mediaType);
  if (known !== undefined) return known;
  if (mediaTypes.size < 64) mediaTypes.set(mediaType, mediaType);
  return mediaType;
}
const linkKey = (repo: string, digest: string): string => `${repo}\n${digest}`;

export class CachingMetaStore implements MetaStore {
  private readonly e: Entries;
  private readonly now: () => number;
  /** The current bound between generation checks: checkMs, or watchedCheckMs while commits are announced. */
  private intervalMs: number;
  private readonly stopWatching: (() => void) | undefined;

  constructor(
    private readonly inner: MetaStore,
    private readonly options: CachingOptions,
    /** Set for a transaction's view: writes drop entries instead of setting them. */
    private readonly inTx = false,
    shared?: Entries,
  ) {
    this.e = shared ?? new Entries(options);
    this.now = options.now ?? Date.now;
    this.intervalMs = options.checkMs;
    if (!inTx && options.checkMs > 0 && inner.watchCommits !== undefined) {
      this.stopWatching = inner.watchCommits(
        () => {
          this.e.checkedAt = -Infinity; // the next lookup checks
        },
        () => {
          this.intervalMs = options.checkMs;
          this.e.checkedAt = -Infinity;
        },
      );
      if (this.stopWatching !== undefined) this.intervalMs = options.watchedCheckMs ?? 1000;
    }
  }

  /**
   * Drops everything when another process wrote since the last check (at most every checkMs).
   * Undefined when no check is due, so a cached answer costs no extra await.
   */
  private fresh(): Promise<void> | undefined {
    const e = this.e;
    if (this.options.checkMs === 0) {
      if (e.checkedThisTurn) return undefined;
      e.checkedThisTurn = true;
      setImmediate(() => {
        e.checkedThisTurn = false;
      });
    } else {
      const now = this.now();
      if (now - e.checkedAt < this.intervalMs) return undefined;
      e.checkedAt = now;
    }
    return this.check();
  }

  private async check(): Promise<void> {
    const g = await this.inner.generation();
    if (g !== this.e.generation) {
      if (this.e.generation !== undefined) this.e.clear();
      this.e.generation = g;
    }
  }

  // ------------------------------------------------------------------ tags

  getTag(repo: string, tag: string): Promise<TagRecord | undefined> {
    // The hot path: no check due and the tag in memory is one resolved promise, no async frame.
    const due = this.fresh();
    if (due === undefined) {
      const hit = this.e.tags.get(tagKey(repo, tag));
      if (hit !== undefined) {
        return Promise.resolve(hit);
      }
    }
    return this.getTagSlow(due, repo, tag);
  }

  private async getTagSlow(due: Promise<void> | undefined, repo: string, tag: string): Promise<TagRecord | undefined> {
    if (due !== undefined) await due;
    const key = tagKey(repo, tag);
    const hit = this.e.tags.get(key);
    if (hit !== undefined) {
      return hit;
    }
    const w = this.e.writes;
    const rec = await this.inner.getTag(repo, tag);
    if (rec !== undefined && !this.inTx && w === this.e.writes) this.e.tags.set(key, rec);
    return rec;
  }

  async putTag(repo: string, tag: string, digest: string, now: number): Promise<void> {
    this.e.writes++;
    this.e.tags.delete(tagKey(repo, tag));
    await this.inner.putTag(repo, tag, digest, now);
    if (!this.inTx) this.e.tags.set(tagKey(repo, tag), { digest, fetchedAt: now, checkedAt: now });
  }

  async touchTag(repo: string, tag: string, digest: string, now: number): Promise<void> {
    const key = tagKey(repo, tag);
    this.e.writes++;
    await this.inner.touchTag(repo, tag, digest, now);
    const rec = this.e.tags.get(key);
    if (rec !== undefined && rec.digest === digest && !this.inTx) this.e.tags.set(key, { digest, fetchedAt: rec.fetchedAt, checkedAt: now });
    else this.e.tags.delete(key);
  }

  listTags(repo: string): Promise<string[]> {
    return this.inner.listTags(repo);
  }

  tagsFor(repo: string, digest: string): Promise<string[]> {
    return this.inner.tagsFor(repo, digest);
  }

  async deleteTag(repo: string, tag: string): Promise<boolean> {
    this.e.writes++;
    this.e.tags.delete(tagKey(repo, tag));
    return this.inner.deleteTag(repo, tag);
  }

  // ------------------------------------------------------------- manifests

  getManifest(digest: string): Promise<ManifestRecord | undefined> {
    const due = this.fresh();
    if (due === undefined) {
      const hit = this.e.manifests.get(digest);
      if (hit !== undefined) {
        return Promise.resolve(hit);
      }
    }
    return this.getManifestSlow(due, digest);
  }

  private async getManifestSlow(due: Promise<void> | undefined, digest: string): Promise<ManifestRecord | undefined> {
    if (due !== undefined) await due;
    const hit = this.e.manifests.get(digest);
    if (hit !== undefined) {
      return hit;
    }
    const w = this.e.writes;
    const rec = await this.inner.getManifest(digest);
    if (rec !== undefined && !this.inTx && w === this.e.writes) this.e.manifests.set(digest, { mediaType: shared(rec.mediaType), size: rec.size });
    return rec;
  }

  async putManifest(m: ManifestEntry, now: number): Promise<void> {
    this.e.writes++;
    await this.inner.putManifest(m, now);
    if (this.inTx) return;
    this.e.manifests.set(m.digest, { mediaType: shared(m.provenance.mediaType), size: m.size });
    this.e.links.set(linkKey(m.repo, m.digest), true);
    for (const d of m.references) this.e.links.set(linkKey(m.repo, d), true);
  }

  async forgetManifest(digest: string): Promise<void> {
    this.e.writes++;
    this.e.manifests.delete(digest);
    await this.inner.forgetManifest(digest);
  }

  manifestDigests(): AsyncIterable<string> {
    return this.inner.manifestDigests();
  }

  children(digest: string): Promise<ChildManifest[]> {
    return this.inner.children(digest);
  }

  // ----------------------------------------------------------------- blobs

  getBlobSize(digest: string): Promise<number | undefined> {
    return this.inner.getBlobSize(digest);
  }

  async putBlob(repo: string, digest: string, size: number, now: number): Promise<void> {
    await this.inner.putBlob(repo, digest, size, now);
    if (!this.inTx) this.e.links.set(linkKey(repo, digest), true);
  }

  noteBlobRead(digest: string, size: number, now: number): void {
    this.inner.noteBlobRead(digest, size, now);
  }

  noteManifestRead(digest: string, now: number): void {
    this.inner.noteManifestRead(digest, now);
  }

  flushReads(): Promise<void> {
    return this.inner.flushReads();
  }

  // ------------------------------------------------------------- lifecycle

  cacheBytes(): Promise<number> {
    return this.inner.cacheBytes();
  }

  cacheObjects(): Promise<CacheObjects> {
    return this.inner.cacheObjects();
  }

  inventory(o?: { orphans?: boolean }): Promise<CacheInventory> {
    return this.inner.inventory(o);
  }

  orphanBlobs(after: { usedAt: number; digest: string } | undefined, limit: number): Promise<CachedObject[]> {
    return this.inner.orphanBlobs(after, limit);
  }

  async removeContent(manifests: readonly string[], blobs: readonly string[], usedBefore: number): Promise<RemovedContent> {
    this.e.writes++;
    const removed = await this.inner.removeContent(manifests, blobs, usedBefore);
    // Only what was removed is dropped, not everything: a sweep's batch every few ms cleared the
    // hot entries of every request beside it. The removed manifests' rows, the links that went
    // with the content (the inner store names them), and the tags of any repository pointing at a
    // removed manifest (one pass over the tag entries).
    for (const l of removed.links) this.e.links.delete(linkKey(l.repo, l.digest));
    if (removed.manifests.length > 0) {
      const gone = new Set(removed.manifests);
      for (const d of gone) this.e.manifests.delete(d);
      const stale: string[] = [];
      this.e.tags.forEach((rec, key) => {
        if (gone.has(rec.digest)) stale.push(key);
      });
      for (const k of stale) this.e.tags.delete(k);
    }
    return removed;
  }

  pins(): Promise<Pin[]> {
    return this.inner.pins();
  }

  pin(p: Pin): Promise<void> {
    return this.inner.pin(p);
  }

  unpin(repo: string, reference: string): Promise<boolean> {
    return this.inner.unpin(repo, reference);
  }

  setConfigPins(pins: ReadonlyArray<{ repo: string; reference: string }>): Promise<void> {
    return this.inner.setConfigPins(pins);
  }

  blobRefsPending(): Promise<boolean> {
    return this.inner.blobRefsPending();
  }

  putBlobRefs(refs: ReadonlyMap<string, readonly string[]>, done: boolean): Promise<void> {
    return this.inner.putBlobRefs(refs, done);
  }

  adoptBlobs(found: ReadonlyArray<{ digest: string; size: number }>, now: number): Promise<void> {
    return this.inner.adoptBlobs(found, now);
  }

  forgetBlobs(digests: readonly string[]): Promise<void> {
    return this.inner.forgetBlobs(digests);
  }

  blobDigests(): AsyncIterable<string> {
    return this.inner.blobDigests();
  }

  knows(digest: string): Promise<boolean> {
    return this.inner.knows(digest);
  }

  // ----------------------------------------------------------------- links

  async link(repo: string, digest: string): Promise<void> {
    await this.inner.link(repo, digest);
    if (!this.inTx) this.e.links.set(linkKey(repo, digest), true);
  }

  hasLink(repo: string, digest: string): Promise<boolean> {
    const due = this.fresh();
    if (due === undefined && this.e.links.has(linkKey(repo, digest))) {
      return Promise.resolve(true);
    }
    return this.hasLinkSlow(due, repo, digest);
  }

  private async hasLinkSlow(due: Promise<void> | undefined, repo: string, digest: string): Promise<boolean> {
    if (due !== undefined) await due;
    const key = linkKey(repo, digest);
    if (this.e.links.has(key)) {
      return true;
    }
    const w = this.e.writes;
    const linked = await this.inner.hasLink(repo, digest);
    if (linked && !this.inTx && w === this.e.writes) this.e.links.set(key, true);
    return linked;
  }

  async unlink(repo: string, digest: string): Promise<string[]> {
    this.e.writes++;
    this.e.links.delete(linkKey(repo, digest));
    const tags = await this.inner.unlink(repo, digest);
    for (const t of tags) this.e.tags.delete(tagKey(repo, t));
    return tags;
  }

  // ------------------------------------------------------------ provenance

  getProvenance(repo: string, digest: string): Promise<ProvenanceRecord | undefined> {
    return this.inner.getProvenance(repo, digest);
  }

  listProvenance(f: ProvenanceFilter): Promise<ProvenanceRecord[]> {
    return this.inner.listProvenance(f);
  }

  addCounts(serves: ReadonlyMap<string, ServeDelta>, counters: ReadonlyMap<string, number>): Promise<void> {
    return this.inner.addCounts(serves, counters);
  }

  counters(): Promise<Record<string, number>> {
    return this.inner.counters();
  }

  totals(): Promise<MetaTotals> {
    return this.inner.totals();
  }

  // --------------------------------------------------------------- uploads

  putUpload(id: string, repo: string, now: number): Promise<void> {
    return this.inner.putUpload(id, repo, now);
  }

  getUpload(id: string): Promise<UploadRecord | undefined> {
    return this.inner.getUpload(id);
  }

  touchUpload(id: string, now: number): Promise<void> {
    return this.inner.touchUpload(id, now);
  }

  deleteUpload(id: string): Promise<void> {
    return this.inner.deleteUpload(id);
  }

  uploadsIdleSince(before: number): Promise<string[]> {
    return this.inner.uploadsIdleSince(before);
  }

  // ------------------------------------------------------------- processes

  processOpened(owner: string, now: number): Promise<void> {
    return this.inner.processOpened(owner, now);
  }

  processClosed(owner: string): Promise<void> {
    return this.inner.processClosed(owner);
  }

  openProcesses(): Promise<string[]> {
    return this.inner.openProcesses();
  }

  filesReconciled(): Promise<boolean> {
    return this.inner.filesReconciled();
  }

  setFilesReconciled(done: boolean): Promise<void> {
    return this.inner.setFilesReconciled(done);
  }

  // --------------------------------------------------------------- control

  generation(): Promise<string> {
    return this.inner.generation();
  }

  transaction<T>(fn: (tx: MetaStore) => Promise<T>): Promise<T> {
    return this.inner.transaction((tx) => fn(new CachingMetaStore(tx, this.options, true, this.e)));
  }

  close(): Promise<void> {
    this.stopWatching?.();
    return this.inner.close();
  }
}
