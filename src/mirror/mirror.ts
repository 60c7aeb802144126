/**
 * Mirror: the pull-through flow (DESIGN §2). Serves from the verified local cache; on a miss
 * fetches from the registry's upstream with single-flight per key; tags are trusted for their TTL,
 * then revalidated with one upstream HEAD; upstream failures serve the cached copy marked stale.
 * Knows nothing of HTTP frameworks: routes in, results or RegistryErrors out.
 */
import type { Readable, Writable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import type { Config } from '../config/index.ts';
import type { Route } from '../routing/index.ts';
import {
  RegistryError,
  digestOf,
  manifestMediaType,
  parseDigest,
  parseManifestJson,
  type ManifestJson,
  type Digest,
} from '../oci/index.ts';
import type { FsBlobStore } from '../store/index.ts';
import { BlobVerifyError, isStorageError, sendFileRange, storageUnavailable } from '../store/index.ts';
import { relayBlob } from './blob-relay.ts';
import type { SqliteMetaStore, TagRecord, SqliteProvenanceStore } from '../meta/index.ts';
import { ProvenanceRecorder } from './provenance-recorder.ts';
import { recordManifest } from './manifest-record.ts';
import { UpstreamError, type BlobFetch, type UpstreamClient } from '../upstream/index.ts';
import type { Logger } from '../log/index.ts';
import { SingleFlight } from './single-flight.ts';
import { BlobFill } from './blob-fill.ts';
import type { BlobResult, CacheResult, ManifestResult, TagsResult } from './types.ts';

/**
 * A manifest answer from the cache. Built field by field: an object spread here was, per request,
 * a copy V8 kept long enough to promote to the old generation (issue 7, peak RSS).
 */
function answer(m: LocalManifest, digest: string, cache: CacheResult): ManifestResult {
  return { bytes: m.bytes, size: m.size, mediaType: m.mediaType, digest, cache };
}

/** A stored manifest; `bytes` undefined when only its metadata was read (HEAD). */
interface LocalManifest {
  bytes: Buffer | undefined;
  size: number;
  mediaType: string;
}

/** A manifest held in memory, in the shape answers are built from. */
type CachedManifest = LocalManifest & { bytes: Buffer };

export interface MirrorDeps {
  config: Config;
  store: FsBlobStore;
  meta: SqliteMetaStore;
  upstreams: ReadonlyMap<string, UpstreamClient>;
  provenance: SqliteProvenanceStore;
  log: Logger;
  now?: () => number;
}

/** Global counter names kept by the recorder. */
export const COUNTERS = {
  blobHits: 'blob_hits',
  blobMisses: 'blob_misses',
  bytesServedFromCache: 'bytes_served_from_cache',
  bytesServedDuringFill: 'bytes_served_during_fill',
  bytesFetchedUpstream: 'bytes_fetched_upstream',
} as const;

const ACCESS_FLUSH_MS = 30_000;
/** Free space past a blob's size at which the cache does not look further (statfs only). */
const ROOMY_BYTES = 1024 ** 3;
/** Free space a fill must leave on the cache disk (SQLite, uploads, the rest of the system). */
const RESERVE_BYTES = 64 * 1024 * 1024;
/** Config blobs up to this size are fetched as soon as their image manifest is (prefetchConfig). */
const PREFETCH_CONFIG_MAX = 1024 * 1024;

export class Mirror {
  private readonly config: Config;
  private readonly store: FsBlobStore;
  private readonly meta: SqliteMetaStore;
  private readonly upstreams: ReadonlyMap<string, UpstreamClient>;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly tagCache = new LRUCache<string, TagRecord>({ max: 100_000 });
  private readonly manifestCache: LRUCache<string, CachedManifest>;
  private readonly links = new LRUCache<string, true>({ max: 200_000 });
  private readonly manifestFlight = new SingleFlight<ManifestResult>();
  private readonly tagFlight = new SingleFlight<ManifestResult>();
  /** digest → the one upstream download of it, and the repository it was fetched through. */
  private readonly fills = new Map<string, { repo: string; fill: Promise<BlobFill> }>();
  /** Set by close(): no new background fills. */
  private closed = false;
  /** The cache disk was found full (noteDiskFull); cleared when roomFor sees room again. */
  private diskFull = false;
  private readonly accessed = new Map<string, { at: number; size: number }>();
  /**
   * digest → size, from the descriptors of manifests read or fetched: a blob's length is known
   * before its upstream says (or when it sends none: chunked, close-delimited), so every client
   * gets a Content-Length and can tell a cut transfer from a complete one (issue 14, defect 9).
   */
  private readonly descriptorSizes = new LRUCache<string, number>({ max: 200_000 });
  private readonly flushTimer: NodeJS.Timeout;
  /** Provenance records and batched counters (DESIGN §4). */
  readonly provenance: ProvenanceRecorder;

  constructor(deps: MirrorDeps) {
    this.config = deps.config;
    this.store = deps.store;
    this.meta = deps.meta;
    this.upstreams = deps.upstreams;
    this.log = deps.log;
    this.now = deps.now ?? Date.now;
    this.manifestCache = new LRUCache<string, CachedManifest>({
      maxSize: Math.max(deps.config.cache.memoryManifestBytes, 1),
      sizeCalculation: (m) => Math.max(m.bytes.byteLength, 1),
    });
    this.flushTimer = setInterval(() => this.flushAccess(), ACCESS_FLUSH_MS);
    this.flushTimer.unref();
    this.provenance = new ProvenanceRecorder(deps.provenance, (e) => this.log.warn({ err: (e as Error).message }, 'could not record provenance counters'));
  }


  // ---------------------------------------------------------------- manifests

  /**
   * Resolves a manifest route to its stored bytes.
   * Throws RegistryError: MANIFEST_UNKNOWN (not upstream, nothing cached), UNAUTHORIZED / DENIED /
   * TOOMANYREQUESTS / UNAVAILABLE (upstream failures with nothing cached), MANIFEST_INVALID.
   * With `headOnly` a stored manifest not in memory is answered from its metadata row (digest,
   * size, media type) without reading the file: HEAD by tag is how runtimes resolve tags.
   */
  async getManifest(route: Route): Promise<ManifestResult & { bytes: Buffer }>;
  async getManifest(route: Route, headOnly: boolean): Promise<ManifestResult>;
  async getManifest(route: Route, headOnly = false): Promise<ManifestResult> {
    const ref = route.reference;
    if (ref === undefined) throw new RegistryError('MANIFEST_UNKNOWN', 'no manifest reference');
    const result = ref.kind === 'digest' ? await this.manifestByDigest(route, parseDigest(ref.digest), headOnly) : await this.manifestByTag(route, ref.tag, headOnly);
    this.provenance.served(route.localRepo, result.digest, result.cache, this.now());
    return result;
  }

  private upstreamFor(route: Route): UpstreamClient | undefined {
    if (route.registry === undefined) return undefined;
    if (this.config.cache.offline) return undefined;
    const up = this.upstreams.get(route.registry);
    return up === undefined || up.registry.offline ? undefined : up;
  }

  private isLinked(repo: string, digest: string): boolean {
    const key = `${repo}\n${digest}`;
    if (this.links.has(key)) return true;
    if (!this.meta.hasLink(repo, digest)) return false;
    this.links.set(key, true);
    return true;
  }

  /** Reads a manifest from memory or disk (with `headOnly`, only its row); undefined when not stored. */
  private async localManifest(d: Digest, headOnly: boolean): Promise<LocalManifest | undefined> {
    const mem = this.manifestCache.get(d.value);
    if (mem !== undefined) return mem;
    const rec = this.meta.getManifest(d.value);
    if (rec === undefined) return undefined;
    if (headOnly) return { bytes: undefined, size: rec.size, mediaType: rec.mediaType };
    let bytes: Buffer | undefined;
    try {
      bytes = await this.store.read(d);
    } catch (e) {
      throw storageUnavailable(e);
    }
    if (bytes === undefined) {
      this.log.warn({ digest: d.value }, 'manifest row without file; forgetting it');
      this.meta.forgetManifest(d.value);
      return undefined;
    }
    const m = { bytes, size: bytes.byteLength, mediaType: rec.mediaType };
    this.manifestCache.set(d.value, m);
    this.noteDescriptors(parseManifestJson(bytes));
    return m;
  }

  private async manifestByDigest(route: Route, d: Digest, headOnly: boolean): Promise<ManifestResult> {
    const local = await this.localManifest(d, headOnly);
    if (local !== undefined && this.isLinked(route.localRepo, d.value)) {
      return answer(local, d.value, 'hit');
    }
    const up = this.upstreamFor(route);
    if (up === undefined) throw this.offlineUnknown('MANIFEST_UNKNOWN', route, d.value);
    return this.manifestFlight.do(`${route.localRepo}@${d.value}`, async () => {
      const fetched = await this.fetchManifest(up, route, d.value).catch((e: unknown) => {
        throw this.mapUpstream(e, route, 'MANIFEST_UNKNOWN', `manifest ${d.value}`);
      });
      return { ...fetched, cache: 'miss' as CacheResult };
    });
  }

  private async manifestByTag(route: Route, tag: string, headOnly: boolean): Promise<ManifestResult> {
    const key = `${route.localRepo}:${tag}`;
    const rec = this.tagCache.get(key) ?? this.meta.getTag(route.localRepo, tag);
    const up = this.upstreamFor(route);
    const ttl = up?.registry.tagTtlMs ?? this.config.cache.tagTtlMs;
    if (rec !== undefined) {
      const d = parseDigest(rec.digest);
      const cached = await this.localManifest(d, headOnly);
      if (cached !== undefined) {
        this.tagCache.set(key, rec);
        if (up === undefined || this.now() - rec.checkedAt < ttl) {
          return answer(cached, rec.digest, 'hit');
        }
        // A revalidation's answer is shared with every waiting request, GETs too: with the bytes.
        const full = cached.bytes === undefined ? await this.localManifest(d, false) : cached;
        if (full !== undefined) return this.tagFlight.do(key, () => this.revalidateTag(up, route, tag, rec, full));
      }
    }
    if (up === undefined) throw this.offlineUnknown('MANIFEST_UNKNOWN', route, tag);
    return this.tagFlight.do(key, async () => {
      const fetched = await this.fetchManifest(up, route, tag).catch((e: unknown) => {
        throw this.mapUpstream(e, route, 'MANIFEST_UNKNOWN', `tag ${tag}`);
      });
      this.recordTag(route.localRepo, tag, fetched.digest);
      return { ...fetched, cache: 'miss' as CacheResult };
    });
  }

  /** One upstream HEAD; same digest refreshes the check time, a new one is fetched, failures serve stale. */
  private async revalidateTag(up: UpstreamClient, route: Route, tag: string, rec: TagRecord, cached: LocalManifest): Promise<ManifestResult> {
    const key = `${route.localRepo}:${tag}`;
    try {
      const head = await up.headManifest(route.upstreamRepo, tag);
      if (head.digest === rec.digest) {
        const now = this.now();
        this.meta.touchTag(route.localRepo, tag, rec.digest, now);
        this.provenance.store.checked(route.localRepo, rec.digest, now);
        this.tagCache.set(key, { ...rec, checkedAt: now });
        return answer(cached, rec.digest, 'hit');
      }
      const ref = head.digest !== undefined && /^sha(256|512):/.test(head.digest) ? head.digest : tag;
      const fetched = await this.fetchManifest(up, route, ref);
      this.recordTag(route.localRepo, tag, fetched.digest);
      this.log.info({ registry: route.registry, repo: route.upstreamRepo, tag, from: rec.digest, to: fetched.digest }, 'tag moved upstream');
      return { ...fetched, cache: 'miss' };
    } catch (e) {
      if (e instanceof UpstreamError && e.servesStale) {
        this.log.warn({ registry: route.registry, repo: route.upstreamRepo, tag, err: e.message }, 'upstream failed; serving cached tag as stale');
        return answer(cached, rec.digest, 'stale');
      }
      throw this.mapUpstream(e, route, 'MANIFEST_UNKNOWN', `tag ${tag}`);
    }
  }

  private recordTag(repo: string, tag: string, digest: string): void {
    const now = this.now();
    this.meta.putTag(repo, tag, digest, now);
    this.tagCache.set(`${repo}:${tag}`, { digest, fetchedAt: now, checkedAt: now });
  }

  /**
   * GETs a manifest upstream, verifies it, stores it byte for byte and links it to the repository.
   * `reference` is a tag or a digest; for a digest the bytes must hash to it.
   */
  private async fetchManifest(up: UpstreamClient, route: Route, reference: string): Promise<Omit<ManifestResult, 'cache'>> {
    const res = await up.getManifest(route.upstreamRepo, reference);
    const mediaType = manifestMediaType(res.contentType, res.body);
    if (mediaType === undefined) {
      throw new RegistryError('UNSUPPORTED', `${route.registry} served a manifest of an unsupported type (${res.contentType ?? 'none'}); Docker schema 1 is not supported`, { status: 400 });
    }
    const wanted = reference.includes(':') ? parseDigest(reference) : undefined;
    const algorithm = wanted?.algorithm ?? (res.digestHeader?.startsWith('sha512:') === true ? 'sha512' : 'sha256');
    const digest = digestOf(res.body, algorithm);
    if (wanted !== undefined && digest !== wanted.value) {
      throw new UpstreamError('bad_response', `${route.registry} served manifest bytes hashing to ${digest}, not the requested ${wanted.value}`);
    }
    if (res.digestHeader !== undefined && res.digestHeader.startsWith(`${algorithm}:`) && res.digestHeader !== digest) {
      throw new UpstreamError('bad_response', `${route.registry} sent Docker-Content-Digest ${res.digestHeader} but the bytes hash to ${digest}`);
    }
    const d = parseDigest(digest);
    try {
      await this.store.writeBytes(d, res.body);
    } catch (e) {
      throw storageUnavailable(e);
    }
    recordManifest(
      this.meta,
      this.provenance.store,
      route.localRepo,
      digest,
      res.body,
      {
        registry: route.registry ?? 'local',
        repository: route.upstreamRepo,
        mediaType,
        size: res.body.byteLength,
        source: 'upstream',
        sourceUrl: up.registry.endpoint,
        ...(res.digestHeader === undefined ? {} : { upstreamDigest: res.digestHeader }),
      },
      this.now(),
    );
    this.manifestCache.set(digest, { bytes: res.body, size: res.body.byteLength, mediaType });
    const parsed = parseManifestJson(res.body);
    this.noteDescriptors(parsed);
    this.log.info({ registry: route.registry, repo: route.upstreamRepo, reference, digest, mediaType, bytes: res.body.byteLength, cache: 'miss' }, 'manifest fetched');
    this.prefetchConfig(up, route, parsed);
    return { bytes: res.body, size: res.body.byteLength, mediaType, digest };
  }

  /** Remembers the sizes an image manifest's descriptors give its config and layers. */
  private noteDescriptors(m: ManifestJson | undefined): void {
    if (m === undefined) return;
    for (const desc of [m.config, ...(m.layers ?? [])]) {
      if (typeof desc?.digest === 'string' && typeof desc.size === 'number' && Number.isSafeInteger(desc.size) && desc.size >= 0) {
        this.descriptorSizes.set(desc.digest, desc.size);
      }
    }
  }

  // ---------------------------------------------------------------- blobs

  /**
   * Resolves a blob route. A hit opens the stored file; a miss joins or starts the one upstream fill
   * for the digest. Throws RegistryError BLOB_UNKNOWN and upstream errors mapped for the client.
   * With `headOnly`, a miss asks the upstream for the size without downloading. With `needsLength`
   * (a client that cannot tell a cut body from a complete one without it: HTTP/1.0, or a proxy
   * speaking HTTP/1.0 to the mirror), a miss whose size nobody knows waits for the fill to be
   * verified and stored, and is then served from the cache with its length.
   */
  async getBlob(route: Route, headOnly: boolean, needsLength = false): Promise<BlobResult> {
    const ref = route.reference;
    if (ref?.kind !== 'digest') throw new RegistryError('DIGEST_INVALID', 'blob reference must be a digest');
    const d = parseDigest(ref.digest);
    const up = this.upstreamFor(route);
    const blobError = (e: unknown): RegistryError => this.mapUpstream(e, route, 'BLOB_UNKNOWN', `blob ${d.value}`);

    const local = await this.openLocal(d);
    if (local !== undefined) {
      if (this.isLinked(route.localRepo, d.value)) return local;
      if (up !== undefined) {
        // Known blob, unknown repository: the upstream must confirm the repository holds it.
        try {
          await up.headBlob(route.upstreamRepo, d.value);
          this.meta.link(route.localRepo, d.value);
          return local;
        } catch (e) {
          local.discard();
          throw blobError(e);
        }
      }
      local.discard();
    }
    if (up === undefined) throw this.offlineUnknown('BLOB_UNKNOWN', route, d.value);

    const inflight = this.fills.get(d.value);
    if (inflight !== undefined && inflight.repo !== route.localRepo && !this.isLinked(route.localRepo, d.value)) {
      // Joining another repository's download: the upstream must confirm this repository holds it.
      await up.headBlob(route.upstreamRepo, d.value).catch((e: unknown) => {
        throw blobError(e);
      });
      this.meta.link(route.localRepo, d.value);
    }
    if (headOnly && inflight === undefined) {
      const size = await up.headBlob(route.upstreamRepo, d.value).catch((e: unknown) => {
        throw blobError(e);
      });
      const noBody = (): Promise<never> => Promise.reject(new Error('HEAD result has no body'));
      return { digest: d.value, size, cache: 'miss', open: noBody, sendTo: noBody, stored: noBody, discard: () => undefined };
    }
    if (inflight === undefined && !(await this.roomFor(up, route, d))) {
      const res = await up.getBlob(route.upstreamRepo, d.value).catch((e: unknown) => {
        throw blobError(e);
      });
      let size: number | undefined;
      try {
        size = this.blobLength(res, route, d);
      } catch (e) {
        throw blobError(e);
      }
      if (needsLength && size === undefined) {
        res.body.destroy();
        throw new RegistryError('UNAVAILABLE', `the mirror's cache disk is full and ${route.registry} does not say how long blob ${d.value} is, which an HTTP/1.0 client needs; free space on the mirror or retry over HTTP/1.1`, { status: 507 });
      }
      this.log.info({ registry: route.registry, repo: route.upstreamRepo, digest: d.value, bytes: size }, 'cache disk full: relaying blob without caching');
      return relayBlob(d, size, res.body, (n) => this.provenance.add(COUNTERS.bytesFetchedUpstream, n));
    }
    const entry = this.fillOf(up, route, d);
    let fill: BlobFill;
    try {
      fill = await entry.fill;
    } catch (e) {
      throw blobError(e);
    }
    if (fill.state === 'failed') throw blobError(fill.error);
    if (needsLength && fill.size === undefined && fill.state !== 'committed') {
      await fill.done().catch((e: unknown) => {
        throw blobError(e);
      });
    }
    if (fill.state === 'committed') {
      const committed = await this.openLocal(d);
      if (committed !== undefined) return committed;
      throw new RegistryError('BLOB_UNKNOWN', `blob ${d.value} vanished from the cache right after it was stored; retry`);
    }
    fill.acquire();
    let taken = false;
    /** Counts the serve; a range of a blob of unknown size waits for the fill to know it. */
    const prepare = async (start: number, end: number | undefined): Promise<void> => {
      taken = true;
      this.provenance.add(COUNTERS.blobMisses, 1);
      this.provenance.add(COUNTERS.bytesServedDuringFill, (end ?? fill.size ?? 0) - start);
      if (fill.size === undefined && (start !== 0 || end !== undefined)) {
        try {
          await fill.done();
        } catch (e) {
          fill.release();
          throw blobError(e);
        }
      }
    };
    const open = async (start = 0, end?: number): Promise<Readable> => {
      await prepare(start, end);
      return fill.createReader(start, end);
    };
    return {
      digest: d.value,
      size: fill.size,
      cache: 'miss',
      open,
      sendTo: async (dest: Writable, ready: () => void, start = 0, end?: number) => {
        await prepare(start, end);
        let started = false;
        try {
          await fill.sendTo(dest, start, end, () => {
            started = true;
            ready();
          });
        } catch (e) {
          // A fill that fails before its first byte is still an error the client can read.
          throw started ? e : blobError(e);
        }
      },
      stored: () => fill.done().catch((e: unknown) => {
        throw blobError(e);
      }),
      discard: () => {
        if (!taken) {
          taken = true;
          fill.release();
        }
      },
    };
  }

  private async openLocal(d: Digest): Promise<BlobResult | undefined> {
    let opened: Awaited<ReturnType<FsBlobStore['open']>>;
    try {
      opened = await this.store.open(d);
    } catch (e) {
      throw storageUnavailable(e);
    }
    if (opened === undefined) return undefined;
    const { handle, size } = opened;
    // One record per digest until the next flush, updated in place: a hit allocates nothing that
    // lives (a fresh object per hit would wait up to 30 s and be promoted to the old generation).
    const seen = this.accessed.get(d.value);
    if (seen === undefined) this.accessed.set(d.value, { at: this.now(), size });
    else seen.at = this.now();
    let used = false;
    const count = (start: number, end: number | undefined): void => {
      used = true;
      this.provenance.add(COUNTERS.blobHits, 1);
      this.provenance.add(COUNTERS.bytesServedFromCache, (end ?? size) - start);
    };
    return {
      digest: d.value,
      size,
      cache: 'hit',
      open: async (start = 0, end?: number): Promise<Readable> => {
        count(start, end);
        return handle.createReadStream({ start, ...(end === undefined ? {} : { end: end - 1 }), highWaterMark: 256 * 1024, autoClose: true });
      },
      sendTo: async (dest: Writable, ready: () => void, start = 0, end?: number): Promise<void> => {
        count(start, end);
        ready();
        try {
          await sendFileRange(handle, dest, start, end ?? size);
        } finally {
          await handle.close().catch(() => undefined);
        }
      },
      stored: () => Promise.resolve(),
      discard: () => {
        if (!used) {
          used = true;
          void handle.close().catch(() => undefined);
        }
      },
    };
  }

  /**
   * Whether the cache disk can take blob `d`: plenty free (ROOMY_BYTES past its size, when known),
   * or, when space is short, at least RESERVE_BYTES left after it (its size from its manifest, else
   * one upstream HEAD). No room: the blob is relayed without caching, and the first such answer of a
   * shortage is logged with the free space (once, until the disk has room again).
   */
  private async roomFor(up: UpstreamClient, route: Route, d: Digest): Promise<boolean> {
    let free: number;
    try {
      free = await this.store.freeBytes();
    } catch {
      return true; // no statfs: a full disk still fails the fill, and that is logged
    }
    let size = this.descriptorSizes.get(d.value);
    if (free >= (size ?? 0) + ROOMY_BYTES) {
      if (this.diskFull) {
        this.diskFull = false;
        this.log.info({ freeBytes: free }, 'the cache disk has room again: blobs are cached again');
      }
      return true;
    }
    if (size === undefined) size = await up.headBlob(route.upstreamRepo, d.value).catch(() => undefined);
    const room = free - (size ?? 0) >= RESERVE_BYTES;
    if (!room) this.noteDiskFull(free, size);
    return room;
  }

  /** Logs once (until there is room again) that the cache disk cannot take more blobs. */
  private noteDiskFull(freeBytes: number | undefined, neededBytes: number | undefined): void {
    if (this.diskFull) return;
    this.diskFull = true;
    this.log.error(
      { freeBytes, neededBytes, dataDir: this.config.server.dataDir },
      'the cache disk is full: blobs that do not fit are relayed to clients verified but not cached; free space on the disk (or give the cache a bigger one)',
    );
  }

  /**
   * A blob's length: the upstream's Content-Length, else the size its manifest's descriptor gives.
   * Throws UpstreamError bad_response (and drops the body) when the two disagree.
   */
  private blobLength(res: BlobFetch, route: Route, d: Digest): number | undefined {
    const described = this.descriptorSizes.get(d.value);
    if (res.size !== undefined && described !== undefined && res.size !== described) {
      res.body.destroy();
      throw new UpstreamError('bad_response', `${route.registry} sent Content-Length ${res.size} for blob ${d.value}, which its manifest describes as ${described} bytes`);
    }
    return res.size ?? described;
  }

  /** The running fill of `d`, or a new one started for `route`. */
  private fillOf(up: UpstreamClient, route: Route, d: Digest): { repo: string; fill: Promise<BlobFill> } {
    let entry = this.fills.get(d.value);
    if (entry === undefined) {
      const created = { repo: route.localRepo, fill: this.startFill(up, route, d) };
      entry = created;
      this.fills.set(d.value, created);
      created.fill.catch(() => {
        if (this.fills.get(d.value) === created) this.fills.delete(d.value);
      });
    }
    return entry;
  }

  /**
   * After an image manifest came from the upstream: starts fetching its config blob, which every
   * pull asks for next (after the layers, for skopeo and containerd alike), so that request finds
   * it cached or on its way instead of paying an upstream round trip. Only small configs
   * (PREFETCH_CONFIG_MAX); never layers, whose download stays the client's decision.
   */
  private prefetchConfig(up: UpstreamClient, route: Route, manifest: ManifestJson | undefined): void {
    const config = manifest?.config;
    if (typeof config?.digest !== 'string' || typeof config.size !== 'number' || config.size > PREFETCH_CONFIG_MAX) return;
    let d: Digest;
    try {
      d = parseDigest(config.digest);
    } catch {
      return;
    }
    if (this.fills.has(d.value)) return;
    void this.store.stat(d).then(
      (size) => {
        if (size === undefined && !this.closed) void this.fillOf(up, route, d).fill.catch(() => undefined);
      },
      () => undefined,
    );
  }

  /** Starts the single upstream download of a blob; resolves once the upstream has answered. */
  private async startFill(up: UpstreamClient, route: Route, d: Digest): Promise<BlobFill> {
    const started = this.now();
    const res = await up.getBlob(route.upstreamRepo, d.value);
    const size = this.blobLength(res, route, d);
    let writer;
    try {
      writer = await this.store.createWriter(d, size);
    } catch (e) {
      res.body.destroy();
      throw storageUnavailable(e);
    }
    const fill = new BlobFill(writer, size);
    const log = this.log.child({ registry: route.registry, repo: route.upstreamRepo, digest: d.value });
    void (async () => {
      try {
        await fill.download(res.body);
        await writer.persist();
        this.meta.putBlob(route.localRepo, d.value, writer.bytesWritten, this.now());
        this.provenance.add(COUNTERS.bytesFetchedUpstream, writer.bytesWritten);
        this.fills.delete(d.value);
        fill.commit();
        log.info({ bytes: writer.bytesWritten, durationMs: this.now() - started, cache: 'miss' }, 'blob cached');
      } catch (e) {
        res.body.destroy();
        await writer.abort().catch(() => undefined);
        this.fills.delete(d.value);
        let err: Error;
        if (e instanceof BlobVerifyError) err = e;
        else if (isStorageError(e)) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ENOSPC' || code === 'EDQUOT') this.noteDiskFull(await this.store.freeBytes().catch(() => undefined), size);
          err = new RegistryError('UNAVAILABLE', `the mirror could not write blob ${d.value} to its cache (${code ?? 'storage error'}); retry`, { cause: e });
        } else err = new UpstreamError('unavailable', `blob download from ${route.registry} failed: ${(e as Error).message}`, undefined, undefined, { cause: e });
        log.warn({ err: err.message, bytes: writer.bytesWritten }, 'blob fill failed; nothing cached');
        fill.fail(err);
      }
    })();
    return fill;
  }

  // ---------------------------------------------------------------- tags

  /** Lists tags: the upstream's answer, or the cached tags marked stale when the upstream fails. */
  async listTags(route: Route, query: string): Promise<TagsResult> {
    const up = this.upstreamFor(route);
    const cachedList = (cache: CacheResult): TagsResult => ({
      body: Buffer.from(JSON.stringify({ name: route.upstreamRepo, tags: this.meta.listTags(route.localRepo) })),
      cache,
    });
    if (up === undefined) return cachedList('hit');
    try {
      const r = await up.getTags(route.upstreamRepo, query);
      return r.link === undefined ? { body: r.body, cache: 'miss' } : { body: r.body, link: r.link, cache: 'miss' };
    } catch (e) {
      if (e instanceof UpstreamError && e.servesStale) return cachedList('stale');
      throw this.mapUpstream(e, route, 'NAME_UNKNOWN', 'tag list');
    }
  }

  // ---------------------------------------------------------------- pushes

  /** Keeps the in-memory tag cache right after a push (digest) or a delete (undefined) changed a tag. */
  noteTag(repo: string, tag: string, digest: string | undefined): void {
    const key = `${repo}:${tag}`;
    if (digest === undefined) this.tagCache.delete(key);
    else {
      const now = this.now();
      this.tagCache.set(key, { digest, fetchedAt: now, checkedAt: now });
    }
  }

  /** Keeps the in-memory link cache right after content was removed from a repository. */
  noteUnlinked(repo: string, digest: string): void {
    this.links.delete(`${repo}\n${digest}`);
  }

  // ---------------------------------------------------------------- errors

  private offlineUnknown(code: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN', route: Route, what: string): RegistryError {
    const where = route.registry === undefined ? `local namespace "${route.namespace ?? ''}"` : `${route.registry} (the mirror is offline for it)`;
    return new RegistryError(code, `${what} of ${route.upstreamRepo} is not in the cache and cannot be fetched: ${where}`);
  }

  /** Maps an upstream or storage failure to the error the client sees. */
  private mapUpstream(e: unknown, route: Route, unknown: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' | 'NAME_UNKNOWN', what: string): RegistryError {
    if (e instanceof RegistryError) return e;
    const reg = route.registry ?? 'local';
    if (e instanceof BlobVerifyError) {
      return new RegistryError('UNAVAILABLE', `${reg} sent content that failed verification (${e.message}); nothing was cached, retry`, { status: 502 });
    }
    if (!(e instanceof UpstreamError)) {
      this.log.error({ err: e, registry: reg }, 'unexpected error');
      return new RegistryError('UNKNOWN', 'internal error; see the mirror log');
    }
    const detail = { registry: reg, repository: route.upstreamRepo };
    switch (e.kind) {
      case 'not_found':
        return new RegistryError(unknown, `${what} not found in ${route.upstreamRepo} at ${reg}`, { detail });
      case 'unauthorized': {
        const key = this.upstreams.get(reg)?.registry.auth?.configKey;
        return new RegistryError(
          'UNAUTHORIZED',
          key === undefined
            ? `${reg} requires credentials for ${route.upstreamRepo}; give its [[registry]] a credential: username + password_env (or password / password_file), docker_config, gcr_key_file or token`
            : `${reg} rejected the mirror's credentials (${key} of its [[registry]]) for ${route.upstreamRepo}; check them`,
          { detail },
        );
      }
      case 'denied': {
        const key = this.upstreams.get(reg)?.registry.auth?.configKey ?? 'none configured';
        return new RegistryError('DENIED', `${reg} denied the mirror access to ${route.upstreamRepo} (credential: ${key}); check that account's permissions`, { detail });
      }
      case 'toomanyrequests':
        return new RegistryError('TOOMANYREQUESTS', `${reg} is rate limiting the mirror; retry later`, {
          detail,
          ...(e.retryAfter === undefined ? {} : { headers: { 'Retry-After': e.retryAfter } }),
        });
      case 'unavailable':
        return new RegistryError('UNAVAILABLE', `${reg} is unreachable or failing (${e.message}) and ${what} is not cached`, { detail, status: 502 });
      default:
        return new RegistryError('UNAVAILABLE', `${reg} sent an unusable answer for ${what}: ${e.message}`, { detail, status: 502 });
    }
  }

  // ---------------------------------------------------------------- lifecycle

  /** Writes batched access times to SQLite. */
  flushAccess(): void {
    if (this.accessed.size === 0) return;
    const batch = new Map(this.accessed);
    this.accessed.clear();
    try {
      this.meta.touchBlobs(batch);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'could not record blob access times');
    }
  }

  /** Waits for running fills (bounded) and flushes counters. */
  async close(timeoutMs = 5_000): Promise<void> {
    this.closed = true;
    clearInterval(this.flushTimer);
    const pending = [...this.fills.values()].map((e) => e.fill.then((f) => f.done()).catch(() => undefined));
    await Promise.race([Promise.all(pending), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
    this.flushAccess();
    this.provenance.close();
  }
}
