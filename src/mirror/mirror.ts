/**
 * Mirror: the pull-through flow (DESIGN §2) behind one thin facade. The work is split by concern:
 * manifests and tags (manifests.ts), blobs and fills (blobs.ts), the client-facing mapping of
 * upstream failures (upstream-errors.ts). The Mirror keeps no metadata of its own (the MetaStore and
 * its caching decorator do) and knows nothing of HTTP frameworks: routes in, results or
 * RegistryErrors out, events on the stream for whoever subscribes.
 */
import type { Config } from '../config/index.ts';
import type { Route } from '../routing/index.ts';
import type { BlobStore } from '../store/index.ts';
import type { MetaStore } from '../meta/index.ts';
import type { UpstreamClient } from '../upstream/index.ts';
import type { Logger } from '../log/index.ts';
import { EventStream } from '../events/index.ts';
import { Blobs } from './blobs.ts';
import { Manifests } from './manifests.ts';
import { DescriptorSizes, type MirrorContext } from './context.ts';
import { UpstreamErrors } from './upstream-errors.ts';
import type { BlobResult, ManifestResult, TagsResult } from './types.ts';

export interface MirrorDeps {
  config: Config;
  store: BlobStore;
  meta: MetaStore;
  upstreams: ReadonlyMap<string, UpstreamClient>;
  log: Logger;
  /** Where the mirror reports what it does; a new, unsubscribed stream when absent. */
  events?: EventStream;
  now?: () => number;
}

export class Mirror {
  readonly events: EventStream;
  private readonly blobs: Blobs;
  private readonly manifests: Manifests;
  private readonly ctx: MirrorContext;

  constructor(deps: MirrorDeps) {
    this.events = deps.events ?? new EventStream();
    const ctx: MirrorContext = {
      config: deps.config,
      store: deps.store,
      meta: deps.meta,
      upstreams: deps.upstreams,
      log: deps.log,
      now: deps.now ?? Date.now,
      events: this.events,
      errors: new UpstreamErrors(deps.upstreams, deps.log),
      descriptorSizes: new DescriptorSizes(),
    };
    this.ctx = ctx;
    this.blobs = new Blobs(ctx);
    this.manifests = new Manifests(ctx, this.blobs);
  }

  /** See Manifests.get. Throws RegistryError. Without `headOnly` the result has its bytes. */
  getManifest(route: Route): Promise<ManifestResult & { bytes: Buffer }>;
  getManifest(route: Route, headOnly: boolean): Promise<ManifestResult>;
  getManifest(route: Route, headOnly = false): Promise<ManifestResult> {
    return this.manifests.get(route, headOnly);
  }

  /** See Blobs.get. Throws RegistryError. */
  getBlob(route: Route, headOnly: boolean, needsLength = false): Promise<BlobResult> {
    return this.blobs.get(route, headOnly, needsLength);
  }

  /** Lists tags: the upstream's answer, or the cached tags marked stale when the upstream fails. */
  listTags(route: Route, query: string): Promise<TagsResult> {
    return this.manifests.listTags(route, query);
  }

  /**
   * Takes a reloaded configuration (SIGHUP): offline mode and the default tag TTL apply to the
   * next request. The upstream clients are the caller's map, updated in place; the manifest memory
   * keeps its size until a restart.
   */
  reconfigure(config: Config): void {
    this.ctx.config = config;
  }

  /** Blob fills downloading now and the clients following them (metrics). */
  fillStats(): { fills: number; readers: number } {
    return this.blobs.fillStats();
  }

  /** Waits for running fills (bounded); no new background fills start. */
  close(timeoutMs = 5_000): Promise<void> {
    return this.blobs.close(timeoutMs);
  }
}
