/**
 * The cache's images, read from a MetaStore inventory (DESIGN §11). Pure: no I/O, so the planner
 * is tested in process and the server, `cache ls` and `cache rm` agree on what an image is.
 *
 * - An image is a root manifest (one no stored index lists as a child) with its platform
 *   manifests and every blob they reference. Its last use is the latest use of any of them.
 * - Blobs and manifests are counted across images: removing an image frees only what no other
 *   image holds. A blob no manifest references is an image of its own (an orphan).
 * - Protected from the byte budget: pinned images (a pinned tag's current digest, a pinned digest,
 *   the previous digest of a pinned tag that moved), content of local namespaces (unless
 *   `evictLocal`), anything created within the grace period, and digests in use (fills in flight).
 */
import type { CacheInventory, CachedManifest, CachedObject, MetaStore } from '../meta/index.ts';

export interface CacheImage {
  /** The root manifest; undefined for an orphan blob. */
  root: string | undefined;
  manifests: string[];
  blobs: string[];
  /** Blobs its manifests reference that have no row yet (a fill in flight, or fetched later). */
  pending: string[];
  /** Bytes of its manifests and blobs (own and shared). */
  bytes: number;
  /** Bytes no other image holds: what removing it frees. */
  ownBytes: number;
  usedAt: number;
  createdAt: number;
  /** `repo:tag` names pointing at the root (or `repo@digest` links for a digest-only image). */
  names: string[];
  pinned: boolean;
  local: boolean;
}

export interface PlanOptions {
  now: number;
  graceMs: number;
  evictLocal: boolean;
  /** Digests that must stay (fills in flight). */
  inUse?: ReadonlySet<string>;
}

const NONE: string[] = [];

/** A blob no manifest references, as an image of its own. */
export function orphanImage(b: CachedObject, pinned: boolean, local: boolean): CacheImage {
  // Orphans share their empty lists: a cache of 100k unreferenced blobs is 100k of these.
  return { root: undefined, manifests: NONE, blobs: [b.digest], pending: NONE, bytes: b.size, ownBytes: b.size, usedAt: b.usedAt, createdAt: b.createdAt, names: NONE, pinned, local };
}

/** What a repository name looks like to a person: local namespaces lose the `_local/` prefix. */
export function displayRepo(repo: string): string {
  return repo.startsWith('_local/') ? repo.slice('_local/'.length) : repo;
}

/** Every image of the inventory, least recently used first. */
export async function cacheImages(inv: CacheInventory, now = Date.now()): Promise<CacheImage[]> {
  return (await analyze(inv, now)).images;
}

/** Loop steps between yields to the event loop (5000 held it 10-20 ms a turn beside 64 busy connections). */
const STEPS_PER_TURN = 1000;

/** The images, and for every digest how many images hold it and its size (the planner's counts). */
async function analyze(inv: CacheInventory, now: number): Promise<{ images: CacheImage[]; holders: Map<string, number>; size: (d: string) => number; pinned: ReadonlySet<string> }> {
  let steps = 0;
  const step = async (): Promise<void> => {
    if (++steps % STEPS_PER_TURN === 0) await new Promise((r) => setImmediate(r));
  };
  const manifests = new Map<string, CachedManifest>();
  for (const m of inv.manifests) {
    manifests.set(m.digest, m);
    await step();
  }
  const blobs = new Map<string, CachedObject>();
  for (const b of inv.blobs) {
    blobs.set(b.digest, b);
    await step();
  }
  const isChild = new Set<string>();
  for (const m of inv.manifests) for (const c of m.children) if (manifests.has(c)) isChild.add(c);

  const tagsOf = new Map<string, string[]>();
  for (const t of inv.tags) {
    await step();
    const list = tagsOf.get(t.digest) ?? [];
    list.push(`${displayRepo(t.repo)}:${t.tag}`);
    tagsOf.set(t.digest, list);
  }
  const pinnedRefs = new Set<string>();
  for (const p of inv.pins) {
    if (p.until !== undefined && p.until < now) continue;
    if (p.reference.includes(':')) pinnedRefs.add(p.reference);
    else {
      const tag = inv.tags.find((t) => t.repo === p.repo && t.tag === p.reference);
      if (tag !== undefined) pinnedRefs.add(tag.digest);
    }
  }

  const images: CacheImage[] = [];
  const holders = new Map<string, number>();
  const hold = (d: string): void => void holders.set(d, (holders.get(d) ?? 0) + 1);
  for (const m of inv.manifests) {
    await step();
    if (isChild.has(m.digest)) continue;
    const ms: string[] = [];
    const bs = new Set<string>();
    const pending: string[] = [];
    const visit = (d: string): void => {
      const row = manifests.get(d);
      if (row === undefined || ms.includes(d)) return;
      ms.push(d);
      for (const b of row.blobs) if (blobs.has(b)) bs.add(b);
      else pending.push(b);
      for (const c of row.children) visit(c);
    };
    visit(m.digest);
    let usedAt = 0;
    let createdAt = 0;
    let bytes = 0;
    for (const d of ms) {
      const row = manifests.get(d) as CachedObject;
      usedAt = Math.max(usedAt, row.usedAt);
      createdAt = Math.max(createdAt, row.createdAt);
      bytes += row.size;
      hold(d);
    }
    for (const d of bs) {
      const row = blobs.get(d) as CachedObject;
      usedAt = Math.max(usedAt, row.usedAt);
      bytes += row.size;
      hold(d);
    }
    images.push({
      root: m.digest,
      manifests: ms,
      blobs: [...bs],
      pending,
      bytes,
      ownBytes: 0,
      usedAt,
      createdAt,
      names: tagsOf.get(m.digest) ?? [],
      pinned: ms.some((d) => pinnedRefs.has(d)),
      local: ms.some((d) => inv.local.has(d)),
    });
  }
  for (const b of inv.blobs) {
    await step();
    if (holders.has(b.digest)) continue;
    images.push(orphanImage(b, pinnedRefs.has(b.digest), inv.local.has(b.digest)));
  }
  for (const img of images) {
    if (img.root === undefined) continue;
    await step();
    let own = 0;
    for (const d of img.manifests) if (holders.get(d) === 1) own += manifests.get(d)?.size ?? 0;
    for (const d of img.blobs) if (holders.get(d) === 1) own += blobs.get(d)?.size ?? 0;
    img.ownBytes = own;
  }
  images.sort((a, b) => a.usedAt - b.usedAt);
  return { images, holders, size: (d) => manifests.get(d)?.size ?? blobs.get(d)?.size ?? 0, pinned: pinnedRefs };
}

/** Whether the budget may remove `img` now. */
export function evictable(img: CacheImage, o: PlanOptions): boolean {
  if (img.pinned) return false;
  if (img.local && !o.evictLocal) return false;
  // The grace period is for new content; recent use only orders the images (LRU).
  if (img.createdAt > o.now - o.graceMs) return false;
  // In use: a fill of one of its blobs is in flight. That blob has no row yet, so it is among the
  // image's pending references, not its stored blobs.
  const inUse = o.inUse;
  if (inUse !== undefined && (img.pending.some((d) => inUse.has(d)) || img.blobs.some((d) => inUse.has(d)) || img.manifests.some((d) => inUse.has(d)))) return false;
  return true;
}

/**
 * The images to remove, least recently used first, until at least `bytesToFree` would be freed
 * (counting shared content once it has no holder left). Orphan blobs go in the same order.
 */
export async function planEviction(inv: CacheInventory, bytesToFree: number, o: PlanOptions, orphans?: AsyncIterable<CachedObject>): Promise<CacheImage[]> {
  const plan: CacheImage[] = [];
  for await (const img of evictionPlan(inv, bytesToFree, o, orphans)) plan.push(img);
  return plan;
}

/**
 * planEviction one image at a time, so the caller removes as it goes. With `orphans` (blobs no
 * manifest references, least recently used first: MetaStore.orphanBlobs page by page), `inv`
 * holds only referenced blobs (`inventory({ orphans: false })`) and the two orders are merged: the
 * server's sweep then never holds the unreferenced blobs of a large cache in memory.
 */
export async function* evictionPlan(inv: CacheInventory, bytesToFree: number, o: PlanOptions, orphans?: AsyncIterable<CachedObject>): AsyncGenerator<CacheImage> {
  const { images, holders, size, pinned } = await analyze(inv, o.now);
  let freed = 0;
  const release = (d: string): void => {
    const left = (holders.get(d) ?? 1) - 1;
    holders.set(d, left);
    if (left === 0) freed += size(d);
  };
  const stream = orphans?.[Symbol.asyncIterator]();
  let orphan: CachedObject | undefined = stream === undefined ? undefined : (await stream.next()).value;
  let i = 0;
  let steps = 0;
  while (freed < bytesToFree) {
    const img = images[i];
    if (orphan !== undefined && (img === undefined || orphan.usedAt < img.usedAt)) {
      const b = orphan;
      orphan = ((await (stream as AsyncIterator<CachedObject>).next()).value as CachedObject | undefined) ?? undefined;
      if (holders.has(b.digest)) continue; // referenced since the inventory: part of an image
      const one = orphanImage(b, pinned.has(b.digest), inv.local.has(b.digest));
      if (!evictable(one, o)) continue;
      freed += b.size;
      yield one;
      continue;
    }
    if (img === undefined) return;
    i++;
    if (++steps % STEPS_PER_TURN === 0) await new Promise((r) => setImmediate(r));
    if (!evictable(img, o)) continue;
    for (const d of img.manifests) release(d);
    for (const d of img.blobs) release(d);
    yield img;
  }
}

/** Pages of MetaStore.orphanBlobs as one stream, least recently used first. */
export async function* orphanStream(meta: Pick<MetaStore, 'orphanBlobs'>, pageSize = 1000): AsyncGenerator<CachedObject> {
  let after: { usedAt: number; digest: string } | undefined;
  for (;;) {
    const page = await meta.orphanBlobs(after, pageSize);
    yield* page;
    const last = page[page.length - 1];
    if (last === undefined || page.length < pageSize) return;
    after = { usedAt: last.usedAt, digest: last.digest };
  }
}

/** The name an operator reads for an image in a log line: its first tag, else its digest. */
export function imageName(img: CacheImage): string {
  return img.names[0] ?? img.root ?? img.blobs[0] ?? '?';
}
