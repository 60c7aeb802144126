/**
 * What the parts of the mirror (manifests.ts, blobs.ts) share: the two stores, the upstream
 * clients, the event stream, the error mapping, and the blob sizes manifests describe.
 */
import { LRUCache } from 'lru-cache';
import type { Config } from '../config/index.ts';
import type { Route } from '../routing/index.ts';
import type { ManifestJson } from '../oci/index.ts';
import type { BlobStore } from '../store/index.ts';
import type { MetaStore } from '../meta/index.ts';
import type { UpstreamClient } from '../upstream/index.ts';
import type { Logger } from '../log/index.ts';
import type { EventStream } from '../events/index.ts';
import type { UpstreamErrors } from './upstream-errors.ts';

/**
 * digest → size, from the descriptors of manifests read or fetched: a blob's length is known
 * before its upstream says (or when it sends none: chunked, close-delimited), so every client
 * gets a Content-Length and can tell a cut transfer from a complete one (issue 14, defect 9).
 * A fact about immutable content, never stale.
 */
export class DescriptorSizes {
  private readonly sizes = new LRUCache<string, number>({ max: 200_000 });

  get(digest: string): number | undefined {
    return this.sizes.get(digest);
  }

  /** Remembers the sizes an image manifest's descriptors give its config and layers. */
  note(m: ManifestJson | undefined): void {
    if (m === undefined) return;
    for (const desc of [m.config, ...(m.layers ?? [])]) {
      if (typeof desc?.digest === 'string' && typeof desc.size === 'number' && Number.isSafeInteger(desc.size) && desc.size >= 0) {
        this.sizes.set(desc.digest, desc.size);
      }
    }
  }
}

export interface MirrorContext {
  config: Config;
  store: BlobStore;
  meta: MetaStore;
  upstreams: ReadonlyMap<string, UpstreamClient>;
  log: Logger;
  now: () => number;
  events: EventStream;
  errors: UpstreamErrors;
  descriptorSizes: DescriptorSizes;
}

/** The upstream a route may fetch from; undefined for local namespaces and offline registries. */
export function upstreamFor(ctx: MirrorContext, route: Route): UpstreamClient | undefined {
  if (route.registry === undefined) return undefined;
  if (ctx.config.cache.offline) return undefined;
  const up = ctx.upstreams.get(route.registry);
  return up === undefined || up.registry.offline ? undefined : up;
}
