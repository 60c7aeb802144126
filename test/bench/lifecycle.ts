/**
 * Benchmark phase 8: the cache lifecycle on the metadata-scale cache (scale-cache.ts): `cache gc
 * --dry-run`, an eviction sweep of half the cache (started by a pull once 64 connections already GET
 * a pinned tag), then `cache gc` removing the unreferenced blobs the sweep left.
 *
 * The latency figure is taken at a fixed offered load (64 connections x 16 req/s = 1024 req/s,
 * about a fifth of what the mirror answers flat out here, arrivals spread: tools.ts heySpread),
 * once on a quiet mirror and once during the sweep, both in this run: at full speed the p99 of 64
 * connections on 2 cores is the queue behind a saturated event loop (20-30 ms with no sweep at
 * all), which says nothing of what a sweep costs the requests beside it.
 *
 * Alone: node --import tsx test/bench/lifecycle.ts (builds the scale cache, about a minute;
 * LIFECYCLE_SCALE_FROM=DIR copies one built before; LIFECYCLE_NODE_ARGS adds node options to the
 * evicting mirror, e.g. --cpu-prof)
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startMirror, mirrorToml, BIN } from '../helpers/mirror-process.ts';
import { hey, heySpread, RssSampler, type LoadResult } from './tools.ts';
import { waitFor } from '../helpers/net.ts';
import { makeImage, pushImage } from '../helpers/fixtures.ts';
import { buildScaleCache, scaleCacheOf, type ScaleCache } from './scale-cache.ts';

const runCli = promisify(execFile);
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json';
/** Requests per second per connection during the latency figures. */
const RATE = 16;

export interface LifecycleFigures {
  gcDrySeconds: number;
  gcDryOrphans: number;
  gcSeconds: number;
  gcRemoved: number;
  quiet: LoadResult;
  duringSweep: LoadResult;
  sweepSeconds: number;
  evictedImages: number;
  sweepRssMiB: number;
  quietRssMiB: number;
  /** Requests per second per connection of the fixed load. */
  rate: number;
  /** Seconds this filesystem takes to unlink gcRemoved small files (measured on a sample of 10k, scaled). */
  unlinkFloorSeconds: number;
}

/**
 * Times unlinking `n` small files under `dir` as gc does (2000 at a time), in seconds: spread over
 * 256 folders like blobs/sha256/xx and written to disk first (`sync`), as a cache's files are; a
 * file still only in the page cache unlinks ten times faster here.
 */
async function unlinkSeconds(dir: string, n: number): Promise<number> {
  for (let i = 0; i < 256; i++) mkdirSync(join(dir, i.toString(16).padStart(2, '0')), { recursive: true });
  const files = Array.from({ length: n }, (_, i) => join(dir, (i % 256).toString(16).padStart(2, '0'), `f${i}`));
  for (const f of files) writeFileSync(f, 'x');
  await runCli('sync');
  const t = performance.now();
  for (let i = 0; i < files.length; i += 2000) await Promise.all(files.slice(i, i + 2000).map((f) => unlink(f)));
  rmSync(dir, { recursive: true, force: true });
  return (performance.now() - t) / 1000;
}

/** Runs phase 8 on the scale cache in `scaleDir` (its `data` folder as built by buildScaleCache). */
export async function lifecycleAtScale(scaleDir: string, cache: ScaleCache, upstreamUrl: string, seconds: number): Promise<LifecycleFigures> {
  // The layer whose pull sets off the sweep: 256 KiB, 4 % of this cache (a bigger one would push
  // the sweep's target down to nearly nothing).
  const im = makeImage('lifecycle-trigger', [256 * 1024], 'oci');
  await pushImage(upstreamUrl, 'bench/trigger', 'v1', im);
  const trigger = `/v2/bench/trigger/blobs/${im.layers[0]?.digest ?? ''}`;
  const registry = `[[registry]]\nhost = "gcr.io"\nendpoint = "${upstreamUrl}"\n`;
  const scaleConfig = join(scaleDir, 'mirror.toml');
  const pinned = `/v2/scale/app/manifests/t0`;

  // The quiet baseline at the fixed load, on the same cache (no budget: nothing is evicted).
  const quietMirror = await startMirror(scaleDir, mirrorToml(`[cache]\ntag_ttl = "24h"\n${registry}`, 'gcr.io'));
  let quiet: LoadResult;
  let quietRssMiB: number;
  try {
    // The first start on this cache reconciles its 120k files with the rows: measured after that.
    await waitFor('start-up reconciliation', () => quietMirror.logText().includes('start-up reconciliation'), 120_000);
    await hey(`${quietMirror.url}${pinned}`, 'GET', 1, 8, { Accept: ACCEPT });
    const sampler = new RssSampler(quietMirror.pid);
    quiet = await heySpread(`${quietMirror.url}${pinned}`, 'GET', seconds, 64, RATE, { Accept: ACCEPT });
    quietRssMiB = sampler.stop();
  } finally {
    await quietMirror.stop();
  }

  const g0 = performance.now();
  const dry = JSON.parse((await runCli(process.execPath, [BIN, 'cache', 'gc', '--dry-run', '--json', '--config', scaleConfig], { maxBuffer: 64 * 1024 * 1024 })).stdout) as { orphanBlobs: unknown[] };
  const gcDrySeconds = (performance.now() - g0) / 1000;

  // A budget the cache sits just under (89.9 % of max_size, evict_at 90 %) with evict_to = 45 %: the
  // mirror starts quiet; once the load runs, one pulled layer (`trigger`, a blob URL path) puts it
  // over and the sweep removes about half of everything (~60k objects) beside the load.
  const maxSize = Math.ceil(cache.bytes / 0.899);
  const evicting = await startMirror(scaleDir, mirrorToml(`[cache]\ntag_ttl = "24h"\nmax_size = ${maxSize}\nevict_to = "45%"\nevict_grace = "0s"\npins = ["gcr.io/scale/app:t0"]\n${registry}`, 'gcr.io'), {}, (process.env.LIFECYCLE_NODE_ARGS ?? '').split(' ').filter(Boolean));
  let duringSweep: LoadResult;
  let sweepRssMiB: number;
  let log: string;
  try {
    await waitFor('start-up reconciliation', () => evicting.logText().includes('start-up reconciliation'), 120_000);
    await hey(`${evicting.url}${pinned}`, 'GET', 1, 8, { Accept: ACCEPT });
    const sampler = new RssSampler(evicting.pid);
    const load = heySpread(`${evicting.url}${pinned}`, 'GET', seconds, 64, RATE, { Accept: ACCEPT });
    await new Promise((r) => setTimeout(r, 500));
    const res = await fetch(`${evicting.url}${trigger}`);
    if (res.status !== 200) throw new Error(`the trigger pull got ${res.status}`);
    await res.arrayBuffer();
    duringSweep = await load;
    sweepRssMiB = sampler.stop();
    // The sweep goes on after the load: its length and total are read from the log once it ends.
    await waitFor('the sweep to end', () => {
      const lines = evicting.logText().split('\n').filter((l) => l.includes('"msg":"evicted"'));
      const last = Date.parse(/"time":"([^"]+)"/.exec(lines[lines.length - 1] ?? '')?.[1] ?? '');
      return lines.length > 0 && Date.now() - last > 3000;
    }, 300_000, 500);
    log = evicting.logText();
    if (process.env.LIFECYCLE_KEEP_LOG !== undefined) (await import('node:fs')).writeFileSync(process.env.LIFECYCLE_KEEP_LOG, log);
  } finally {
    await evicting.stop();
  }
  const evicted = log.split('\n').filter((l) => l.includes('"msg":"evicted"'));
  const times = evicted.map((l) => Date.parse(/"time":"([^"]+)"/.exec(l)?.[1] ?? '')).filter((t) => !Number.isNaN(t));
  const sweepSeconds = times.length < 2 ? NaN : ((times[times.length - 1] ?? 0) - (times[0] ?? 0)) / 1000;

  const g1 = performance.now();
  const real = JSON.parse((await runCli(process.execPath, [BIN, 'cache', 'gc', '--json', '--config', scaleConfig], { maxBuffer: 64 * 1024 * 1024 })).stdout) as { orphanBlobs: unknown[] };
  const gcSeconds = (performance.now() - g1) / 1000;
  const sample = 10_000;
  const unlinkFloorSeconds = ((await unlinkSeconds(join(scaleDir, 'unlink-sample'), sample)) * real.orphanBlobs.length) / sample;
  return { gcDrySeconds, gcDryOrphans: dry.orphanBlobs.length, gcSeconds, gcRemoved: real.orphanBlobs.length, quiet, duringSweep, sweepSeconds, evictedImages: evicted.length, sweepRssMiB, quietRssMiB, rate: RATE, unlinkFloorSeconds };
}

// Alone: builds the scale cache, starts an upstream, prints the figures.
if (import.meta.url === `file://${process.argv[1]}`) {
  const { startRegistry } = await import('../helpers/registry-process.ts');
  const work = mkdtempSync(join(tmpdir(), 'regmirror-lifecycle-bench-'));
  const upstream = await startRegistry(join(work, 'upstream'));
  try {
    const scaleDir = join(work, 'scale');
    // LIFECYCLE_SCALE_FROM: a scale cache built before (its folder holds `data`), copied instead.
    const from = process.env.LIFECYCLE_SCALE_FROM;
    const cache = from === undefined ? await buildScaleCache(join(scaleDir, 'data')) : (cpSync(join(from, 'data'), join(scaleDir, 'data'), { recursive: true }), scaleCacheOf());
    console.log(JSON.stringify(await lifecycleAtScale(scaleDir, cache, upstream.url, Number(process.env.BENCH_SECONDS ?? 5)), null, 1));
  } finally {
    await upstream.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
