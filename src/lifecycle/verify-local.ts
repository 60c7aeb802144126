/**
 * Local verification: re-hashes a cached image — its manifest (index children too) and every cached
 * blob they reference — through the two store interfaces, and names each missing or corrupt one.
 */
import { isIndexType, newHasher, parseDigest, parseManifestJson, referencedDigests, type Digest } from '../oci/index.ts';
import type { BlobStore } from '../store/index.ts';
import type { MetaStore } from '../meta/index.ts';

export interface LocalCheck {
  digest: string;
  kind: 'manifest' | 'blob';
  state: 'ok' | 'corrupt' | 'missing';
  detail?: string;
}

/** The digest `d`'s stored bytes hash to; undefined when the store does not have it. */
export async function hashStored(store: BlobStore, d: Digest): Promise<string | undefined> {
  const reader = await store.open(d);
  if (reader === undefined) return undefined;
  const h = newHasher(d.algorithm);
  for await (const chunk of reader.stream(0, reader.size)) h.update(chunk as Buffer);
  return `${d.algorithm}:${h.digest('hex')}`;
}

/** Re-hashes manifest `top` and everything cached under it. `ok`: the manifest is intact and nothing is corrupt. */
export async function verifyStored(store: BlobStore, meta: MetaStore, top: string): Promise<{ checks: LocalCheck[]; ok: boolean }> {
  const checks: LocalCheck[] = [];
  const seen = new Set<string>();
  const check = async (digest: string, kind: 'manifest' | 'blob'): Promise<Buffer | undefined> => {
    if (seen.has(digest)) return undefined;
    seen.add(digest);
    const d = parseDigest(digest);
    const actual = await hashStored(store, d);
    if (actual === undefined) {
      checks.push({ digest, kind, state: 'missing', detail: 'not cached' });
      return undefined;
    }
    if (actual !== digest) {
      checks.push({ digest, kind, state: 'corrupt', detail: `the cached bytes hash to ${actual}` });
      return undefined;
    }
    checks.push({ digest, kind, state: 'ok' });
    return kind === 'manifest' ? store.read(d) : undefined;
  };
  const walk = async (digest: string): Promise<void> => {
    const bytes = await check(digest, 'manifest');
    if (bytes === undefined) return;
    const refs = referencedDigests(bytes);
    const mt = parseManifestJson(bytes)?.mediaType;
    if ((typeof mt === 'string' && isIndexType(mt)) || refs.manifests.length > 0) {
      for (const child of refs.manifests) if ((await meta.getManifest(child)) !== undefined) await walk(child);
    }
    for (const b of refs.blobs) await check(b, 'blob');
  };
  await walk(top);
  return { checks, ok: checks[0]?.state === 'ok' && checks.every((c) => c.state !== 'corrupt') };
}
