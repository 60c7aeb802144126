/**
 * `regmirror cache ls|du|rm|pin|unpin|gc|verify`: parse, call src/lifecycle/, print. They open the
 * cache directly and are safe beside a running server on the same data dir.
 */
import type { Config } from '../config/index.ts';
import { formatBytes } from '../config/index.ts';
import type { Logger } from '../log/index.ts';
import { referenceOf, routeImage } from '../routing/index.ts';
import { collectGarbage, diskUsage, imageSummary, isoTime, listImages, pinImage, removeImage, unpinImage, verifyCache, type CacheRef } from '../lifecycle/cache-admin.ts';
import { openRuntime, routingOf } from './runtime.ts';

export interface CacheCliOptions {
  json: boolean;
  registry?: string;
  dryRun: boolean;
  repair: boolean;
}

const out = (s: string): void => void process.stdout.write(s);

/** IMAGE as pulled (`gcr.io/foo/bar:1.0`, `nginx`, `site/app@sha256:...`) → repository + tag or digest. Throws RegistryError. */
export function cacheRef(config: Config, image: string): CacheRef {
  const r = routeImage(image, routingOf(config));
  return { repo: r.route.localRepo, ...(r.tag === undefined ? {} : { tag: r.tag }), ...(r.digest === undefined ? {} : { digest: r.digest }) };
}

export async function cacheAction(action: string, config: Config, log: Logger, image: string, o: CacheCliOptions): Promise<number> {
  // Resolve IMAGE first: a bad reference is a usage error before anything is opened.
  const ref = image === '' ? undefined : cacheRef(config, image);
  const rt = await openRuntime(config, log, false);
  const deps = { store: rt.store, meta: rt.meta, log, events: rt.events };
  try {
    switch (action) {
      case 'ls': {
        const images = await listImages(rt.meta, o.registry);
        if (o.json) {
          out(`${JSON.stringify(images.map(imageSummary), null, 2)}\n`);
          return 0;
        }
        out(`${'IMAGE'.padEnd(48)} ${'DIGEST'.padEnd(19)} ${'OWN'.padStart(10)} ${'TOTAL'.padStart(10)}  LAST USED             PINNED\n`);
        for (const i of images) {
          const name = i.names[0] ?? (i.root === undefined ? '(unreferenced blob)' : '(untagged)');
          const digest = (i.root ?? i.blobs[0] ?? '').slice(0, 19);
          out(`${name.padEnd(48)} ${digest.padEnd(19)} ${formatBytes(i.ownBytes).padStart(10)} ${formatBytes(i.bytes).padStart(10)}  ${isoTime(i.usedAt).padEnd(21)} ${i.pinned ? 'yes' : ''}\n`);
        }
        return 0;
      }
      case 'du': {
        const du = await diskUsage(rt.meta);
        if (o.json) out(`${JSON.stringify(du, null, 2)}\n`);
        else {
          for (const [k, v] of Object.entries(du.byRegistry).sort((a, b) => b[1].bytes - a[1].bytes)) out(`${formatBytes(v.bytes).padStart(10)}  ${k} (${v.images} images)\n`);
          out(`${formatBytes(du.total).padStart(10)}  total${config.cache.maxSizeBytes === undefined ? '' : ` of max_size ${formatBytes(config.cache.maxSizeBytes)}`}\n`);
        }
        return 0;
      }
      case 'rm': {
        const r = await removeImage(deps, ref as CacheRef);
        if (r === undefined) {
          process.stderr.write(`regmirror: ${image} is not in the cache\n`);
          return 1;
        }
        if (o.json) out(`${JSON.stringify({ image, digest: r.image.root, bytes: r.bytes })}\n`);
        else out(`removed ${image} (${r.image.root ?? ''}): ${formatBytes(r.bytes)} freed\n`);
        return 0;
      }
      case 'pin':
      case 'unpin': {
        const p = ref as CacheRef;
        if (action === 'pin') {
          await pinImage(rt.meta, p, 'cli');
          out(`pinned ${image}\n`);
          return 0;
        }
        if (!(await unpinImage(rt.meta, p))) {
          process.stderr.write(`regmirror: ${image} is not pinned\n`);
          return 1;
        }
        out(`unpinned ${image}${config.cache.pins.some((x) => x.repo === p.repo && x.reference === referenceOf(p)) ? ' (it is in [cache] pins: pinned again at the next start)' : ''}\n`);
        return 0;
      }
      case 'gc': {
        const r = await collectGarbage(deps, { graceMs: config.cache.evictGraceMs, dryRun: o.dryRun });
        if (o.json) out(`${JSON.stringify(r, null, 2)}\n`);
        else {
          const verb = o.dryRun ? 'would remove' : 'removed';
          out(`${verb} ${r.orphanBlobs.length} unreferenced blobs, ${r.strayFiles.filter((f) => f.action === 'removed').length} stray files: ${formatBytes(r.bytes)}\n`);
          if (r.missing.length > 0) out(`${o.dryRun ? 'would forget' : 'forgot'} ${r.missing.length} rows whose bytes are missing\n`);
          const adopted = r.strayFiles.filter((f) => f.action === 'adopted').length;
          if (adopted > 0) out(`${o.dryRun ? 'would adopt' : 'adopted'} ${adopted} referenced files that had no row\n`);
        }
        return 0;
      }
      case 'verify': {
        const r = await verifyCache(deps, { repair: o.repair });
        if (o.json) out(`${JSON.stringify(r, null, 2)}\n`);
        else {
          for (const c of r.corrupt) out(`CORRUPT ${c.kind} ${c.digest}: the bytes hash to ${c.actual}${o.repair ? ' (quarantined; the next pull fetches it again)' : ''}\n`);
          for (const m of r.missing) out(`MISSING ${m.kind} ${m.digest}${o.repair ? ' (row forgotten)' : ''}\n`);
          out(`checked ${r.checked} objects, ${formatBytes(r.bytes)}: ${r.corrupt.length} corrupt, ${r.missing.length} missing\n`);
        }
        return r.corrupt.length + r.missing.length === 0 ? 0 : 1;
      }
      default:
        throw new Error(`unknown cache action ${action}`);
    }
  } finally {
    await rt.close();
  }
}
