/**
 * The MetaStore seam (DESIGN §5): everything the mirror knows *about* content — tags, manifests and
 * their children, blobs, which repository holds what, provenance and counters, upload sessions,
 * the processes that have the cache open. Bytes live in the BlobStore; nothing outside src/meta/ sees SQL or a database
 * handle. `SqliteMetaStore` (embedded default) implements it; `CachingMetaStore` is a decorator
 * with the same interface that keeps hot lookups in memory and notices other processes' writes.
 *
 * Every method may be asynchronous, so that a networked database fits the same contract.
 * Contracts every implementation keeps (test/contract/meta-store.contract.ts checks them):
 * - "Unknown" is an answer: lookups return undefined / [] / false; they throw only when the store
 *   itself fails (a MetaStoreError, or the driver's own error: isMetaStoreFailure tells them).
 * - Writes are idempotent: recording what is already recorded changes nothing but times.
 * - transaction(fn): every write made through the `tx` handed to fn commits together or not at
 *   all; fn must use `tx`, never the outer store, and must not wait on the network.
 * - generation() changes whenever another process (another command on the same data dir, another
 *   replica) committed a write; this process's own writes need not change it.
 * - watchCommits(onCommit), where a store has it, calls onCommit soon after any connection's commit
 *   (this process's own too: a spurious call only costs one generation() check), so a cache in
 *   front need not poll generation() on its hot path.
 */

export interface TagRecord {
  digest: string;
  /** When the tag was last set to this digest (ms). */
  fetchedAt: number;
  /** When the upstream last confirmed it (ms): the tag TTL counts from here. */
  checkedAt: number;
}

export interface ManifestRecord {
  mediaType: string;
  size: number;
}

export interface ProvenanceSource {
  registry: string;
  repository: string;
  mediaType: string;
  size: number;
  source: 'upstream' | 'push' | 'import';
  /** Endpoint URL for upstream content (never with credentials). */
  sourceUrl?: string;
  upstreamDigest?: string;
}

export interface ProvenanceRecord extends ProvenanceSource {
  repo: string;
  digest: string;
  firstFetched: number;
  lastChecked?: number;
  lastServed?: number;
  hits: number;
  misses: number;
}

export interface ChildManifest {
  digest: string;
  mediaType?: string;
  platform?: string;
}

/** A manifest to record: its row, the digests it references (linked to `repo`), children, provenance. */
export interface ManifestEntry {
  repo: string;
  digest: string;
  size: number;
  /** Every blob and manifest digest the manifest references. */
  references: readonly string[];
  /** The blobs among them (config, layers): what the cache lifecycle counts references of. */
  blobs: readonly string[];
  /** For an index: its platform manifests, in order. */
  children: readonly ChildManifest[];
  provenance: ProvenanceSource;
}

/** Counter deltas for one (repo, digest). */
export interface ServeDelta {
  hits: number;
  misses: number;
  lastServed: number;
}

export interface ProvenanceFilter {
  registry?: string;
  repository?: string;
  /** Only records first fetched at or after this time (ms). */
  since?: number;
  limit: number;
  offset: number;
}

/** A blob upload in progress (push API): the repository it belongs to and when it last moved. */
export interface UploadRecord {
  repo: string;
  createdAt: number;
  updatedAt: number;
}

export interface MetaTotals {
  manifests: number;
  hits: number;
  misses: number;
  blobs: number;
  blobBytes: number;
}

/** One cached object as the cache lifecycle sees it. */
export interface CachedObject {
  digest: string;
  size: number;
  createdAt: number;
  /** The last time it was served or read (ms; buffered reads count once flushed). */
  usedAt: number;
}

export interface CachedManifest extends CachedObject {
  /** Blobs it references (config, layers). */
  blobs: string[];
  /** Platform manifests of an index. */
  children: string[];
}

/**
 * A pin: `reference` (a tag or a digest) of `repo` is kept by the budget. `until` bounds it: the
 * digest a pinned tag pointed at before it moved stays pinned for a while (PIN_PREVIOUS_MS).
 */
export interface Pin {
  repo: string;
  reference: string;
  source: 'cli' | 'config' | 'seed' | 'moved';
  until?: number;
}

/** Everything the cache lifecycle plans over, read in one pass. */
/** Counts and bytes of the cache's rows, by kind. */
export interface CacheObjects {
  blobs: { count: number; bytes: number };
  manifests: { count: number; bytes: number };
}

export interface CacheInventory {
  manifests: CachedManifest[];
  blobs: CachedObject[];
  tags: Array<{ repo: string; tag: string; digest: string }>;
  /** Digests linked to a local namespace (pushed or imported content). */
  local: Set<string>;
  pins: Pin[];
}

/** What removeContent removed: delete those bytes. `links`: the repository links that went with them. */
export interface RemovedContent {
  manifests: string[];
  blobs: string[];
  links: Array<{ repo: string; digest: string }>;
}

/** How long the digest a pinned tag pointed at stays pinned after the tag moved. */
export const PIN_PREVIOUS_MS = 24 * 3600_000;

/** A failure of the metadata store itself (not an unknown key). */
export class MetaStoreError extends Error {
  readonly code = 'META_UNAVAILABLE';
  constructor(message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'MetaStoreError';
  }
}

/**
 * True for a failure of a metadata store itself: a MetaStoreError, or the error of the driver
 * underneath (better-sqlite3's SqliteError, code SQLITE_*), which implementations let through.
 */
export function isMetaStoreFailure(e: unknown): boolean {
  if (e instanceof MetaStoreError) return true;
  const code = (e as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && code.startsWith('SQLITE_');
}

export interface MetaStore {
  // ------------------------------------------------------------------ tags
  getTag(repo: string, tag: string): Promise<TagRecord | undefined>;
  /** Sets tag → digest, fetched and checked `now`. */
  putTag(repo: string, tag: string, digest: string, now: number): Promise<void>;
  /** Refreshes a tag's check time when it still points at `digest`; also the provenance record's. */
  touchTag(repo: string, tag: string, digest: string, now: number): Promise<void>;
  /** The tags of `repo`, sorted. */
  listTags(repo: string): Promise<string[]>;
  /** The tags of `repo` pointing at `digest`, sorted. */
  tagsFor(repo: string, digest: string): Promise<string[]>;
  /** Deletes a tag; false when there was none. */
  deleteTag(repo: string, tag: string): Promise<boolean>;

  // ------------------------------------------------------------- manifests
  getManifest(digest: string): Promise<ManifestRecord | undefined>;
  /** Records a stored manifest, links it and its references to its repo, children and provenance, atomically. */
  putManifest(m: ManifestEntry, now: number): Promise<void>;
  /** Forgets a manifest row (its bytes are gone). */
  forgetManifest(digest: string): Promise<void>;
  manifestDigests(): AsyncIterable<string>;
  /** An index's platform manifests, in order ([] for none or unknown). */
  children(digest: string): Promise<ChildManifest[]>;

  // ----------------------------------------------------------------- blobs
  getBlobSize(digest: string): Promise<number | undefined>;
  /** Records a committed blob and links it to `repo`. */
  putBlob(repo: string, digest: string, size: number, now: number): Promise<void>;
  /**
   * Notes that a blob was read now. Buffered: implementations batch these off the hot path and
   * write them within seconds and on close(). A read never creates a row: content removed
   * meanwhile (evicted, deleted) stays gone.
   */
  noteBlobRead(digest: string, size: number, now: number): void;
  /** Records blobs found in the BlobStore without a row (reconciliation). */
  adoptBlobs(found: ReadonlyArray<{ digest: string; size: number }>, now: number): Promise<void>;
  forgetBlobs(digests: readonly string[]): Promise<void>;
  blobDigests(): AsyncIterable<string>;
  /** True when `digest` has a blob or a manifest row. */
  knows(digest: string): Promise<boolean>;

  /** Notes that a manifest was served now (buffered like noteBlobRead; a missing row stays missing). */
  noteManifestRead(digest: string, now: number): void;
  /** Writes the buffered reads now (before the lifecycle plans over last-use times). */
  flushReads(): Promise<void>;

  // ------------------------------------------------------------- lifecycle
  /** Bytes of every blob and manifest row (what the byte budget counts). */
  cacheBytes(): Promise<number>;
  /** How many blob and manifest rows there are and their bytes (the metrics' cache size series). */
  cacheObjects(): Promise<CacheObjects>;
  /**
   * Every manifest, blob, tag, local digest and pin (the lifecycle's plan input). With
   * `{ orphans: false }`, `blobs` holds only blobs some manifest references: the byte budget reads
   * the unreferenced ones a page at a time (orphanBlobs), so a cache of many never sits in memory.
   */
  inventory(o?: { orphans?: boolean }): Promise<CacheInventory>;
  /**
   * Up to `limit` blobs no manifest references, least recently used first (by usedAt, then
   * digest), after `after` (the last of the previous page; undefined: from the start).
   */
  orphanBlobs(after: { usedAt: number; digest: string } | undefined, limit: number): Promise<CachedObject[]>;
  /**
   * Removes manifests and blobs, atomically, re-checking each against writes since the plan: a
   * manifest or blob used at or after `usedBefore`, a manifest that another manifest not being
   * removed lists as a child, or a blob that a remaining manifest references, stays. A removed
   * manifest takes its tags (in every repository), links, children, blob references and
   * provenance with it; a removed blob its links. Returns what was removed: delete those bytes.
   */
  removeContent(manifests: readonly string[], blobs: readonly string[], usedBefore: number): Promise<RemovedContent>;
  pins(): Promise<Pin[]>;
  /** Pins `reference` of `repo` (idempotent; a second source replaces the first). */
  pin(p: Pin): Promise<void>;
  /** Removes a pin; false when there was none. */
  unpin(repo: string, reference: string): Promise<boolean>;
  /** Replaces the pins of source 'config' with `pins` (config reload). */
  setConfigPins(pins: ReadonlyArray<{ repo: string; reference: string }>): Promise<void>;
  /** True while manifests recorded before schema 4 have no blob references indexed yet. */
  blobRefsPending(): Promise<boolean>;
  /** Indexes blob references of manifests (manifest → blobs); `done` ends the pending state. */
  putBlobRefs(refs: ReadonlyMap<string, readonly string[]>, done: boolean): Promise<void>;

  // ----------------------------------------------------------------- links
  link(repo: string, digest: string): Promise<void>;
  /** True when `repo` is known to hold `digest` (fetched through it, or referenced by its manifests). */
  hasLink(repo: string, digest: string): Promise<boolean>;
  /** Removes `digest` from `repo` and every tag of `repo` pointing at it; returns those tags. */
  unlink(repo: string, digest: string): Promise<string[]>;

  // ------------------------------------------------------------ provenance
  getProvenance(repo: string, digest: string): Promise<ProvenanceRecord | undefined>;
  /** Records, newest first, filtered, with offset paging. */
  listProvenance(f: ProvenanceFilter): Promise<ProvenanceRecord[]>;
  /** Applies a batch of serve counts and global counter deltas. */
  addCounts(serves: ReadonlyMap<string, ServeDelta>, counters: ReadonlyMap<string, number>): Promise<void>;
  counters(): Promise<Record<string, number>>;
  totals(): Promise<MetaTotals>;

  // --------------------------------------------------------------- uploads
  /** Records a new upload session of `repo` (its bytes live in the store's upload area). */
  putUpload(id: string, repo: string, now: number): Promise<void>;
  getUpload(id: string): Promise<UploadRecord | undefined>;
  /** Notes that an upload received bytes now. */
  touchUpload(id: string, now: number): Promise<void>;
  deleteUpload(id: string): Promise<void>;
  /** Ids of uploads that have not moved since `before` (ms). */
  uploadsIdleSince(before: number): Promise<string[]>;

  // ------------------------------------------------------------- processes
  /** Notes that process `owner` (store/owner.ts) has the cache open; processClosed removes it. */
  processOpened(owner: string, now: number): Promise<void>;
  processClosed(owner: string): Promise<void>;
  /** Owner tokens of processes that opened the cache and did not close it (alive, or killed). */
  openProcesses(): Promise<string[]>;
  /** Whether the BlobStore was ever reconciled with the rows. */
  filesReconciled(): Promise<boolean>;
  setFilesReconciled(done: boolean): Promise<void>;

  // --------------------------------------------------------------- control
  /** A value that changes when another process committed a write. */
  generation(): Promise<string>;
  /**
   * Optional: calls `onCommit` after commits (any connection's) from now on, and `onLost` once if
   * it stops being able to (then only generation() polling notices others' writes). Returns the
   * function that stops watching, or undefined when this store cannot watch at all.
   */
  watchCommits?(onCommit: () => void, onLost: (err: Error) => void): (() => void) | undefined;
  transaction<T>(fn: (tx: MetaStore) => Promise<T>): Promise<T>;
  /** Writes what is buffered and closes the store. */
  close(): Promise<void>;
}
