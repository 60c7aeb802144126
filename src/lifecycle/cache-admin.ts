/**
 * What `regmirror cache ...` does, over the two store interfaces (so it works beside a running
 * server on the same data dir, which sees the effect at its next request: the metadata's
 * generation changes). Every removal is logged with image, digest, bytes and reason (evictor.ts).
 */
import { parseDigest } from '../oci/index.ts';
import { referenceOf } from '../routing/index.ts';
import type { CachedObject, MetaStore, Pin } from '../meta/index.ts';
import type { BlobStore } from '../store/index.ts';
import { cacheImages, displayRepo, orphanImage, orphanStream, type CacheImage } from './cache-plan.ts';
import { hashStored } from './verify-local.ts';
import { inventorySizes, removeImages, type RemovalDeps } from './evictor.ts';

/** An image reference resolved for the cache: repository and tag or digest. */
export interface CacheRef {
  repo: string;
  tag?: string;
  digest?: string;
}

export async function listImages(meta: MetaStore, registry?: string): Promise<CacheImage[]> {
  const images = await cacheImages(await meta.inventory());
  if (registry === undefined) return images;
  return images.filter((i) => i.names.some((n) => n.startsWith(`${registry}/`)));
}

/** Bytes by registry (the first path segment of an image's first name; unnamed content apart). */
export async function diskUsage(meta: MetaStore): Promise<{ total: number; byRegistry: Record<string, { images: number; bytes: number }> }> {
  const images = await listImages(meta);
  const byRegistry: Record<string, { images: number; bytes: number }> = {};
  for (const img of images) {
    const first = img.names[0];
    const key = first === undefined ? (img.root === undefined ? '(unreferenced blobs)' : '(untagged)') : (first.split('/')[0] ?? first);
    const e = (byRegistry[key] ??= { images: 0, bytes: 0 });
    e.images++;
    e.bytes += img.ownBytes;
  }
  return { total: await meta.cacheBytes(), byRegistry };
}

/** The root digest `ref` names in the cache; undefined when it is not cached. */
async function resolveRoot(meta: MetaStore, ref: CacheRef): Promise<string | undefined> {
  if (ref.digest !== undefined) return (await meta.getManifest(ref.digest)) === undefined ? undefined : ref.digest;
  return (await meta.getTag(ref.repo, referenceOf(ref)))?.digest;
}

/** Pins the image `ref` names (its tag, or its digest). */
export function pinImage(meta: MetaStore, ref: CacheRef, source: Pin['source']): Promise<void> {
  return meta.pin({ repo: ref.repo, reference: referenceOf(ref), source });
}

/** Removes the pin of `ref`; false when it was not pinned. */
export function unpinImage(meta: MetaStore, ref: CacheRef): Promise<boolean> {
  return meta.unpin(ref.repo, referenceOf(ref));
}

/** An RFC 3339 time (to the second) for listings, or '-' for none. */
export function isoTime(ms: number): string {
  return ms > 0 ? new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z') : '-';
}

/** One image as `cache ls --json` and the API's /cache/images list it (the same fields and units). */
export function imageSummary(i: CacheImage): Record<string, unknown> {
  return { names: i.names, digest: i.root ?? i.blobs[0], kind: i.root === undefined ? 'blob' : 'image', bytes: i.bytes, ownBytes: i.ownBytes, lastUsed: isoTime(i.usedAt), created: isoTime(i.createdAt), pinned: i.pinned, local: i.local, manifests: i.manifests.length, blobs: i.blobs.length };
}

/**
 * Removes the image `ref` names (its manifests and the blobs no other image holds) and its tag.
 * Returns undefined when it is not cached.
 */
export async function removeImage(deps: RemovalDeps, ref: CacheRef): Promise<{ image: CacheImage; bytes: number } | undefined> {
  const root = await resolveRoot(deps.meta, ref);
  if (root === undefined) return undefined;
  const inv = await deps.meta.inventory();
  const images = await cacheImages(inv);
  // The image whose closure holds the digest (a platform manifest of an index: that index).
  const image = images.find((i) => i.root === root) ?? images.find((i) => i.manifests.includes(root));
  if (image === undefined) return undefined;
  // Content other images hold stays: removeContent re-checks references in its transaction.
  const r = await removeImages(deps, await inventorySizes(inv), [image], 'rm', Infinity);
  if (ref.tag !== undefined) await deps.meta.deleteTag(ref.repo, ref.tag);
  return { image, bytes: r.bytes };
}

/** A file without a row is left alone this long whatever evict_grace says (a commit's row follows its bytes). */
const STRAY_MIN_AGE_MS = 60_000;

export interface GcReport {
  /** Blob rows no manifest references (older than the grace period). */
  orphanBlobs: Array<{ digest: string; bytes: number }>;
  /** Rows whose bytes are missing (forgotten). */
  missing: string[];
  /** Stored bytes with no row: referenced ones are adopted, the rest removed. */
  strayFiles: Array<{ digest: string; bytes: number; action: 'adopted' | 'removed' }>;
  bytes: number;
  dryRun: boolean;
}

/**
 * Garbage collection: what no image holds. With `dryRun`, reports what it would remove.
 * Content younger than `graceMs` stays (a push uploads blobs before its manifest).
 */
export async function collectGarbage(deps: RemovalDeps, o: { graceMs: number; dryRun: boolean; now?: number }): Promise<GcReport> {
  const { meta, store } = deps;
  const now = o.now ?? Date.now();
  await meta.flushReads();
  // Referenced content only: unreferenced blobs are read a page at a time below.
  const inv = await meta.inventory({ orphans: false });
  const referenced = new Set<string>();
  for (const m of inv.manifests) for (const b of m.blobs) referenced.add(b);
  const report: GcReport = { orphanBlobs: [], missing: [], strayFiles: [], bytes: 0, dryRun: o.dryRun };
  // Rows first, then the store's listing (one pass over its folders, not a stat per row): bytes
  // are written before their row, so a row seen here has its file listed unless it is missing.
  const known = new Set<string>();
  const rows = [...inv.blobs, ...inv.manifests];
  for (const x of rows) known.add(x.digest);
  const orphans: CachedObject[] = [];
  for await (const b of orphanStream(meta, 2000)) {
    known.add(b.digest);
    orphans.push(b);
  }
  const stored = new Set<string>();
  const stray: string[] = [];
  for await (const page of store.list()) {
    for (const d of page) {
      stored.add(d);
      if (!known.has(d)) stray.push(d);
    }
  }
  const doomed: CacheImage[] = [];
  for (const b of orphans) {
    if (!stored.has(b.digest)) {
      report.missing.push(b.digest);
      continue;
    }
    if (b.createdAt < now - o.graceMs && b.usedAt < now - o.graceMs) {
      report.orphanBlobs.push({ digest: b.digest, bytes: b.size });
      doomed.push(orphanImage(b, false, inv.local.has(b.digest)));
    }
  }
  for (const x of rows) if (!stored.has(x.digest)) report.missing.push(x.digest);
  // A row whose file was deleted and written again while the listing ran is not missing: ask again.
  const stillMissing: string[] = [];
  for (const d of report.missing) if (!(await store.has(parseDigest(d)))) stillMissing.push(d);
  report.missing = stillMissing;
  for (const d of stray) {
    if (await meta.knows(d)) continue;
    // A fill commits its bytes a moment before its row: stray means older than the grace period.
    const written = await store.modifiedAt(parseDigest(d));
    if (written === undefined || (written > now - Math.max(o.graceMs, STRAY_MIN_AGE_MS) && !referenced.has(d))) continue;
    const size = (await store.stat(parseDigest(d))) ?? 0;
    report.strayFiles.push({ digest: d, bytes: size, action: referenced.has(d) ? 'adopted' : 'removed' });
  }
  report.bytes = report.orphanBlobs.reduce((a, x) => a + x.bytes, 0) + report.strayFiles.filter((f) => f.action === 'removed').reduce((a, f) => a + f.bytes, 0);
  if (o.dryRun) return report;

  if (report.missing.length > 0) await forgetRows(meta, report.missing);
  const adopt = report.strayFiles.filter((f) => f.action === 'adopted').map((f) => ({ digest: f.digest, size: f.bytes }));
  await meta.adoptBlobs(adopt, now);
  for (const f of report.strayFiles) {
    if (f.action === 'removed' && !(await meta.knows(f.digest))) {
      await store.delete(parseDigest(f.digest));
      deps.log.info({ image: f.digest, digest: f.digest, bytes: f.bytes, reason: 'gc' }, 'removed from the cache');
    }
  }
  // Each unreferenced blob is an image of its own: no need to work out every other image.
  await removeImages(deps, await inventorySizes(inv), doomed, 'gc', now - o.graceMs, 2000);
  return report;
}

/**
 * Forgets the rows of objects whose bytes are gone or set aside (missing, quarantined): a blob's
 * row, and a manifest with everything that hangs on it (tags, links, children, references,
 * provenance), as removing it would, so no tag is left pointing at a manifest the cache no longer
 * has (a child another index still lists keeps those and loses only its row).
 */
async function forgetRows(meta: MetaStore, digests: readonly string[]): Promise<void> {
  await meta.forgetBlobs(digests);
  for (const d of digests) {
    if ((await meta.removeContent([d], [], Infinity)).manifests.length === 0) await meta.forgetManifest(d);
  }
}

export interface VerifyReport {
  checked: number;
  bytes: number;
  corrupt: Array<{ digest: string; kind: 'manifest' | 'blob'; actual: string }>;
  missing: Array<{ digest: string; kind: 'manifest' | 'blob' }>;
  repaired: boolean;
}

/**
 * Re-hashes every stored manifest and blob. With `repair`, a corrupt one is quarantined (moved
 * aside in the store, its row forgotten) so the next pull fetches it again, and a missing one's
 * row is forgotten.
 */
export async function verifyCache(deps: RemovalDeps, o: { repair: boolean }): Promise<VerifyReport> {
  const { meta, store, log } = deps;
  const inv = await meta.inventory();
  const report: VerifyReport = { checked: 0, bytes: 0, corrupt: [], missing: [], repaired: o.repair };
  const all: Array<{ digest: string; kind: 'manifest' | 'blob'; size: number }> = [
    ...inv.manifests.map((m) => ({ digest: m.digest, kind: 'manifest' as const, size: m.size })),
    ...inv.blobs.map((b) => ({ digest: b.digest, kind: 'blob' as const, size: b.size })),
  ];
  for (const x of all) {
    const d = parseDigest(x.digest);
    const actual = await hashStored(store, d);
    report.checked++;
    if (actual === undefined) {
      report.missing.push({ digest: x.digest, kind: x.kind });
      continue;
    }
    report.bytes += x.size;
    if (actual !== x.digest) report.corrupt.push({ digest: x.digest, kind: x.kind, actual });
  }
  if (!o.repair) return report;
  for (const c of report.corrupt) {
    const where = await store.quarantine(parseDigest(c.digest));
    await forgetRows(meta, [c.digest]);
    log.warn({ image: c.digest, digest: c.digest, bytes: inv.blobs.find((b) => b.digest === c.digest)?.size ?? 0, reason: 'repair', quarantined: where, actual: c.actual }, 'quarantined a corrupt cached object; the next pull fetches it again');
  }
  await forgetRows(meta, report.missing.map((m) => m.digest));
  return report;
}

export { displayRepo };
