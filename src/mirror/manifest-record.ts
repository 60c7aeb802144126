/**
 * Recording a stored manifest: metadata row, links of everything it references to its repository,
 * index children with platforms, and its provenance. One function for every way content arrives
 * (upstream fetch, push, import), so they cannot drift apart.
 */
import { parseManifestJson, platformOf, referencedDigests } from '../oci/index.ts';
import type { ChildManifest, ManifestEntry, ProvenanceSource } from '../meta/index.ts';

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

/**
 * The MetaStore entry for manifest `digest` (already stored as a blob) in `repo`: everything it
 * references, its index children, its provenance.
 */
export function manifestEntry(repo: string, digest: string, body: Uint8Array, src: ProvenanceSource): ManifestEntry {
  const refs = referencedDigests(body);
  return { repo, digest, size: body.byteLength, references: [...refs.blobs, ...refs.manifests], blobs: refs.blobs, children: indexChildren(body), provenance: src };
}
