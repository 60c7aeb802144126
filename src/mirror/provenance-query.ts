/**
 * Read side of provenance for the API and the CLI: an image reference → its record, the repo
 * digests through every way the mirror can be addressed, tags, index children; lists; a summary.
 */
import { RegistryError } from '../oci/index.ts';
import { DOCKER_HUB } from '../config/docker-hub.ts';
import { routeImage, type RoutingTable } from '../routing/index.ts';
import type { MetaStore, ProvenanceRecord, ProvenanceFilter } from '../meta/index.ts';
import { COUNTERS, type ProvenanceRecorder } from './provenance-recorder.ts';

export interface ImageRef {
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

/**
 * Parses `[registry/]repo[:tag][@digest]` the way container tools do (routing.routeImage: a first
 * component with a dot, a colon or `localhost` is the registry, a configured namespace maps to its
 * registry, else the default; Docker Hub gets `library/`). Local namespaces have no registry and
 * are refused. Throws RegistryError NAME_INVALID / TAG_INVALID / DIGEST_INVALID / DENIED.
 */
export function parseImageRef(image: string, table: RoutingTable): ImageRef {
  const { route, tag, digest } = routeImage(image, table);
  if (route.registry === undefined) throw new RegistryError('NAME_INVALID', `"${image}" is in a local namespace, which has no upstream registry`);
  const ref: ImageRef = { registry: route.registry, repository: route.upstreamRepo };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());

export interface ImageProvenance {
  image: string;
  registry: string;
  repository: string;
  tag: string | null;
  digest: string;
  mediaType: string;
  size: number;
  repoDigests: string[];
  tags: string[];
  source: { type: string; url: string | null };
  upstreamDigest: string | null;
  firstFetched: string | null;
  lastChecked: string | null;
  lastServed: string | null;
  hits: number;
  misses: number;
  children: Array<{ digest: string; mediaType: string | null; platform: string | null }>;
}

export class ProvenanceQuery {
  constructor(
    private readonly meta: MetaStore,
    private readonly recorder: ProvenanceRecorder,
    /** The routing table now (a reload may replace it). */
    private readonly routing: () => RoutingTable,
  ) {}

  private get table(): RoutingTable {
    return this.routing();
  }

  /** Every repo digest an image has: at the source and through each way of addressing the mirror. */
  repoDigests(registry: string, repository: string, digest: string, mirrorHost: string): string[] {
    const out = [`${registry}/${repository}@${digest}`, `${mirrorHost}/${registry}/${repository}@${digest}`];
    for (const [ns, reg] of this.table.namespaces) if (reg === registry) out.push(`${mirrorHost}/${ns}/${repository}@${digest}`);
    if (registry === this.table.defaultRegistry) {
      const short = registry === DOCKER_HUB && repository.startsWith('library/') && repository.split('/').length === 2 ? repository.slice(8) : repository;
      out.push(`${mirrorHost}/${short}@${digest}`);
    }
    return out;
  }

  private async render(rec: ProvenanceRecord, image: string, tag: string | undefined, mirrorHost: string): Promise<ImageProvenance> {
    const [tags, children] = await Promise.all([this.meta.tagsFor(rec.repo, rec.digest), this.meta.children(rec.digest)]);
    return {
      image,
      registry: rec.registry,
      repository: rec.repository,
      tag: tag ?? null,
      digest: rec.digest,
      mediaType: rec.mediaType,
      size: rec.size,
      repoDigests: this.repoDigests(rec.registry, rec.repository, rec.digest, mirrorHost),
      tags,
      source: { type: rec.source, url: rec.sourceUrl ?? null },
      upstreamDigest: rec.upstreamDigest ?? null,
      firstFetched: iso(rec.firstFetched),
      lastChecked: iso(rec.lastChecked),
      lastServed: iso(rec.lastServed),
      hits: rec.hits,
      misses: rec.misses,
      children: children.map((c) => ({ digest: c.digest, mediaType: c.mediaType ?? null, platform: c.platform ?? null })),
    };
  }

  /** The provenance of one image as cached. Throws RegistryError MANIFEST_UNKNOWN when the mirror has not stored it. */
  async describe(image: string, mirrorHost: string): Promise<ImageProvenance> {
    await this.recorder.flush();
    const ref = parseImageRef(image, this.table);
    const repo = `${ref.registry}/${ref.repository}`;
    const digest = ref.digest ?? (ref.tag === undefined ? undefined : (await this.meta.getTag(repo, ref.tag))?.digest);
    const rec = digest === undefined ? undefined : await this.meta.getProvenance(repo, digest);
    if (rec === undefined) throw new RegistryError('MANIFEST_UNKNOWN', `${image} has not been pulled through this mirror`);
    return this.render(rec, image, ref.tag, mirrorHost);
  }

  async list(filter: ProvenanceFilter, mirrorHost: string): Promise<ImageProvenance[]> {
    await this.recorder.flush();
    const records = await this.meta.listProvenance(filter);
    return Promise.all(records.map((rec) => this.render(rec, `${rec.registry}/${rec.repository}@${rec.digest}`, undefined, mirrorHost)));
  }

  async summary(): Promise<Record<string, number>> {
    await this.recorder.flush();
    const [t, c] = await Promise.all([this.meta.totals(), this.meta.counters()]);
    const blobHits = c[COUNTERS.blobHits] ?? 0;
    const blobMisses = c[COUNTERS.blobMisses] ?? 0;
    const requests = t.hits + t.misses + blobHits + blobMisses;
    return {
      manifests: t.manifests,
      manifestHits: t.hits,
      manifestMisses: t.misses,
      blobs: t.blobs,
      blobBytesCached: t.blobBytes,
      blobHits,
      blobMisses,
      hitRatio: requests === 0 ? 0 : (t.hits + blobHits) / requests,
      bytesServedFromCache: c[COUNTERS.bytesServedFromCache] ?? 0,
      bytesServedDuringFill: c[COUNTERS.bytesServedDuringFill] ?? 0,
      bytesFetchedUpstream: c[COUNTERS.bytesFetchedUpstream] ?? 0,
    };
  }
}
