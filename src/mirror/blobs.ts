/**
 * The blob side of the pull-through flow (DESIGN §2): a hit is read from the BlobStore; a miss joins
 * or starts the one upstream fill of its digest (single-flight across repositories, with the
 * cross-repository rule: a repository not known to hold a digest must be confirmed by its upstream
 * first); a full cache disk relays without caching. Answers are BlobResult objects (blob-results.ts).
 */
import { RegistryError, parseDigest, type Digest, type ManifestJson } from '../oci/index.ts';
import { BlobVerifyError, isStorageError } from '../store/index.ts';
import type { Route } from '../routing/index.ts';
import { UpstreamError, type BlobFetch, type UpstreamClient } from '../upstream/index.ts';
import { BlobFill } from './blob-fill.ts';
import { RelayBlob } from './blob-relay.ts';
import { FillBlob, HeadMiss, HitBlob } from './blob-results.ts';
import { upstreamFor, type MirrorContext } from './context.ts';
import { storageUnavailable } from './upstream-errors.ts';
import type { BlobResult } from './types.ts';

/** Free space past a blob's size at which the cache does not look further (statfs only). */
const ROOMY_BYTES = 1024 ** 3;
/** Free space a fill must leave on the cache disk (SQLite, uploads, the rest of the system). */
const RESERVE_BYTES = 64 * 1024 * 1024;
/** Config blobs up to this size are fetched as soon as their image manifest is (prefetchConfig). */
const PREFETCH_CONFIG_MAX = 1024 * 1024;

export class Blobs {
  /** digest → the one upstream download of it, and the repository it was fetched through. */
  private readonly fills = new Map<string, { repo: string; fill: Promise<BlobFill> }>();
  /** Fills whose upstream answered and that are still downloading (fillStats). */
  private readonly downloading = new Set<BlobFill>();
  /** Set by close(): no new background fills. */
  private closed = false;
  /** The cache disk was found full (noteDiskFull); cleared when roomFor sees room again. */
  private diskFull = false;

  constructor(private readonly ctx: MirrorContext) {}

  /**
   * Resolves a blob route. A hit opens the stored blob; a miss joins or starts the one upstream fill
   * for the digest. Throws RegistryError BLOB_UNKNOWN and upstream errors mapped for the client.
   * With `headOnly`, a miss asks the upstream for the size without downloading. With `needsLength`
   * (a client that cannot tell a cut body from a complete one without it: HTTP/1.0, or a proxy
   * speaking HTTP/1.0 to the mirror), a miss whose size nobody knows waits for the fill to be
   * verified and stored, and is then served from the cache with its length.
   */
  async get(route: Route, headOnly: boolean, needsLength = false): Promise<BlobResult> {
    const { ctx } = this;
    const ref = route.reference;
    if (ref?.kind !== 'digest') throw new RegistryError('DIGEST_INVALID', 'blob reference must be a digest');
    const d = parseDigest(ref.digest);
    const up = upstreamFor(ctx, route);
    const blobError = (e: unknown): RegistryError => ctx.errors.toClient(e, route, 'BLOB_UNKNOWN', `blob ${d.value}`);

    const local = await this.openLocal(route, d);
    if (local !== undefined) {
      if (await ctx.meta.hasLink(route.localRepo, d.value)) return local;
      if (up !== undefined) {
        // Known blob, unknown repository: the upstream must confirm the repository holds it.
        try {
          await up.headBlob(route.upstreamRepo, d.value);
          await ctx.meta.link(route.localRepo, d.value);
          return local;
        } catch (e) {
          local.discard();
          throw blobError(e);
        }
      }
      local.discard();
    }
    if (up === undefined) throw ctx.errors.offlineUnknown('BLOB_UNKNOWN', route, d.value);

    const inflight = this.fills.get(d.value);
    if (inflight !== undefined && inflight.repo !== route.localRepo && !(await ctx.meta.hasLink(route.localRepo, d.value))) {
      // Joining another repository's download: the upstream must confirm this repository holds it.
      await up.headBlob(route.upstreamRepo, d.value).catch((e: unknown) => {
        throw blobError(e);
      });
      await ctx.meta.link(route.localRepo, d.value);
    }
    if (headOnly && inflight === undefined) {
      const size = await up.headBlob(route.upstreamRepo, d.value).catch((e: unknown) => {
        throw blobError(e);
      });
      return new HeadMiss(d.value, size);
    }
    if (inflight === undefined && !(await this.roomFor(up, route, d))) return this.relay(up, route, d, needsLength, blobError);
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
      const committed = await this.openLocal(route, d);
      if (committed !== undefined) return committed;
      throw new RegistryError('BLOB_UNKNOWN', `blob ${d.value} vanished from the cache right after it was stored; retry`);
    }
    fill.acquire();
    return new FillBlob(fill, d.value, route, ctx.events, blobError);
  }

  /** A blob relayed without caching (the cache disk is full). */
  private async relay(up: UpstreamClient, route: Route, d: Digest, needsLength: boolean, blobError: (e: unknown) => RegistryError): Promise<BlobResult> {
    const { ctx } = this;
    const started = ctx.now();
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
      throw new RegistryError('CACHE_FULL', `the mirror's cache disk is full and ${route.registry} does not say how long blob ${d.value} is, which an HTTP/1.0 client needs; free space on the mirror or retry over HTTP/1.1`);
    }
    ctx.log.info({ registry: route.registry, repo: route.upstreamRepo, digest: d.value, bytes: size }, 'cache disk full: relaying blob without caching');
    return new RelayBlob(d, size, res.body, (bytes) => {
      if (ctx.events.has('fillFinished')) {
        ctx.events.emit('fillFinished', { registry: route.registry ?? 'local', repo: route.localRepo, digest: d.value, bytes, durationMs: ctx.now() - started, outcome: 'relayed' });
      }
    });
  }

  private async openLocal(route: Route, d: Digest): Promise<HitBlob | undefined> {
    let reader;
    try {
      reader = await this.ctx.store.open(d);
    } catch (e) {
      throw storageUnavailable(e);
    }
    if (reader === undefined) return undefined;
    this.ctx.meta.noteBlobRead(d.value, reader.size, this.ctx.now());
    return new HitBlob(reader, d.value, route, this.ctx.events);
  }

  /**
   * Whether the cache disk can take blob `d`: plenty free (ROOMY_BYTES past its size, when known),
   * or, when space is short, at least RESERVE_BYTES left after it (its size from its manifest, else
   * one upstream HEAD). No room: the blob is relayed without caching, and the first such answer of a
   * shortage is logged with the free space (once, until the disk has room again).
   */
  private async roomFor(up: UpstreamClient, route: Route, d: Digest): Promise<boolean> {
    let free: number | undefined;
    try {
      free = await this.ctx.store.freeBytes();
    } catch {
      free = undefined;
    }
    if (free === undefined) return true; // cannot tell: a full store still fails the fill, and that is logged
    let size = this.ctx.descriptorSizes.get(d.value);
    if (free >= (size ?? 0) + ROOMY_BYTES) {
      if (this.diskFull) {
        this.diskFull = false;
        this.ctx.log.info({ freeBytes: free }, 'the cache disk has room again: blobs are cached again');
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
    this.ctx.log.error(
      { freeBytes, neededBytes, dataDir: this.ctx.config.server.dataDir },
      'the cache disk is full: blobs that do not fit are relayed to clients verified but not cached; free space on the disk (or give the cache a bigger one)',
    );
  }

  /**
   * A blob's length: the upstream's Content-Length, else the size its manifest's descriptor gives.
   * Throws UpstreamError bad_response (and drops the body) when the two disagree.
   */
  private blobLength(res: BlobFetch, route: Route, d: Digest): number | undefined {
    const described = this.ctx.descriptorSizes.get(d.value);
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
  prefetchConfig(up: UpstreamClient, route: Route, manifest: ManifestJson | undefined): void {
    const config = manifest?.config;
    if (typeof config?.digest !== 'string' || typeof config.size !== 'number' || config.size > PREFETCH_CONFIG_MAX) return;
    let d: Digest;
    try {
      d = parseDigest(config.digest);
    } catch {
      return;
    }
    if (this.fills.has(d.value)) return;
    void this.ctx.store.stat(d).then(
      (size) => {
        if (size === undefined && !this.closed) void this.fillOf(up, route, d).fill.catch(() => undefined);
      },
      () => undefined,
    );
  }

  /** Starts the single upstream download of a blob; resolves once the upstream has answered. */
  private async startFill(up: UpstreamClient, route: Route, d: Digest): Promise<BlobFill> {
    const { ctx } = this;
    const started = ctx.now();
    const res = await up.getBlob(route.upstreamRepo, d.value);
    const size = this.blobLength(res, route, d);
    let writer;
    try {
      writer = await ctx.store.begin(d, size);
    } catch (e) {
      res.body.destroy();
      throw storageUnavailable(e);
    }
    const fill = new BlobFill(writer, size);
    this.downloading.add(fill);
    const registry = route.registry ?? 'local';
    if (ctx.events.has('fillStarted')) ctx.events.emit('fillStarted', { registry, repo: route.localRepo, digest: d.value, size });
    const log = ctx.log.child({ registry: route.registry, repo: route.upstreamRepo, digest: d.value });
    const finished = (outcome: 'stored' | 'failed', error?: string): void => {
      if (!ctx.events.has('fillFinished')) return;
      ctx.events.emit('fillFinished', { registry, repo: route.localRepo, digest: d.value, bytes: writer.bytesWritten, durationMs: ctx.now() - started, outcome, ...(error === undefined ? {} : { error }) });
    };
    void (async () => {
      try {
        await fill.download(res.body);
        await writer.commit();
        await ctx.meta.putBlob(route.localRepo, d.value, writer.bytesWritten, ctx.now());
        this.fills.delete(d.value);
        this.downloading.delete(fill);
        fill.commit();
        finished('stored');
        log.info({ bytes: writer.bytesWritten, durationMs: ctx.now() - started, cache: 'miss' }, 'blob cached');
      } catch (e) {
        res.body.destroy();
        await writer.abort().catch(() => undefined);
        this.fills.delete(d.value);
        this.downloading.delete(fill);
        let err: Error;
        if (e instanceof BlobVerifyError) err = e;
        else if (isStorageError(e)) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ENOSPC' || code === 'EDQUOT') this.noteDiskFull(await ctx.store.freeBytes().catch(() => undefined), size);
          err = new RegistryError('UNAVAILABLE', `the mirror could not write blob ${d.value} to its cache (${code ?? 'storage error'}); retry`, { cause: e });
        } else err = new UpstreamError('unavailable', `blob download from ${route.registry} failed: ${(e as Error).message}`, undefined, undefined, { cause: e });
        log.warn({ err: err.message, bytes: writer.bytesWritten }, 'blob fill failed; nothing cached');
        finished('failed', err.message);
        fill.fail(err);
      }
    })();
    return fill;
  }

  /** Fills downloading now and the clients following them. */
  fillStats(): { fills: number; readers: number } {
    let readers = 0;
    for (const f of this.downloading) readers += f.readerCount;
    return { fills: this.downloading.size, readers };
  }

  /** Waits for running fills (bounded); no new background fills start. */
  async close(timeoutMs: number): Promise<void> {
    this.closed = true;
    const pending = [...this.fills.values()].map((e) => e.fill.then((f) => f.done()).catch(() => undefined));
    await Promise.race([Promise.all(pending), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }
}
