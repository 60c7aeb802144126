/**
 * `regmirror seed LIST`: fills the cache before it is needed (air-gapped sites, pre-warming).
 * Each reference in LIST is pulled through the same Mirror the server uses: the manifest (every
 * platform of an index, or those `--platform` names), then config and layers, each verified and
 * stored as a pull would. Idempotent: what is cached already is not fetched again.
 */
import type { Readable } from 'node:stream';
import { RegistryError, isIndexType, parseManifestJson, platformOf, referencedDigests } from '../oci/index.ts';
import { routeImage, siblingRoute, type Route } from '../routing/index.ts';
import type { Runtime } from './runtime.ts';
import { Progress, forEachLimit } from './progress.ts';
import { formatBytes } from '../config/index.ts';

export interface SeedOptions {
  /** "os/arch[/variant]" filters for index children; empty = every platform. */
  platforms: string[];
  /** Images seeded at once. */
  concurrency: number;
}

export interface SeedSummary {
  images: number;
  seeded: number;
  failed: Array<{ image: string; error: string }>;
  manifests: { total: number; fetched: number };
  blobs: { total: number; fetched: number; cached: number };
  bytesFetched: number;
  durationMs: number;
}

/** True when an index child's platform is wanted ("linux/arm64" also matches "linux/arm64/v8"). */
export function platformWanted(platform: string | undefined, filters: readonly string[]): boolean {
  if (filters.length === 0) return true;
  if (platform === undefined) return false;
  return filters.some((f) => platform === f || platform.startsWith(`${f}/`));
}

async function drain(stream: Readable): Promise<number> {
  let n = 0;
  for await (const chunk of stream) n += (chunk as Buffer).byteLength;
  return n;
}

export async function seed(rt: Runtime, images: readonly string[], opts: SeedOptions, progress = new Progress()): Promise<SeedSummary> {
  const started = Date.now();
  const summary: SeedSummary = { images: images.length, seeded: 0, failed: [], manifests: { total: 0, fetched: 0 }, blobs: { total: 0, fetched: 0, cached: 0 }, bytesFetched: 0, durationMs: 0 };
  /** One task per blob digest in this run: images sharing a layer wait for the same download. */
  const blobTasks = new Map<string, Promise<void>>();
  let done = 0;
  const status = (): void => progress.update(done, images.length, `images, ${summary.blobs.total} blobs, ${formatBytes(summary.bytesFetched)} fetched`);

  const blob = (route: Route, digest: string): Promise<void> => {
    let task = blobTasks.get(digest);
    if (task === undefined) {
      task = (async () => {
        const b = await rt.mirror.getBlob(siblingRoute(route, 'blob', digest), false);
        summary.blobs.total++;
        if (b.cache === 'hit') {
          b.discard();
          summary.blobs.cached++;
          return;
        }
        const n = await drain(await b.open());
        if (b.size !== undefined && n !== b.size) throw new RegistryError('BLOB_UNKNOWN', `blob ${digest} transfer was cut at ${n} of ${b.size} bytes`);
        // Read in full is not stored: the fill's last step (fsync, rename into place) can still fail.
        await b.stored();
        summary.blobs.fetched++;
        summary.bytesFetched += n;
        status();
      })();
      blobTasks.set(digest, task);
    }
    return task;
  };

  /** Fetches one manifest, then its children (index) or its blobs (image). */
  const manifest = async (route: Route): Promise<void> => {
    const m = await rt.mirror.getManifest(route);
    summary.manifests.total++;
    if (m.cache === 'miss') summary.manifests.fetched++;
    if (isIndexType(m.mediaType)) {
      const children = (parseManifestJson(m.bytes)?.manifests ?? []).filter((c) => typeof c.digest === 'string' && platformWanted(platformOf(c.platform), opts.platforms));
      if (children.length === 0) throw new RegistryError('MANIFEST_UNKNOWN', `no platform of the index matches --platform ${opts.platforms.join(',')}`);
      for (const c of children) await manifest(siblingRoute(route, 'manifest', c.digest as string));
      return;
    }
    const blobs = referencedDigests(m.bytes).blobs;
    await forEachLimit(blobs, 3, (d) => blob(route, d));
  };

  status();
  await forEachLimit(images, opts.concurrency, async (image) => {
    try {
      const { route } = routeImage(image, rt.routing);
      if (route.registry === undefined) throw new RegistryError('DENIED', `${image} is in a local namespace: local namespaces are filled by push or import, not seed`);
      const before = { blobs: summary.blobs.fetched, bytes: summary.bytesFetched };
      await manifest(route);
      summary.seeded++;
      progress.line(`seeded  ${image}  (${summary.blobs.fetched - before.blobs} blobs, ${formatBytes(summary.bytesFetched - before.bytes)} fetched)`);
    } catch (e) {
      const error = (e as Error).message;
      summary.failed.push({ image, error });
      progress.line(`FAILED  ${image}: ${error}`);
    } finally {
      done++;
      status();
    }
  });
  progress.finish();
  summary.durationMs = Date.now() - started;
  return summary;
}

export function formatSeedSummary(s: SeedSummary): string {
  return [
    `images    ${s.seeded} of ${s.images} seeded${s.failed.length > 0 ? `, ${s.failed.length} FAILED` : ''}`,
    `manifests ${s.manifests.total} (${s.manifests.fetched} fetched)`,
    `blobs     ${s.blobs.total} (${s.blobs.fetched} fetched, ${s.blobs.cached} already cached)`,
    `fetched   ${formatBytes(s.bytesFetched)} in ${(s.durationMs / 1000).toFixed(1)} s`,
    ...s.failed.map((f) => `FAILED    ${f.image}: ${f.error}`),
  ].join('\n');
}
