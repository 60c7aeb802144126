/**
 * The metadata-scale cache of the benchmark (phases 7 and 8), as a long-running mirror's would
 * look: 100k small blob files with their rows (no manifest references them) and 20k tags, each on
 * a manifest of its own, all written an hour ago (older than any evict_grace).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SqliteMetaStore } from '../../src/meta/index.ts';
import { FsBlobStore, metaDbPath } from '../../src/store/index.ts';
import { parseDigest } from '../../src/oci/index.ts';
import { MT } from '../helpers/fixtures.ts';

export interface ScaleCache {
  /** Blob digests and sizes. */
  blobRows: Array<[string, number]>;
  /** The tags (t0 ... t19999) and their manifests. */
  tagFill: Array<{ tag: string; digest: string; bytes: Buffer }>;
  /** Bytes of every blob and manifest. */
  bytes: number;
}

/** The cache's contents without writing it (deterministic: what buildScaleCache writes). */
export function scaleCacheOf(blobs = 100_000, tags = 20_000): ScaleCache {
  const blobRows: Array<[string, number]> = [];
  for (let i = 0; i < blobs; i++) {
    const content = Buffer.from(`blob-${i}`);
    blobRows.push([`sha256:${createHash('sha256').update(content).digest('hex')}`, content.length]);
  }
  const tagFill: Array<{ tag: string; digest: string; bytes: Buffer }> = [];
  for (let i = 0; i < tags; i++) {
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociManifest, config: { mediaType: MT.ociConfig, digest: `sha256:${'0'.repeat(64)}`, size: 2 }, layers: [], annotations: { n: String(i) } }));
    tagFill.push({ tag: `t${i}`, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, bytes });
  }
  const bytes = blobRows.reduce((a, [, size]) => a + size, 0) + tagFill.reduce((a, t) => a + t.bytes.length, 0);
  return { blobRows, tagFill, bytes };
}

export async function buildScaleCache(dataDir: string, blobs = 100_000, tags = 20_000): Promise<ScaleCache> {
  const store = new FsBlobStore(dataDir);
  await store.init();
  const meta = SqliteMetaStore.open(metaDbPath(dataDir));
  const now = Date.now() - 3600_000;
  const cache = scaleCacheOf(blobs, tags);
  const { blobRows, tagFill } = cache;
  for (const [i, [d]] of blobRows.entries()) {
    const hex = d.slice('sha256:'.length);
    const dir = join(dataDir, 'blobs', 'sha256', hex.slice(0, 2));
    if (i < 256 || !existsSync(dir)) mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, hex), `blob-${i}`);
  }
  await meta.transaction(async (tx) => {
    for (const [i, [d, size]] of blobRows.entries()) await tx.putBlob(`gcr.io/scale/r${i % 1000}`, d, size, now);
  });
  for (const t of tagFill) await store.put(parseDigest(t.digest), t.bytes);
  await meta.transaction(async (tx) => {
    for (const t of tagFill) {
      const provenance = { registry: 'gcr.io', repository: 'scale/app', mediaType: MT.ociManifest, size: t.bytes.length, source: 'upstream' as const };
      await tx.putManifest({ repo: 'gcr.io/scale/app', digest: t.digest, size: t.bytes.length, references: [], blobs: [], children: [], provenance }, now);
      await tx.putTag('gcr.io/scale/app', t.tag, t.digest, now);
    }
  });
  await meta.close();
  return cache;
}
