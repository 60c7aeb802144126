/**
 * Bundles for air-gapped sites: `regmirror export LIST -o bundle.tar[.gz]` and
 * `regmirror import bundle.tar[.gz]`.
 *
 * A bundle is an OCI image layout in one tar file (image-spec image-layout.md): `oci-layout`,
 * `blobs/<alg>/<hex>` for every manifest, config and layer, and `index.json` last, with one entry
 * per exported reference. Each entry carries the image's full name (`io.containerd.image.name`,
 * as containerd and skopeo use it), its tag (`org.opencontainers.image.ref.name`) and regmirror's
 * provenance (`dev.regmirror.*`). Export streams file by file; memory stays flat for any size.
 *
 * Import streams every blob to a temporary file in the cache while hashing it; a digest or size
 * mismatch stops the import naming the entry. Only when every blob verified and every image is
 * complete are the blobs committed and the metadata written, in one MetaStore transaction:
 * a bad bundle leaves nothing behind. Works over the two store interfaces; the CLI only calls it.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rename, rm, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import tar from 'tar-stream';
import {
  MAX_MANIFEST_BYTES,
  OCI_INDEX,
  RegistryError,
  SUPPORTED_MANIFEST_TYPES,
  digestOf,
  isIndexType,
  manifestMediaType,
  parseDigest,
  referencedDigests,
  type Digest,
} from '../oci/index.ts';
import { routeImage, type RoutingTable } from '../routing/index.ts';
import type { BlobStore, BlobWriter } from '../store/index.ts';
import type { MetaStore } from '../meta/index.ts';
import { manifestEntry } from '../mirror/index.ts';
import { formatBytes } from '../config/index.ts';

/** What bundles work over: the two stores and the routing table that places image names. */
export interface BundleDeps {
  store: BlobStore;
  meta: MetaStore;
  routing: RoutingTable;
}

/** Progress of a long export or import (the CLI draws it; silent by default). */
export interface BundleProgress {
  update(done: number, total: number, label: string): void;
  finish(): void;
}

const SILENT: BundleProgress = { update: () => undefined, finish: () => undefined };


export const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';
export const ANNOTATION_IMAGE_NAME = 'io.containerd.image.name';
const A = {
  local: 'dev.regmirror.local-namespace',
  source: 'dev.regmirror.source',
  sourceUrl: 'dev.regmirror.source-url',
  upstreamDigest: 'dev.regmirror.upstream-digest',
  firstFetched: 'dev.regmirror.first-fetched',
} as const;

/** A bundle problem: the message names the entry or image at fault. */
export class BundleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BundleError';
  }
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface ExportSummary {
  images: number;
  manifests: number;
  blobs: number;
  bytes: number;
  /** Index children left out because they are not cached (a platform-filtered seed). */
  skippedChildren: string[];
  durationMs: number;
}

const compressedName = (file: string): boolean => /\.(tgz|tar\.gz|gz)$/.test(file);

// ------------------------------------------------------------------------------------- export

/** The name an image has in a bundle: `<registry>/<repo>` or `<local namespace>/<repo>`. */
function bundleName(route: { registry: string | undefined; namespace?: string; upstreamRepo: string }): string {
  return route.registry === undefined ? `${route.namespace ?? ''}/${route.upstreamRepo}` : `${route.registry}/${route.upstreamRepo}`;
}

export async function exportBundle(rt: BundleDeps, images: readonly string[], outFile: string, progress: BundleProgress = SILENT): Promise<ExportSummary> {
  const started = Date.now();
  const { meta, store } = rt;
  /** digest → size, in write order (children before parents, manifests after their blobs). */
  const content = new Map<string, number>();
  const entries: Descriptor[] = [];
  const skippedChildren: string[] = [];
  let manifests = 0;

  const readManifest = async (digest: string, what: string): Promise<{ bytes: Buffer; mediaType: string }> => {
    const rec = await meta.getManifest(digest);
    const bytes = rec === undefined ? undefined : await store.read(parseDigest(digest));
    if (rec === undefined || bytes === undefined) throw new BundleError(`${what}: manifest ${digest} is not in the cache; seed it first (regmirror seed)`);
    return { bytes, mediaType: rec.mediaType };
  };
  /** Collects a manifest and what it references; returns its descriptor fields. */
  const walk = async (digest: string, what: string): Promise<{ mediaType: string; size: number }> => {
    const known = content.get(digest);
    const rec = await meta.getManifest(digest);
    if (known !== undefined && rec !== undefined) return { mediaType: rec.mediaType, size: known };
    const m = await readManifest(digest, what);
    if (isIndexType(m.mediaType)) {
      for (const child of referencedDigests(m.bytes).manifests) {
        if ((await meta.getManifest(child)) === undefined || (await store.stat(parseDigest(child))) === undefined) {
          skippedChildren.push(`${what}: ${child}`);
          continue;
        }
        await walk(child, what);
      }
    } else {
      for (const b of referencedDigests(m.bytes).blobs) {
        if (content.has(b)) continue;
        const size = await store.stat(parseDigest(b));
        if (size === undefined) throw new BundleError(`${what}: blob ${b} is not in the cache; seed the image first (regmirror seed)`);
        content.set(b, size);
      }
    }
    manifests++;
    content.set(digest, m.bytes.byteLength);
    return { mediaType: m.mediaType, size: m.bytes.byteLength };
  };

  for (const image of images) {
    const { route, tag, digest: wanted } = routeImage(image, rt.routing);
    const digest = wanted ?? (tag === undefined ? undefined : (await meta.getTag(route.localRepo, tag))?.digest);
    if (digest === undefined || !(await meta.hasLink(route.localRepo, digest))) {
      throw new BundleError(`${image} is not in the cache (${route.localRepo}${tag === undefined ? '' : `:${tag}`}); seed it first (regmirror seed)`);
    }
    const m = await walk(digest, image);
    const name = bundleName(route);
    const annotations: Record<string, string> = { [ANNOTATION_IMAGE_NAME]: tag === undefined ? `${name}@${digest}` : `${name}:${tag}` };
    if (tag !== undefined) annotations[ANNOTATION_REF_NAME] = tag;
    if (route.registry === undefined) annotations[A.local] = 'true';
    const p = await meta.getProvenance(route.localRepo, digest);
    if (p !== undefined) {
      annotations[A.source] = p.source;
      if (p.sourceUrl !== undefined) annotations[A.sourceUrl] = p.sourceUrl;
      if (p.upstreamDigest !== undefined) annotations[A.upstreamDigest] = p.upstreamDigest;
      annotations[A.firstFetched] = new Date(p.firstFetched).toISOString();
    }
    entries.push({ mediaType: m.mediaType, digest, size: m.size, annotations });
  }

  const total = [...content.values()].reduce((a, b) => a + b, 0);
  const partial = `${outFile}.partial`;
  const pack = tar.pack();
  const sink: Writable = createWriteStream(partial);
  const written = compressedName(outFile) ? pipeline(pack, createGzip({ level: 6 }), sink) : pipeline(pack, sink);
  const addBytes = (name: string, body: Buffer): Promise<void> =>
    new Promise((resolve, reject) => {
      pack.entry({ name, size: body.byteLength, mode: 0o644, mtime: new Date(0) }, body, (err) => (err ? reject(err) : resolve()));
    });
  /** Streams a stored blob into the tar with backpressure; resolves once the entry is complete. */
  const addBlob = async (name: string, size: number, d: Digest): Promise<void> => {
    const reader = await store.open(d);
    if (reader === undefined) throw new BundleError(`blob ${d.value} left the cache during the export; retry`);
    let entry!: ReturnType<typeof pack.entry>;
    const finished = new Promise<void>((resolve, reject) => {
      entry = pack.entry({ name, size, mode: 0o644, mtime: new Date(0) }, (err) => (err ? reject(err) : resolve()));
    });
    for await (const chunk of reader.stream(0, size)) {
      if (!entry.write(chunk as Buffer)) await new Promise<void>((r) => entry.once('drain', () => r()));
    }
    entry.end();
    await finished;
  };
  let done = 0;
  try {
    await addBytes('oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
    for (const [digest, size] of content) {
      const d = parseDigest(digest);
      await addBlob(`blobs/${d.algorithm}/${d.hex}`, size, d);
      done += size;
      progress.update(done, total, `bytes (${formatBytes(done)} of ${formatBytes(total)})`);
    }
    await addBytes('index.json', Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: entries }, null, 2)));
    pack.finalize();
    await written;
    await rename(partial, outFile);
  } catch (e) {
    pack.destroy();
    await written.catch(() => undefined);
    await rm(partial, { force: true });
    throw e;
  } finally {
    progress.finish();
  }
  return { images: entries.length, manifests, blobs: content.size - manifests, bytes: total, skippedChildren, durationMs: Date.now() - started };
}

// ------------------------------------------------------------------------------------- import

export interface ImportSummary {
  images: Array<{ name: string; digest: string }>;
  manifests: number;
  blobs: number;
  bytes: number;
  durationMs: number;
}

/** A bundle blob verified and waiting to be committed; JSON up to MAX_MANIFEST_BYTES kept in memory (manifests, configs). */
interface Staged {
  writer: BlobWriter;
  size: number;
  json: Buffer | undefined;
}

/** Opens a bundle for reading, undoing gzip when its first bytes say so. zstd is named, not guessed. */
async function openBundle(file: string): Promise<Readable> {
  const fh = await open(file, 'r').catch((e: NodeJS.ErrnoException) => {
    throw new BundleError(`cannot open ${file}: ${e.code ?? e.message}`);
  });
  const magic = Buffer.alloc(4);
  try {
    await fh.read(magic, 0, 4, 0);
  } finally {
    await fh.close();
  }
  if (magic.readUInt32BE(0) === 0x28b52ffd) throw new BundleError(`${file} is zstd-compressed, which this Node.js cannot read: decompress it first (zstd -d ${basename(file)}) and import the .tar`);
  const raw = createReadStream(file, { highWaterMark: 1024 * 1024 });
  if (magic[0] === 0x1f && magic[1] === 0x8b) {
    const out = new PassThrough({ highWaterMark: 1024 * 1024 });
    pipeline(raw, createGunzip(), out).catch((e: unknown) => out.destroy(new BundleError(`${file}: broken gzip stream (${(e as Error).message})`)));
    return out;
  }
  return raw;
}

export async function importBundle(rt: BundleDeps, file: string, progress: BundleProgress = SILENT): Promise<ImportSummary> {
  const started = Date.now();
  const { store, meta } = rt;
  const fileSize = (await stat(file).catch(() => undefined))?.size ?? 0;
  const staged = new Map<string, Staged>();
  let index: Buffer | undefined;
  let layout = false;
  let read = 0;

  const discardAll = async (): Promise<void> => {
    await Promise.all([...staged.values()].map((s) => s.writer.abort()));
  };

  try {
    const extract = tar.extract();
    const input = await openBundle(file);
    input.on('error', (e) => extract.destroy(e));
    input.pipe(extract);
    for await (const entry of extract) {
      const name = entry.header.name.replace(/^\.\//, '');
      const type = entry.header.type;
      const blob = /^blobs\/([a-z0-9]+)\/([a-zA-Z0-9]+)$/.exec(name);
      if (type === 'file' && blob !== null) {
        let d: Digest;
        try {
          d = parseDigest(`${blob[1]}:${blob[2]}`);
        } catch (e) {
          throw new BundleError(`bundle entry ${name}: not a valid digest path (${(e as Error).message})`);
        }
        const w = await store.begin(d, entry.header.size);
        const keep = entry.header.size !== undefined && entry.header.size <= MAX_MANIFEST_BYTES ? ([] as Buffer[]) : undefined;
        try {
          for await (const chunk of entry) {
            await w.write(chunk as Buffer);
            keep?.push(Buffer.from(chunk as Buffer));
          }
          await w.verify();
        } catch (e) {
          await w.abort();
          throw new BundleError(`bundle entry ${name}: ${(e as Error).message}; nothing was imported`);
        } finally {
          await w.close(); // a verified writer is committed later; its handle need not stay open
        }
        const json = keep === undefined ? undefined : Buffer.concat(keep);
        const old = staged.get(d.value);
        if (old !== undefined) await old.writer.abort();
        staged.set(d.value, { writer: w, size: w.bytesWritten, json: json !== undefined && json[0] === 0x7b ? json : undefined });
        read += w.bytesWritten;
        progress.update(Math.min(read, fileSize), fileSize, `bytes verified (${formatBytes(read)}, ${staged.size} blobs)`);
        continue;
      }
      if (type === 'file' && (name === 'index.json' || name === 'oci-layout')) {
        const chunks: Buffer[] = [];
        let n = 0;
        for await (const chunk of entry) {
          n += (chunk as Buffer).byteLength;
          if (n > 64 * 1024 * 1024) throw new BundleError(`bundle entry ${name} is larger than 64 MiB`);
          chunks.push(chunk as Buffer);
        }
        if (name === 'index.json') index = Buffer.concat(chunks);
        else {
          const v = (JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as { imageLayoutVersion?: unknown }).imageLayoutVersion;
          if (typeof v !== 'string' || !v.startsWith('1.')) throw new BundleError(`oci-layout: imageLayoutVersion ${String(v)} is not supported (1.x is)`);
          layout = true;
        }
        continue;
      }
      for await (const _ of entry) {
        // folders and files outside the layout are skipped
      }
    }
    if (!layout) throw new BundleError(`${file} is not an OCI image layout: it has no oci-layout file`);
    if (index === undefined) throw new BundleError(`${file} has no index.json`);

    const plan = await planImport(rt, index, staged);
    // Everything verified and complete: commit the blobs, then write metadata in one transaction.
    for (const digest of plan.used) {
      const s = staged.get(digest);
      if (s !== undefined) await s.writer.commit();
      staged.delete(digest);
    }
    await discardAll();
    const now = Date.now();
    await meta.transaction(async (tx) => {
      for (const b of plan.blobs) await tx.putBlob(b.repo, b.digest, b.size, now);
      for (const m of plan.manifests) await tx.putManifest(manifestEntry(m.repo, m.digest, m.bytes, { ...m.source, mediaType: m.mediaType, size: m.bytes.byteLength }), now);
      for (const t of plan.tags) await tx.putTag(t.repo, t.tag, t.digest, now);
    });
    progress.finish();
    return { images: plan.images, manifests: plan.manifests.length, blobs: plan.blobs.length, bytes: plan.bytes, durationMs: Date.now() - started };
  } catch (e) {
    progress.finish();
    await discardAll();
    if (e instanceof BundleError || e instanceof RegistryError) throw e;
    throw new BundleError(`cannot import ${file}: ${(e as Error).message}; nothing was imported`);
  }
}

interface ImportPlan {
  images: Array<{ name: string; digest: string }>;
  manifests: Array<{ repo: string; digest: string; mediaType: string; bytes: Buffer; source: { registry: string; repository: string; source: 'import'; sourceUrl?: string; upstreamDigest?: string } }>;
  blobs: Array<{ repo: string; digest: string; size: number }>;
  tags: Array<{ repo: string; tag: string; digest: string }>;
  used: Set<string>;
  bytes: number;
}

/** Checks index.json against the staged blobs and decides what goes where. Throws BundleError. */
async function planImport(rt: BundleDeps, indexBytes: Buffer, staged: ReadonlyMap<string, Staged>): Promise<ImportPlan> {
  let index: { manifests?: unknown };
  try {
    index = JSON.parse(indexBytes.toString('utf8')) as { manifests?: unknown };
  } catch {
    throw new BundleError('index.json is not JSON');
  }
  if (!Array.isArray(index.manifests) || index.manifests.length === 0) throw new BundleError('index.json lists no images');
  const plan: ImportPlan = { images: [], manifests: [], blobs: [], tags: [], used: new Set(), bytes: 0 };
  const seen = new Set<string>();

  const manifestBytes = async (digest: string, what: string): Promise<Buffer> => {
    const s = staged.get(digest);
    if (s === undefined) throw new BundleError(`${what}: manifest ${digest} is missing from the bundle`);
    if (s.size > MAX_MANIFEST_BYTES) throw new BundleError(`${what}: manifest ${digest} is larger than ${MAX_MANIFEST_BYTES} bytes`);
    if (s.json === undefined) throw new BundleError(`${what}: ${digest} is not a manifest (not JSON)`);
    return s.json;
  };
  const useBlob = (repo: string, digest: string, what: string): void => {
    const s = staged.get(digest);
    if (s === undefined) throw new BundleError(`${what}: blob ${digest} is missing from the bundle`);
    if (seen.has(`${repo}\n${digest}`)) return;
    seen.add(`${repo}\n${digest}`);
    plan.used.add(digest);
    plan.blobs.push({ repo, digest, size: s.size });
    plan.bytes += s.size;
  };
  const walk = async (repo: string, source: ImportPlan['manifests'][number]['source'], digest: string, what: string): Promise<void> => {
    const bytes = await manifestBytes(digest, what);
    const mediaType = manifestMediaType(undefined, bytes);
    if (mediaType === undefined) throw new BundleError(`${what}: ${digest} is not a supported manifest (OCI or Docker schema 2)`);
    if (isIndexType(mediaType)) {
      for (const child of referencedDigests(bytes).manifests) {
        if (staged.has(child)) await walk(repo, source, child, what);
      }
    } else {
      for (const b of referencedDigests(bytes).blobs) useBlob(repo, b, what);
    }
    if (!seen.has(`${repo}\n${digest}`)) {
      seen.add(`${repo}\n${digest}`);
      plan.used.add(digest);
      plan.manifests.push({ repo, digest, mediaType, bytes, source });
      plan.bytes += bytes.byteLength;
    }
  };

  for (const [i, raw] of (index.manifests as unknown[]).entries()) {
    const d = raw as Partial<Descriptor>;
    const what = `index.json manifests[${i}]`;
    if (typeof d.digest !== 'string') throw new BundleError(`${what} has no digest`);
    const digest = parseDigest(d.digest).value;
    const ann = d.annotations ?? {};
    const name = ann[ANNOTATION_IMAGE_NAME];
    if (typeof name !== 'string' || name === '') {
      throw new BundleError(`${what} has no ${ANNOTATION_IMAGE_NAME} annotation naming the image (registry/repository:tag), so it cannot be placed`);
    }
    let routed;
    try {
      routed = routeImage(name, rt.routing);
    } catch (e) {
      throw new BundleError(`${what} (${name}): ${(e as Error).message}`);
    }
    const { route, tag } = routed;
    if (ann[A.local] === 'true' && route.registry !== undefined) {
      throw new BundleError(`${what} (${name}) comes from a local namespace, but "${name.split('/')[0] ?? ''}" is not a local [[namespace]] here; add it to mirror.toml`);
    }
    if (typeof d.mediaType === 'string' && !SUPPORTED_MANIFEST_TYPES.has(d.mediaType)) throw new BundleError(`${what} (${name}): media type ${d.mediaType} is not supported`);
    const source: ImportPlan['manifests'][number]['source'] = { registry: route.registry ?? 'local', repository: route.upstreamRepo, source: 'import' };
    if (typeof ann[A.sourceUrl] === 'string') source.sourceUrl = ann[A.sourceUrl];
    if (typeof ann[A.upstreamDigest] === 'string') source.upstreamDigest = ann[A.upstreamDigest];
    await walk(route.localRepo, source, digest, `${what} (${name})`);
    if (routed.digest === undefined && tag !== undefined) plan.tags.push({ repo: route.localRepo, tag, digest });
    plan.images.push({ name, digest });
  }
  // The manifest bytes were verified as blobs; check once more that they hash to their names.
  for (const m of plan.manifests) {
    if (digestOf(m.bytes, parseDigest(m.digest).algorithm) !== m.digest) throw new BundleError(`manifest ${m.digest} changed on disk during import`);
  }
  return plan;
}
