/**
 * Checks a pushed manifest against the type it claims (OCI image-spec manifest.md, image-index.md,
 * descriptor.md; Docker image manifest v2 schema 2): the Content-Type and the body's own
 * `mediaType` must agree, the fields its type requires must be there with the right shapes, and
 * an image manifest must not also be an index (or the other way round), which clients refuse as
 * ambiguous. Upstream manifests are not checked here: they are stored byte for byte as the
 * registry serves them (their digest is what is verified).
 */
import { RegistryError } from './errors.ts';
import { parseDigest } from './digest.ts';
import { DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, isIndexType, mediaTypeOf, parseManifestJson, type ManifestJson } from './media-types.ts';

function invalid(message: string): RegistryError {
  return new RegistryError('MANIFEST_INVALID', message);
}

/** Throws MANIFEST_INVALID unless `d` is a descriptor (mediaType, digest, size) at `where`. */
function checkDescriptor(d: unknown, where: string): void {
  if (typeof d !== 'object' || d === null || Array.isArray(d)) throw invalid(`${where} must be a descriptor object with mediaType, digest and size`);
  const { mediaType, digest, size } = d as { mediaType?: unknown; digest?: unknown; size?: unknown };
  if (typeof mediaType !== 'string' || mediaType === '') throw invalid(`${where}.mediaType must be a media type string`);
  if (typeof digest !== 'string') throw invalid(`${where}.digest must be a digest string (sha256:<64 hex>)`);
  try {
    parseDigest(digest);
  } catch {
    throw invalid(`${where}.digest "${digest.slice(0, 80)}" is not a valid digest`);
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw invalid(`${where}.size must be a whole number of bytes`);
}

/**
 * The media type of a pushed manifest, after checking it is what it says (module comment).
 * Throws RegistryError MANIFEST_INVALID naming the field that is wrong.
 */
export function checkPushedManifest(contentType: string | undefined, bytes: Uint8Array): { mediaType: string; manifest: ManifestJson } {
  const manifest = parseManifestJson(bytes);
  if (manifest === undefined) throw invalid('the manifest is not a JSON object');
  const declared = contentType?.split(';')[0]?.trim().toLowerCase();
  const own = manifest.mediaType;
  if (own !== undefined && typeof own !== 'string') throw invalid('mediaType must be a string');
  const mediaType = mediaTypeOf(declared, manifest);
  if (mediaType === undefined) {
    throw invalid(`not a supported manifest (Content-Type ${declared ?? 'none'}, mediaType ${own ?? 'none'}): push an OCI image manifest or index, or a Docker schema 2 manifest or list`);
  }
  if (own !== undefined && own !== mediaType) {
    throw invalid(
      mediaType === declared
        ? `the Content-Type is ${declared} but the manifest's mediaType is ${own}: they must agree`
        : `the manifest's mediaType ${own} is not a supported manifest type (its shape is that of ${mediaType})`,
    );
  }
  if (manifest.schemaVersion !== 2) throw invalid('schemaVersion must be 2');
  if ((mediaType === DOCKER_MANIFEST || mediaType === DOCKER_MANIFEST_LIST) && own !== mediaType) {
    throw invalid(`a Docker ${mediaType === DOCKER_MANIFEST ? 'manifest' : 'manifest list'} must carry "mediaType": "${mediaType}"`);
  }
  if (isIndexType(mediaType)) {
    if (!Array.isArray(manifest.manifests)) throw invalid(`an index (${mediaType}) must have a manifests array`);
    if (manifest.config !== undefined || manifest.layers !== undefined) throw invalid('an index must not have config or layers: that shape is an image manifest (ambiguous)');
    manifest.manifests.forEach((m, i) => checkDescriptor(m, `manifests[${i}]`));
  } else {
    if (manifest.manifests !== undefined) throw invalid('an image manifest must not have manifests: that shape is an index (ambiguous)');
    checkDescriptor(manifest.config, 'config');
    if (!Array.isArray(manifest.layers)) throw invalid(`an image manifest (${mediaType}) must have a layers array`);
    manifest.layers.forEach((l, i) => checkDescriptor(l, `layers[${i}]`));
  }
  if (manifest.subject !== undefined) checkDescriptor(manifest.subject, 'subject');
  return { mediaType, manifest };
}
