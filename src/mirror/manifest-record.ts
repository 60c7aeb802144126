/**
 * Recording a stored manifest: metadata row, links of everything it references to its repository,
 * index children with platforms, and its provenance. One function for every way content arrives
 * (upstream fetch, push, import), so they cannot drift apart.
 */
import { parseManifestJson, platformOf, referencedDigests } from '../oci/index.ts';
import type { ChildManifest, ProvenanceSource, SqliteMetaStore, SqliteProvenanceStore } from '../meta/index.ts';

export function indexChildren(body: Uint8Array): ChildManifest[] {
  const children: ChildManifest[] = [];
  for (const m of parseManifestJson(body)?.manifests ?? []) {
    if (typeof m.digest !== 'string') continue;
    const child: ChildManifest = { digest: m.digest };
    if (typeof m.mediaType === 'string') child.mediaType = m.mediaType;
    const platform = platformOf(m.platform);
    if (platform !== undefined) child.platform = platform;
    children.push(child);
  }
  return children;
}

/** Records manifest `digest` (already stored as a blob file) in `repo`, with its provenance. */
export function recordManifest(
  meta: SqliteMetaStore,
  provenance: SqliteProvenanceStore,
  repo: string,
  digest: string,
  body: Uint8Array,
  src: ProvenanceSource,
  now: number,
): void {
  const refs = referencedDigests(body);
  meta.database.transaction(() => {
    meta.putManifest(repo, digest, src.mediaType, body.byteLength, [...refs.blobs, ...refs.manifests], now);
    provenance.record(repo, digest, src, now, indexChildren(body));
  })();
}
