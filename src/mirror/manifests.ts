/**
 * The manifest side of the pull-through flow (DESIGN §2): by digest, a stored manifest linked to the
 * repository is a hit; by tag, the tag is trusted for its TTL, then revalidated with one upstream
 * HEAD (single-flight per tag, the answer shared with every waiting request); an upstream failure
 * serves the cached copy marked stale. Fetched manifests are verified, stored byte for byte and
 * recorded with their provenance. Tag lists come from the upstream, else from the cache (stale).
 */
import { LRUCache } from 'lru-cache';
import {
  RegistryError,
  digestOf,
  manifestMediaType,
  parseDigest,
  parseManifestJson,
  type Digest,
} from '../oci/index.ts';
import type { TagRecord } from '../meta/index.ts';
import type { Route } from '../routing/index.ts';
import { UpstreamError, type UpstreamClient } from '../upstream/index.ts';
import { SingleFlight } from './single-flight.ts';
import { manifestEntry } from './manifest-record.ts';
import { upstreamFor, type MirrorContext } from './context.ts';
import { storageUnavailable } from './upstream-errors.ts';
import type { Blobs } from './blobs.ts';
import type { CacheResult, ManifestResult, TagsResult } from './types.ts';

/** A stored manifest; `bytes` undefined when only its metadata was read (HEAD). */
interface LocalManifest {
  bytes: Buffer | undefined;
  size: number;
  mediaType: string;
}

/**
 * A manifest answer. Built field by field: an object spread here was, per request, a copy V8 kept
 * long enough to promote to the old generation (issue 7, peak RSS).
 */
function answer(m: LocalManifest, digest: string, cache: CacheResult): ManifestResult {
  return { bytes: m.bytes, size: m.size, mediaType: m.mediaType, digest, cache };
}

export class Manifests {
  /**
   * Manifest bytes by digest, in front of the BlobStore. Content never changes under a digest, so
   * this is a content cache, not metadata: whether a manifest is stored is always the MetaStore's
   * answer (asked first).
   */
  private readonly bytes: LRUCache<string, Buffer>;
  private readonly manifestFlight = new SingleFlight<ManifestResult>();
  private readonly tagFlight = new SingleFlight<ManifestResult>();
  /** Tags whose revalidation outlived revalidate_timeout and goes on in the background. */
  private readonly backgroundRevalidations = new Set<string>();

  constructor(
    private readonly ctx: MirrorContext,
    private readonly blobs: Blobs,
  ) {
    this.bytes = new LRUCache<string, Buffer>({
      maxSize: Math.max(ctx.config.cache.memoryManifestBytes, 1),
      sizeCalculation: (b) => Math.max(b.byteLength, 1),
    });
  }

  /**
   * Resolves a manifest route to its stored bytes.
   * Throws RegistryError: MANIFEST_UNKNOWN (not upstream, nothing cached), UNAUTHORIZED / DENIED /
   * TOOMANYREQUESTS / UNAVAILABLE (upstream failures with nothing cached), MANIFEST_INVALID.
   * With `headOnly` a stored manifest not in memory is answered from its metadata row (digest,
   * size, media type) without reading the file: HEAD by tag is how runtimes resolve tags.
   */
  async get(route: Route, headOnly: boolean): Promise<ManifestResult> {
    const ref = route.reference;
    if (ref === undefined) throw new RegistryError('MANIFEST_UNKNOWN', 'no manifest reference');
    const result = ref.kind === 'digest' ? await this.byDigest(route, parseDigest(ref.digest), headOnly) : await this.byTag(route, ref.tag, headOnly);
    const { events } = this.ctx;
    // Last use for the cache lifecycle (a miss was just recorded with the time).
    if (result.cache !== 'miss') this.ctx.meta.noteManifestRead(result.digest, this.ctx.now());
    if (events.has('manifestServed')) {
      events.emit('manifestServed', { registry: route.registry ?? `local/${route.namespace ?? ''}`, repo: route.localRepo, digest: result.digest, cache: result.cache, at: this.ctx.now(), bytes: headOnly ? 0 : result.size });
    }
    return result;
  }

  /** Reads a manifest from memory or the store (with `headOnly`, only its row); undefined when not stored. */
  private async local(d: Digest, headOnly: boolean): Promise<LocalManifest | undefined> {
    const rec = await this.ctx.meta.getManifest(d.value);
    if (rec === undefined) return undefined;
    const mem = this.bytes.get(d.value);
    if (mem !== undefined) return { bytes: mem, size: mem.byteLength, mediaType: rec.mediaType };
    if (headOnly) return { bytes: undefined, size: rec.size, mediaType: rec.mediaType };
    let bytes: Buffer | undefined;
    try {
      bytes = await this.ctx.store.read(d);
    } catch (e) {
      throw storageUnavailable(e);
    }
    if (bytes === undefined) {
      this.ctx.log.warn({ digest: d.value }, 'manifest row without file; forgetting it');
      await this.ctx.meta.forgetManifest(d.value);
      return undefined;
    }
    this.bytes.set(d.value, bytes);
    this.ctx.descriptorSizes.note(parseManifestJson(bytes));
    return { bytes, size: bytes.byteLength, mediaType: rec.mediaType };
  }

  private async byDigest(route: Route, d: Digest, headOnly: boolean): Promise<ManifestResult> {
    const { ctx } = this;
    const local = await this.local(d, headOnly);
    if (local !== undefined && (await ctx.meta.hasLink(route.localRepo, d.value))) return answer(local, d.value, 'hit');
    const up = upstreamFor(ctx, route);
    if (up === undefined) throw ctx.errors.offlineUnknown('MANIFEST_UNKNOWN', route, d.value);
    return this.manifestFlight.do(`${route.localRepo}@${d.value}`, async () => {
      const fetched = await this.fetch(up, route, d.value).catch((e: unknown) => {
        throw ctx.errors.toClient(e, route, 'MANIFEST_UNKNOWN', `manifest ${d.value}`);
      });
      return { ...fetched, cache: 'miss' as CacheResult };
    });
  }

  private async byTag(route: Route, tag: string, headOnly: boolean): Promise<ManifestResult> {
    const { ctx } = this;
    const key = `${route.localRepo}:${tag}`;
    const rec = await ctx.meta.getTag(route.localRepo, tag);
    const up = upstreamFor(ctx, route);
    const ttl = up?.registry.tagTtlMs ?? ctx.config.cache.tagTtlMs;
    if (rec !== undefined) {
      const d = parseDigest(rec.digest);
      const cached = await this.local(d, headOnly);
      if (cached !== undefined) {
        if (up === undefined || ctx.now() - rec.checkedAt < ttl) return answer(cached, rec.digest, 'hit');
        // A revalidation's answer is shared with every waiting request, GETs too: with the bytes.
        const full = cached.bytes === undefined ? await this.local(d, false) : cached;
        if (full !== undefined) return this.revalidateWithin(up, route, tag, rec, full, key);
      }
    }
    if (up === undefined) throw ctx.errors.offlineUnknown('MANIFEST_UNKNOWN', route, tag);
    return this.tagFlight.do(key, async () => {
      const fetched = await this.fetch(up, route, tag).catch((e: unknown) => {
        throw ctx.errors.toClient(e, route, 'MANIFEST_UNKNOWN', `tag ${tag}`);
      });
      await ctx.meta.putTag(route.localRepo, tag, fetched.digest, ctx.now());
      return { ...fetched, cache: 'miss' as CacheResult };
    });
  }

  /**
   * Revalidates an expired tag, waiting at most the registry's revalidate_timeout: past it the
   * cached copy is answered as stale at once and the revalidation goes on in the background (its
   * answer updates the tag for the next request); requests arriving meanwhile get the stale copy
   * without waiting. A slow revalidation counts toward marking the registry down (breaker.ts).
   */
  private async revalidateWithin(up: UpstreamClient, route: Route, tag: string, rec: TagRecord, cached: LocalManifest, key: string): Promise<ManifestResult> {
    if (this.backgroundRevalidations.has(key)) return answer(cached, rec.digest, 'stale');
    const flight = this.tagFlight.do(key, () => this.revalidate(up, route, tag, rec, cached));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((r) => {
      timer = setTimeout(r, up.registry.timeouts.revalidateMs, undefined);
    });
    try {
      const first = await Promise.race([flight, late]);
      if (first !== undefined) return first;
    } finally {
      clearTimeout(timer);
    }
    if (!this.backgroundRevalidations.has(key)) {
      this.backgroundRevalidations.add(key);
      up.noteSlow();
      this.ctx.log.warn({ registry: route.registry, repo: route.upstreamRepo, tag, revalidateTimeoutMs: up.registry.timeouts.revalidateMs }, 'upstream slower than revalidate_timeout; serving cached tag as stale while the revalidation goes on');
      void flight.then(
        () => this.backgroundRevalidations.delete(key),
        () => this.backgroundRevalidations.delete(key),
      );
    }
    return answer(cached, rec.digest, 'stale');
  }

  /** One upstream HEAD; same digest refreshes the check time, a new one is fetched, failures serve stale. */
  private async revalidate(up: UpstreamClient, route: Route, tag: string, rec: TagRecord, cached: LocalManifest): Promise<ManifestResult> {
    const { ctx } = this;
    try {
      const head = await up.headManifest(route.upstreamRepo, tag);
      if (head.digest === rec.digest) {
        await ctx.meta.touchTag(route.localRepo, tag, rec.digest, ctx.now());
        return answer(cached, rec.digest, 'hit');
      }
      const ref = head.digest !== undefined && /^sha(256|512):/.test(head.digest) ? head.digest : tag;
      const fetched = await this.fetch(up, route, ref);
      await ctx.meta.putTag(route.localRepo, tag, fetched.digest, ctx.now());
      ctx.log.info({ registry: route.registry, repo: route.upstreamRepo, tag, from: rec.digest, to: fetched.digest }, 'tag moved upstream');
      return { ...fetched, cache: 'miss' };
    } catch (e) {
      if (e instanceof UpstreamError && e.servesStale) {
        ctx.log.warn({ registry: route.registry, repo: route.upstreamRepo, tag, err: e.message }, 'upstream failed; serving cached tag as stale');
        return answer(cached, rec.digest, 'stale');
      }
      throw ctx.errors.toClient(e, route, 'MANIFEST_UNKNOWN', `tag ${tag}`);
    }
  }

  /**
   * GETs a manifest upstream, verifies it, stores it byte for byte and links it to the repository.
   * `reference` is a tag or a digest; for a digest the bytes must hash to it.
   */
  private async fetch(up: UpstreamClient, route: Route, reference: string): Promise<Omit<ManifestResult, 'cache'>> {
    const { ctx } = this;
    const res = await up.getManifest(route.upstreamRepo, reference);
    const mediaType = manifestMediaType(res.contentType, res.body);
    if (mediaType === undefined) {
      throw new RegistryError('BAD_REQUEST', `${route.registry} served a manifest of an unsupported type (${res.contentType ?? 'none'}); Docker schema 1 is not supported`);
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
    try {
      await ctx.store.put(parseDigest(digest), res.body);
    } catch (e) {
      throw storageUnavailable(e);
    }
    const source = {
      registry: route.registry ?? 'local',
      repository: route.upstreamRepo,
      mediaType,
      size: res.body.byteLength,
      source: 'upstream' as const,
      sourceUrl: res.endpoint,
      ...(res.digestHeader === undefined ? {} : { upstreamDigest: res.digestHeader }),
    };
    await ctx.meta.putManifest(manifestEntry(route.localRepo, digest, res.body, source), ctx.now());
    this.bytes.set(digest, res.body);
    const parsed = parseManifestJson(res.body);
    ctx.descriptorSizes.note(parsed);
    ctx.log.info({ registry: route.registry, repo: route.upstreamRepo, reference, digest, mediaType, bytes: res.body.byteLength, cache: 'miss' }, 'manifest fetched');
    this.blobs.prefetchConfig(up, route, parsed);
    return { bytes: res.body, size: res.body.byteLength, mediaType, digest };
  }

  /** Lists tags: the upstream's answer, or the cached tags marked stale when the upstream fails. */
  async listTags(route: Route, query: string): Promise<TagsResult> {
    const { ctx } = this;
    const up = upstreamFor(ctx, route);
    const cachedList = async (cache: CacheResult): Promise<TagsResult> => ({
      body: Buffer.from(JSON.stringify({ name: route.upstreamRepo, tags: await ctx.meta.listTags(route.localRepo) })),
      cache,
    });
    if (up === undefined) return cachedList('hit');
    try {
      const r = await up.getTags(route.upstreamRepo, query);
      return r.link === undefined ? { body: r.body, cache: 'miss' } : { body: r.body, link: r.link, cache: 'miss' };
    } catch (e) {
      if (e instanceof UpstreamError && e.servesStale) return cachedList('stale');
      throw ctx.errors.toClient(e, route, 'NAME_UNKNOWN', 'tag list');
    }
  }
}
