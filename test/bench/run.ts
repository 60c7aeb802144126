/**
 * `npm run bench`: one run on loopback. Starts a real upstream (docker-registry) with generated
 * deterministic images, regmirror in front of it, and measures:
 *   1. cold pull time of each image through the mirror vs directly from the upstream (skopeo),
 *      and the bytes the upstream sent for it;
 *   2. warm manifest GET by tag and by digest, 64 connections (autocannon): requests/s, p99;
 *   3. warm 256 MiB blob GET throughput, 1 and 16 clients.
 * Prints a table and writes bench-results/bench-<time>.{json,md}. Bounded: ~1-2 minutes.
 */
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import autocannon from 'autocannon';
import { startRegistry } from '../helpers/registry-process.ts';
import { startMirror, ROOT, type MirrorProcess } from '../helpers/mirror-process.ts';
import { skopeo } from '../helpers/skopeo.ts';
import { makeImage, pushImage, type Image } from '../helpers/fixtures.ts';

const MiB = 1024 * 1024;
const LOAD_SECONDS = Number(process.env.BENCH_SECONDS ?? 8);

interface Row {
  metric: string;
  value: number;
  unit: string;
  note?: string;
}
const rows: Row[] = [];
const record = (metric: string, value: number, unit: string, note?: string): void => {
  rows.push(note === undefined ? { metric, value, unit } : { metric, value, unit, note });
  console.log(`  ${metric}: ${value.toFixed(unit === 'req/s' || unit === 'bytes' ? 0 : 2)} ${unit}${note === undefined ? '' : ` (${note})`}`);
};

/** Sum of response bytes in the upstream's combined access log for blob GETs. */
function upstreamBlobBytes(logFile: string): number {
  let total = 0;
  for (const line of readFileSync(logFile, 'utf8').split('\n')) {
    const m = /"GET [^"]*\/blobs\/sha256:[0-9a-f]{64} HTTP\/[\d.]+" 200 (\d+)/.exec(line);
    if (m !== null) total += Number(m[1]);
  }
  return total;
}

async function load(url: string, title: string): Promise<void> {
  const r = await autocannon({ url, connections: 64, duration: LOAD_SECONDS, pipelining: 1 });
  if (r.non2xx > 0 || r.errors > 0) throw new Error(`${title}: ${r.non2xx} non-2xx, ${r.errors} errors`);
  record(`${title} requests/s`, r.requests.average, 'req/s', '64 connections');
  record(`${title} p99 latency`, r.latency.p99, 'ms');
}

async function blobThroughput(mirror: MirrorProcess, path: string, size: number, clients: number, rounds: number): Promise<void> {
  const pool = new Pool(mirror.url, { connections: clients });
  const started = performance.now();
  let bytes = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      for (let i = 0; i < rounds; i++) {
        const res = await pool.request({ path, method: 'GET' });
        if (res.statusCode !== 200) throw new Error(`blob GET ${res.statusCode}`);
        for await (const chunk of res.body) bytes += (chunk as Buffer).length;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  await pool.close();
  if (bytes !== size * clients * rounds) throw new Error(`blob throughput: got ${bytes} bytes, expected ${size * clients * rounds}`);
  record(`warm blob GET, ${clients} client${clients === 1 ? '' : 's'}`, bytes / seconds / 1e9, 'GB/s', `${(size / MiB).toFixed(0)} MiB blob x ${clients * rounds}`);
}

async function timedCopy(src: string): Promise<number> {
  const dest = mkdtempSync(join(tmpdir(), 'bench-pull-'));
  const t = performance.now();
  await skopeo(['copy', '--src-tls-verify=false', src, `dir:${dest}`], 300_000);
  const s = (performance.now() - t) / 1000;
  rmSync(dest, { recursive: true, force: true });
  return s;
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'regmirror-bench-'));
  console.log(`regmirror benchmark (work dir ${work})`);
  const upstream = await startRegistry(join(work, 'upstream'));
  const small = makeImage('bench-small', [MiB, MiB, MiB], 'oci');
  const large = makeImage('bench-large', [256 * MiB], 'oci');
  const images: Array<[string, Image]> = [['small', small], ['large', large]];
  for (const [name, im] of images) await pushImage(upstream.url, `bench/${name}`, 'v1', im);
  const mirrorToml = (dataDir: string) => `default_registry = "gcr.io"
[server]
listen = "127.0.0.1:0"
data_dir = "${dataDir}"
[cache]
tag_ttl = "1h"
[[registry]]
host = "gcr.io"
endpoint = "${upstream.url}"
`;
  let mirror = await startMirror(work, mirrorToml('data'));
  try {
    console.log('1. cold pulls (skopeo copy to dir:)');
    for (const [name, im] of images) {
      const imageBytes = im.config.size + im.layers.reduce((a, l) => a + l.size, 0);
      const direct = await timedCopy(`docker://${upstream.url.slice(7)}/bench/${name}:v1`);
      const before = upstreamBlobBytes(upstream.logFile);
      const viaMirror = await timedCopy(`docker://${mirror.hostPort}/gcr.io/bench/${name}:v1`);
      const fetched = upstreamBlobBytes(upstream.logFile) - before;
      record(`cold pull ${name}, direct from upstream`, direct, 's');
      record(`cold pull ${name}, through regmirror`, viaMirror, 's', `${(viaMirror / direct).toFixed(2)}x direct`);
      record(`cold pull ${name}, upstream blob bytes / image size`, fetched / imageBytes, 'x');
    }
    console.log('2. warm manifests, 64 connections');
    await load(`${mirror.url}/v2/gcr.io/bench/small/manifests/v1`, 'manifest GET by tag');
    await load(`${mirror.url}/v2/gcr.io/bench/small/manifests/${small.manifest.digest}`, 'manifest GET by digest');
    console.log('3. warm 256 MiB blob');
    const blob = large.layers[0];
    if (blob === undefined) throw new Error('no layer');
    const path = `/v2/gcr.io/bench/large/blobs/${blob.digest}`;
    await blobThroughput(mirror, path, blob.size, 1, 4);
    await blobThroughput(mirror, path, blob.size, 16, 1);
  } finally {
    await mirror.stop();
    await upstream.stop();
  }
  const out = join(ROOT, 'bench-results');
  mkdirSync(out, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  writeFileSync(join(out, `bench-${stamp}.json`), JSON.stringify({ date: new Date().toISOString(), node: process.version, rows }, null, 2));
  const md = ['| metric | value | unit | note |', '|---|---:|---|---|', ...rows.map((r) => `| ${r.metric} | ${r.value.toFixed(2)} | ${r.unit} | ${r.note ?? ''} |`)].join('\n');
  writeFileSync(join(out, `bench-${stamp}.md`), `${md}\n`);
  console.log(`\n${md}\n\nwritten to bench-results/bench-${stamp}.{json,md}`);
  rmSync(work, { recursive: true, force: true });
  void mirror;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
