/**
 * The push half of the distribution API, for local namespaces only (a `[[namespace]]` with no
 * registry): blob uploads (monolithic, chunked, resumable, cross-repository mount), manifest PUT
 * with reference checks, and DELETE of tags, manifests and blobs. Mirrored registries stay
 * read-only: their content must be byte-identical to the upstream's. Authorization is the
 * server's job; this module decides what a push means for the cache.
 */
import type { Readable } from 'node:stream';
import {
  MAX_MANIFEST_BYTES,
  RegistryError,
  checkPushedManifest,
  digestOf,
  isIndexType,
  parseDigest,
  type Digest,
} from '../oci/index.ts';
import { FsUploadStore, type BlobStore } from '../store/index.ts';
import type { MetaStore } from '../meta/index.ts';
import type { Route } from '../routing/index.ts';
import type { Logger } from '../log/index.ts';
import { manifestEntry } from './manifest-record.ts';
import { storageUnavailable } from './upstream-errors.ts';

export interface PusherDeps {
  store: BlobStore;
  uploads: FsUploadStore;
  meta: MetaStore;
  log: Logger;
  /** Configured local namespaces now (a reload may change them), for the error that tells a client where it may push. */
  localNamespaces: () => readonly string[];
  now?: () => number;
}

/** What the server sends back for an upload step. */
export type UploadAnswer =
  | { kind: 'created'; digest: string }
  | { kind: 'accepted'; id: string; size: number };

/** Layers a manifest may reference without the registry holding them (foreign / non-distributable). */
function isForeign(layer: { mediaType?: unknown; urls?: unknown }): boolean {
  return (typeof layer.mediaType === 'string' && /foreign|nondistributable/.test(layer.mediaType)) || Array.isArray(layer.urls);
}

export class Pusher {
  private readonly now: () => number;

  constructor(private readonly deps: PusherDeps) {
    this.now = deps.now ?? Date.now;
  }

  /** Refuses writes outside local namespaces, naming where pushes go. */
  assertWritable(route: Route): void {
    if (route.registry === undefined) return;
    const local = this.deps.localNamespaces();
    const where = local.length === 0
      ? 'this mirror has no local namespace: add a [[namespace]] with a name and no registry to mirror.toml'
      : `push into a local namespace instead (${local.map((n) => `/v2/${n}/...`).join(', ')})`;
    throw new RegistryError('DENIED', `${route.registry} is mirrored read-only: its content must stay byte-identical to the upstream's; ${where}`, { detail: { registry: route.registry } });
  }

  /** The upload `id` of `repo`; throws UploadError unknown for another repository's or none. */
  private async session(id: string, repo: string): Promise<void> {
    const rec = await this.deps.meta.getUpload(id);
    if (rec?.repo !== repo) throw FsUploadStore.unknown(id);
  }

  /**
   * Removes uploads that have not moved for `abandonAfterMs`: their bytes and their records, and
   * bytes left without a record. Returns how many uploads were removed.
   */
  async sweepUploads(abandonAfterMs: number): Promise<number> {
    const before = this.now() - abandonAfterMs;
    const idle = await this.deps.meta.uploadsIdleSince(before);
    for (const id of idle) {
      await this.deps.uploads.remove(id);
      await this.deps.meta.deleteUpload(id);
    }
    const stray = await this.deps.uploads.removeStray(before, async (id) => (await this.deps.meta.getUpload(id)) !== undefined);
    return idle.length + stray;
  }

  private linked(repo: string, digest: string): Promise<boolean> {
    return this.deps.meta.hasLink(repo, digest);
  }

  private storeBlobRow(repo: string, digest: string, size: number): Promise<void> {
    return this.deps.meta.putBlob(repo, digest, size, this.now());
  }

  // ------------------------------------------------------------- uploads

  /**
   * POST .../blobs/uploads/: a mount (`mount` + `from` of a repository the caller may read, which
   * holds the blob), a monolithic upload (`digest` with the body), or a new upload session.
   */
  async startUpload(route: Route, q: { digest?: string; mount?: string; fromRoute?: Route }, body: Readable): Promise<UploadAnswer> {
    this.assertWritable(route);
    if (q.mount !== undefined) {
      const d = parseDigest(q.mount);
      const from = q.fromRoute;
      const size = from !== undefined && (await this.linked(from.localRepo, d.value)) ? await this.deps.store.stat(d) : undefined;
      if (size !== undefined) {
        body.resume();
        await this.storeBlobRow(route.localRepo, d.value, size);
        this.deps.log.info({ repo: route.localRepo, digest: d.value, from: from?.localRepo }, 'blob mounted');
        return { kind: 'created', digest: d.value };
      }
      // Not mountable: the spec says to fall back to a regular upload session.
    }
    const id = await this.deps.uploads.create().catch((e: unknown) => {
      throw storageUnavailable(e);
    });
    await this.deps.meta.putUpload(id, route.localRepo, this.now());
    if (q.digest !== undefined) {
      const d = parseDigest(q.digest);
      try {
        return { kind: 'created', digest: await this.finish(route, id, d, body) };
      } catch (e) {
        // A monolithic upload has no session the client could retry: discard it now.
        await this.cancelUpload(route, id).catch(() => undefined);
        throw e;
      }
    }
    body.resume();
    return { kind: 'accepted', id, size: 0 };
  }

  /** PATCH: one chunk; `start` from Content-Range when the client sent it. */
  async patchUpload(route: Route, id: string, body: Readable, start?: number): Promise<UploadAnswer> {
    this.assertWritable(route);
    await this.session(id, route.localRepo);
    const size = await this.deps.uploads.append(id, body, start);
    await this.deps.meta.touchUpload(id, this.now());
    return { kind: 'accepted', id, size };
  }

  /** GET: how much of the upload the mirror has (to resume). */
  async uploadStatus(route: Route, id: string): Promise<UploadAnswer> {
    this.assertWritable(route);
    await this.session(id, route.localRepo);
    return { kind: 'accepted', id, size: await this.deps.uploads.size(id) };
  }

  /** PUT ?digest=: the last chunk (maybe empty), then verify and commit. */
  async finishUpload(route: Route, id: string, digest: string | undefined, body: Readable): Promise<UploadAnswer> {
    this.assertWritable(route);
    if (digest === undefined) throw new RegistryError('DIGEST_INVALID', 'finishing an upload needs ?digest=<algorithm>:<hex> of the whole blob');
    return { kind: 'created', digest: await this.finish(route, id, parseDigest(digest), body) };
  }

  async cancelUpload(route: Route, id: string): Promise<void> {
    this.assertWritable(route);
    await this.session(id, route.localRepo);
    await this.deps.uploads.remove(id);
    await this.deps.meta.deleteUpload(id);
  }

  private async finish(route: Route, id: string, d: Digest, body: Readable): Promise<string> {
    await this.session(id, route.localRepo);
    const size = await this.deps.uploads.finish(id, d, body);
    await this.deps.meta.transaction(async (tx) => {
      await tx.deleteUpload(id);
      await tx.putBlob(route.localRepo, d.value, size, this.now());
    });
    this.deps.log.info({ repo: route.localRepo, digest: d.value, bytes: size }, 'blob pushed');
    return d.value;
  }

  // ------------------------------------------------------------- manifests

  /**
   * PUT .../manifests/<ref>: stores the exact bytes. The body must be what its Content-Type says
   * (MANIFEST_INVALID otherwise, checkPushedManifest); everything it references must already be in
   * the repository (MANIFEST_BLOB_UNKNOWN names the first missing one); a digest reference must
   * match the bytes. Returns the manifest's digest.
   */
  async putManifest(route: Route, contentType: string | undefined, bytes: Buffer): Promise<string> {
    this.assertWritable(route);
    if (bytes.byteLength > MAX_MANIFEST_BYTES) throw new RegistryError('TOO_LARGE', `manifest is larger than ${MAX_MANIFEST_BYTES} bytes`);
    const { mediaType, manifest: parsed } = checkPushedManifest(contentType, bytes);
    const ref = route.reference;
    const algorithm = ref?.kind === 'digest' ? parseDigest(ref.digest).algorithm : 'sha256';
    const digest = digestOf(bytes, algorithm);
    if (ref?.kind === 'digest' && ref.digest !== digest) {
      throw new RegistryError('DIGEST_INVALID', `the manifest bytes hash to ${digest}, not ${ref.digest}`, { detail: { expected: ref.digest, actual: digest } });
    }
    const repo = route.localRepo;
    const missing = (what: string, d: unknown): RegistryError =>
      new RegistryError('MANIFEST_BLOB_UNKNOWN', `${what} ${String(d)} is not in ${route.upstreamRepo}: push it first`, { detail: { digest: d } });
    if (isIndexType(mediaType)) {
      for (const m of parsed.manifests ?? []) {
        if (typeof m.digest !== 'string' || !(await this.linked(repo, m.digest)) || (await this.deps.meta.getManifest(m.digest)) === undefined) throw missing('child manifest', m.digest);
      }
    } else {
      const cfg = parsed.config;
      if (typeof cfg?.digest !== 'string' || !(await this.linked(repo, cfg.digest))) throw missing('config blob', cfg?.digest);
      for (const layer of parsed.layers ?? []) {
        if (isForeign(layer)) continue;
        if (typeof layer.digest !== 'string' || !(await this.linked(repo, layer.digest))) throw missing('layer', layer.digest);
      }
    }
    try {
      await this.deps.store.put(parseDigest(digest), bytes);
    } catch (e) {
      throw storageUnavailable(e);
    }
    const now = this.now();
    const entry = manifestEntry(repo, digest, bytes, { registry: 'local', repository: route.upstreamRepo, mediaType, size: bytes.byteLength, source: 'push' });
    await this.deps.meta.transaction(async (tx) => {
      await tx.putManifest(entry, now);
      if (ref?.kind === 'tag') await tx.putTag(repo, ref.tag, digest, now);
    });
    this.deps.log.info({ repo, reference: ref?.kind === 'tag' ? ref.tag : digest, digest, mediaType }, 'manifest pushed');
    return digest;
  }

  // ------------------------------------------------------------- deletes

  /** DELETE .../manifests/<tag>: the tag; .../manifests/<digest>: the manifest and its tags. */
  async deleteManifest(route: Route): Promise<void> {
    this.assertWritable(route);
    const ref = route.reference;
    const repo = route.localRepo;
    if (ref?.kind === 'tag') {
      if (!(await this.deps.meta.deleteTag(repo, ref.tag))) throw new RegistryError('MANIFEST_UNKNOWN', `tag ${ref.tag} is not in ${route.upstreamRepo}`);
      this.deps.log.info({ repo, tag: ref.tag }, 'tag deleted');
      return;
    }
    const digest = ref?.digest ?? '';
    if (!(await this.linked(repo, digest)) || (await this.deps.meta.getManifest(digest)) === undefined) throw new RegistryError('MANIFEST_UNKNOWN', `manifest ${digest} is not in ${route.upstreamRepo}`);
    await this.deps.meta.unlink(repo, digest);
    this.deps.log.info({ repo, digest }, 'manifest deleted');
  }

  /** DELETE .../blobs/<digest>: removes the blob from the repository. */
  async deleteBlob(route: Route): Promise<void> {
    this.assertWritable(route);
    const digest = route.reference?.kind === 'digest' ? route.reference.digest : '';
    if (!(await this.linked(route.localRepo, digest))) throw new RegistryError('BLOB_UNKNOWN', `blob ${digest} is not in ${route.upstreamRepo}`);
    await this.deps.meta.unlink(route.localRepo, digest);
    this.deps.log.info({ repo: route.localRepo, digest }, 'blob deleted');
  }
}
