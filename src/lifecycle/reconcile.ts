/**
 * Start-up reconciliation of the BlobStore and the MetaStore (DESIGN §5), run in the background
 * after the server listens, in slices that yield to the event loop between them (and stop when
 * the server begins to shut down: `stopped`):
 * - blob rows whose content is gone are forgotten;
 * - stored blobs with no row (a process killed between the commit and the row: issue 14, defect 5)
 *   get one. Content in the store was verified before it became visible, so it is adopted as it is;
 *   its repository links come back with the manifests that reference it.
 *   Only a process that died with the cache open can leave such blobs, so the store is listed only
 *   when one did (its note is still in the metadata and it is not alive), or when this cache was
 *   never reconciled; a cache whose processes all closed cleanly costs no listing.
 */
import { parseDigest, referencedDigests } from '../oci/index.ts';
import type { BlobStore } from '../store/index.ts';
import type { MetaStore } from '../meta/index.ts';

const SLICE = 200;

export interface ReconcileResult {
  forgotten: number;
  adopted: number;
  /** Why the store was listed; undefined when it was not. */
  scannedAfter: string | undefined;
  /** The process began to shut down first: the pass stopped where it was (it runs again at the next start). */
  stopped?: true;
}

/** Reconciles `store` with `meta`. `alive(owner)` tells whether the process with that owner token lives. */
export async function reconcile(store: BlobStore, meta: MetaStore, alive: (owner: string) => boolean, stopped: () => boolean = () => false): Promise<ReconcileResult> {
  // Rows a slice at a time as they are read: the cache's digests are never all in memory at once
  // unless the store must be listed below (before, every start held all of them for the pass).
  let forgotten = 0;
  let slice: string[] = [];
  const check = async (): Promise<void> => {
    const missing: string[] = [];
    for (const digest of slice) {
      let present: boolean;
      try {
        present = await store.has(parseDigest(digest));
      } catch {
        present = false;
      }
      if (!present) missing.push(digest);
    }
    slice = [];
    await meta.forgetBlobs(missing);
    forgotten += missing.length;
    await new Promise((r) => setImmediate(r));
  };
  for await (const d of meta.blobDigests()) {
    slice.push(d);
    if (slice.length < SLICE) continue;
    await check();
    if (stopped()) return { forgotten, adopted: 0, scannedAfter: undefined, stopped: true };
  }
  await check();
  const died = (await meta.openProcesses()).filter((owner) => !alive(owner));
  if (died.length === 0 && (await meta.filesReconciled())) return { forgotten, adopted: 0, scannedAfter: undefined };

  // Rows as they were at the start: one set lookup per blob. A blob not in it is asked about
  // again (knows), as its row may have been written since.
  const known = new Set<string>();
  for await (const d of meta.blobDigests()) known.add(d);
  for await (const d of meta.manifestDigests()) known.add(d);
  let adopted = 0;
  let found: Array<{ digest: string; size: number }> = [];
  const adopt = async (): Promise<void> => {
    await meta.adoptBlobs(found, Date.now());
    adopted += found.length;
    found = [];
  };
  for await (const page of store.list()) {
    if (stopped()) return { forgotten, adopted, scannedAfter: undefined, stopped: true };
    for (const digest of page) {
      if (known.has(digest) || (await meta.knows(digest))) continue;
      const size = await store.stat(parseDigest(digest)).catch(() => undefined);
      if (size === undefined) continue; // removed meanwhile
      found.push({ digest, size });
      if (found.length >= SLICE) await adopt();
    }
    await new Promise((r) => setImmediate(r));
  }
  await adopt();
  await meta.setFilesReconciled(true);
  for (const owner of died) await meta.processClosed(owner);
  return { forgotten, adopted, scannedAfter: died.length > 0 ? `${died.length} process(es) that died with the cache open` : 'first start of this cache' };
}

/**
 * Indexes the blob references of manifests recorded before schema 4 (the cache lifecycle counts
 * them), reading each manifest's bytes from the store, a slice at a time. Nothing to do (one
 * lookup) once done.
 */
export async function indexBlobRefs(store: BlobStore, meta: MetaStore, stopped: () => boolean = () => false): Promise<number> {
  if (!(await meta.blobRefsPending())) return 0;
  const digests: string[] = [];
  for await (const d of meta.manifestDigests()) digests.push(d);
  let indexed = 0;
  for (let i = 0; i < digests.length; i += SLICE) {
    await new Promise((r) => setImmediate(r));
    if (stopped()) return indexed;
    const refs = new Map<string, string[]>();
    for (const d of digests.slice(i, i + SLICE)) {
      const bytes = await store.read(parseDigest(d)).catch(() => undefined);
      if (bytes !== undefined) refs.set(d, referencedDigests(bytes).blobs);
    }
    await meta.putBlobRefs(refs, i + SLICE >= digests.length);
    indexed += refs.size;
  }
  if (digests.length === 0) await meta.putBlobRefs(new Map(), true);
  return indexed;
}
