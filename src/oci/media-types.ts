/** Manifest media types (OCI image-spec media-types.md; Docker image manifest v2 schema 2). */

export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_SCHEMA1 = 'application/vnd.docker.distribution.manifest.v1+json';
export const DOCKER_SCHEMA1_SIGNED = 'application/vnd.docker.distribution.manifest.v1+prettyjws';

/** The Accept list sent upstream for every manifest request (schema 1 deliberately absent). */
export const MANIFEST_ACCEPT = [OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST].join(', ');

/** Manifest media types regmirror stores and serves. */
export const SUPPORTED_MANIFEST_TYPES: ReadonlySet<string> = new Set([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST]);

/** True for index / manifest-list media types. */
export function isIndexType(mediaType: string): boolean {
  return mediaType === OCI_INDEX || mediaType === DOCKER_MANIFEST_LIST;
}

/** Largest manifest regmirror accepts (containerd and distribution use 4 MiB). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/**
 * Media type of a manifest body: the upstream's Content-Type when it is a supported manifest type,
 * else the body's own `mediaType` field. Returns undefined when neither names a supported type.
 * The body is parsed only when the Content-Type does not decide.
 */
export function manifestMediaType(contentType: string | undefined, body: Uint8Array): string | undefined {
  const ct = contentType?.split(';')[0]?.trim();
  if (ct !== undefined && SUPPORTED_MANIFEST_TYPES.has(ct)) return ct;
  return mediaTypeOf(ct, parseManifestJson(body));
}

/**
 * The rule behind manifestMediaType, on an already parsed body and a bare Content-Type (no
 * parameters): a supported Content-Type, else a supported `mediaType` field, else (schema 2 only,
 * as OCI manifests may omit mediaType) what the shape says. Undefined for schema 1 and the rest.
 */
export function mediaTypeOf(ct: string | undefined, parsed: ManifestJson | undefined): string | undefined {
  if (ct !== undefined && SUPPORTED_MANIFEST_TYPES.has(ct)) return ct;
  const mt = parsed?.mediaType;
  if (typeof mt === 'string' && SUPPORTED_MANIFEST_TYPES.has(mt)) return mt;
  if (ct === DOCKER_SCHEMA1 || ct === DOCKER_SCHEMA1_SIGNED || parsed?.schemaVersion === 1) return undefined;
  if (parsed?.schemaVersion === 2) {
    if (Array.isArray(parsed.manifests)) return OCI_INDEX;
    if (parsed.config !== undefined && Array.isArray(parsed.layers)) return OCI_MANIFEST;
  }
  return undefined;
}

export interface ManifestJson {
  schemaVersion?: unknown;
  mediaType?: unknown;
  config?: { digest?: unknown; size?: unknown };
  layers?: Array<{ digest?: unknown; size?: unknown; mediaType?: unknown; urls?: unknown }>;
  manifests?: Array<{ digest?: unknown; mediaType?: unknown; platform?: unknown }>;
  subject?: { digest?: unknown };
}

/** Parses a manifest body as JSON; undefined when it is not a JSON object. */
export function parseManifestJson(body: Uint8Array): ManifestJson | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as ManifestJson) : undefined;
  } catch {
    return undefined;
  }
}

/** Digests a manifest refers to: config + layers for an image, child manifests for an index. */
export function referencedDigests(body: Uint8Array): { blobs: string[]; manifests: string[] } {
  const m = parseManifestJson(body);
  const blobs: string[] = [];
  const manifests: string[] = [];
  if (m === undefined) return { blobs, manifests };
  if (typeof m.config?.digest === 'string') blobs.push(m.config.digest);
  for (const layer of m.layers ?? []) if (typeof layer.digest === 'string') blobs.push(layer.digest);
  for (const child of m.manifests ?? []) if (typeof child.digest === 'string') manifests.push(child.digest);
  return { blobs, manifests };
}

/** "os/arch[/variant]" of an index entry's platform, if it has one. */
export function platformOf(p: unknown): string | undefined {
  if (typeof p !== 'object' || p === null) return undefined;
  const { os, architecture, variant } = p as { os?: unknown; architecture?: unknown; variant?: unknown };
  if (typeof os !== 'string' || typeof architecture !== 'string') return undefined;
  return typeof variant === 'string' ? `${os}/${architecture}/${variant}` : `${os}/${architecture}`;
}
