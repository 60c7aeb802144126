/**
 * The cache lifecycle end to end (issue 16): a real docker-registry upstream, the mirror as its own
 * process with `[cache] max_size = "300MiB"`, skopeo pulling about 900 MiB of images one after
 * another. Bytes on disk stay within max_size plus the blob in flight; the least recently used
 * image goes first; a pinned image and a base layer shared with a kept image stay. Then the
 * `regmirror cache` commands beside the running server: rm (the next pull fetches again), verify
 * (a flipped byte is named, --repair quarantines it, the next pull refetches, verify --local passes),
 * pin, gc and du.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { startMirror, mirrorToml, BIN, type MirrorProcess } from '../helpers/mirror-process.ts';
import { MT, makeConfig, makeLayer, pushImage, sha256, type Image, type Layer } from '../helpers/fixtures.ts';
import { skopeo } from '../helpers/skopeo.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const MAX = 300 * MiB;

async function cli(args: string[], config: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args, '--config', config], { timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: err.code ?? -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** An OCI image of the given layers (shared layer objects make shared blobs). */
function imageOf(layers: Layer[]): Image {
  const config = makeConfig(layers, 'amd64', MT.ociConfig);
  const d = (b: { mediaType: string; digest: string; size: number }) => ({ mediaType: b.mediaType, digest: b.digest, size: b.size });
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociManifest, config: d(config), layers: layers.map(d) }));
  return { manifest: { digest: sha256(bytes), size: bytes.length, bytes, mediaType: MT.ociManifest }, config, layers, arch: 'amd64' };
}

/** Bytes of every committed file under data/blobs. */
function blobBytes(dataDir: string): number {
  let total = 0;
  const root = join(dataDir, 'blobs', 'sha256');
  if (!existsSync(root)) return 0;
  for (const p of readdirSync(root)) for (const f of readdirSync(join(root, p))) total += statSync(join(root, p, f)).size;
  return total;
}

const blobFile = (dataDir: string, digest: string): string => join(dataDir, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));

describe('cache lifecycle: a byte budget that holds, pins, rm, verify --repair, gc', { timeout: 900_000 }, () => {
  let work: string;
  let upstream: RegistryProcess;
  let mirror: MirrorProcess;
  let config: string;
  let dataDir: string;
  const base = makeLayer('lifecycle/base', 30 * MiB, MT.ociLayer);
  const images: Array<{ name: string; image: Image }> = [];
  const pinned = imageOf([makeLayer('lifecycle/pinned', 20 * MiB, MT.ociLayer)]);

  const pull = async (name: string): Promise<string> => {
    const dest = mkdtempSync(join(work, 'pull-'));
    try {
      await skopeo(['copy', '--src-tls-verify=false', `docker://${mirror.url.replace('http://', '')}/gcr.io/${name}`, `dir:${dest}`]);
      return sha256(readFileSync(join(dest, 'manifest.json')));
    } finally {
      rmSync(dest, { recursive: true, force: true }); // 20 concurrent copies are 3 GB
    }
  };

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-lifecycle-'));
    upstream = await startRegistry(join(work, 'upstream'));
    await pushImage(upstream.url, 'test/pinned', '1', pinned);
    for (let i = 0; i < 7; i++) {
      const image = imageOf([base, makeLayer(`lifecycle/own${i}`, 125 * MiB, MT.ociLayer)]);
      images.push({ name: `test/app${i}:1`, image });
      await pushImage(upstream.url, `test/app${i}`, '1', image);
    }
    dataDir = join(work, 'mirror', 'data');
    const dir = join(work, 'mirror');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir, { recursive: true });
    config = join(dir, 'mirror.toml');
    mirror = await startMirror(dir, mirrorToml(`[cache]\ntag_ttl = "1h"\nmax_size = "300MiB"\nevict_grace = "0s"\npins = ["gcr.io/test/pinned:1"]\n[[registry]]\nhost = "gcr.io"\nendpoint = "${upstream.url}"\n`, 'gcr.io'));
  });

  after(async () => {
    await mirror?.stop();
    await upstream?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  test('~900 MiB pulled one after another: disk stays within max_size + the blob in flight; LRU image evicted; the pin and the shared base stay', async () => {
    const biggest = Math.max(...images.map((i) => i.image.layers[1]?.size ?? 0));
    let peak = 0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, blobBytes(dataDir));
    }, 50);
    try {
      assert.equal(await pull('test/pinned:1'), pinned.manifest.digest);
      let pulled = pinned.manifest.size + pinned.config.size + (pinned.layers[0]?.size ?? 0);
      for (const { name, image } of images) {
        assert.equal(await pull(name), image.manifest.digest, `pull of ${name}`);
        pulled += image.layers.reduce((a, l) => a + l.size, 0);
      }
      assert.ok(pulled >= 900 * MiB, `pulled ${pulled} bytes`);
      // The last sweep runs as the last fill finishes.
      const until = Date.now() + 10_000;
      while (blobBytes(dataDir) > MAX && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    } finally {
      clearInterval(sampler);
    }
    assert.ok(blobBytes(dataDir) <= MAX, `after the pulls ${blobBytes(dataDir)} bytes on disk, max_size ${MAX}`);
    assert.ok(peak <= MAX + biggest, `peak ${peak} bytes on disk, more than max_size + the blob in flight (${MAX + biggest})`);

    const ls = JSON.parse((await cli(['cache', 'ls', '--json'], config)).stdout) as Array<{ names: string[]; digest: string; pinned: boolean; kind: string }>;
    const names = ls.flatMap((i) => i.names);
    assert.deepEqual(ls.filter((i) => i.kind !== 'image').map((i) => i.digest), [], 'no image lost its manifest while its layer was filling (no unreferenced blobs left)');
    assert.ok(names.includes('gcr.io/test/pinned:1'), `the pinned image stays: ${names.join(', ')}`);
    assert.ok(ls.find((i) => i.names.includes('gcr.io/test/pinned:1'))?.pinned === true);
    // The server's API lists the same images with the same fields and units (RFC 3339 times).
    const api = ((await (await fetch(`${mirror.url}/_regmirror/v1/cache/images`)).json()) as { images: Array<Record<string, unknown>> }).images;
    const fromCli = (ls as unknown as Array<Record<string, unknown>>).find((i) => (i.names as string[]).includes('gcr.io/test/pinned:1'));
    const fromApi = api.find((i) => (i.names as string[]).includes('gcr.io/test/pinned:1'));
    assert.deepEqual(Object.keys(fromApi ?? {}).sort(), Object.keys(fromCli ?? {}).sort());
    assert.match(String(fromApi?.lastUsed), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    assert.equal(fromApi?.digest, fromCli?.digest);
    assert.ok(!names.includes('gcr.io/test/app0:1'), `the least recently used image was evicted: ${names.join(', ')}`);
    assert.ok(names.includes('gcr.io/test/app6:1'), `the last image pulled stays: ${names.join(', ')}`);
    assert.ok(existsSync(blobFile(dataDir, base.digest)), 'the base layer shared with a kept image stays');
    assert.ok(!existsSync(blobFile(dataDir, images[0]?.image.layers[1]?.digest ?? '')), "app0's own layer is gone");
    const log = mirror.logText();
    assert.match(log, /"reason":"budget"[^\n]*"msg":"evicted"|"msg":"evicted"[^\n]*"reason":"budget"/, 'each eviction is logged with its reason');
    assert.match(log, /"image":"gcr\.io\/test\/app0:1"/, 'the log names the evicted image');

    // An evicted image is pulled through again (and is now the most recently used: the tests below use it).
    assert.equal(await pull('test/app0:1'), images[0]?.image.manifest.digest);
  });

  test('cache rm beside the running server: the next pull fetches from the upstream again', async () => {
    const target = images[0];
    assert.ok(target !== undefined);
    const own = target.image.layers[1];
    assert.ok(own !== undefined);
    const before = (mirror.logText().match(new RegExp(`"digest":"${own.digest}"[^\\n]*blob cached`, 'g')) ?? []).length;
    const rm = await cli(['cache', 'rm', 'gcr.io/test/app0:1'], config);
    assert.equal(rm.code, 0, rm.stderr);
    assert.match(rm.stdout, /removed gcr\.io\/test\/app0:1/);
    assert.ok(!existsSync(blobFile(dataDir, own.digest)), 'its own layer is gone');
    assert.equal(await pull('test/app0:1'), target.image.manifest.digest);
    const afterCount = (mirror.logText().match(new RegExp(`"digest":"${own.digest}"[^\\n]*blob cached`, 'g')) ?? []).length;
    assert.equal(afterCount, before + 1, 'the layer was fetched from the upstream again');
    const missing = await cli(['cache', 'rm', 'gcr.io/test/never:1'], config);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /not in the cache/);
  });

  test('cache verify names a flipped byte, --repair quarantines it, the next pull refetches and verify --local passes', async () => {
    const target = images[0];
    const layer = target?.image.layers[1];
    assert.ok(target !== undefined && layer !== undefined);
    const file = blobFile(dataDir, layer.digest);
    const bytes = readFileSync(file);
    bytes[1000] = (bytes[1000] ?? 0) ^ 0xff;
    writeFileSync(file, bytes);
    const v = await cli(['cache', 'verify'], config);
    assert.equal(v.code, 1, v.stdout);
    assert.match(v.stdout, new RegExp(`CORRUPT blob ${layer.digest}`));
    const r = await cli(['cache', 'verify', '--repair'], config);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /quarantined/);
    assert.ok(!existsSync(file), 'moved aside');
    assert.ok(readdirSync(join(dataDir, 'quarantine')).some((f) => f.startsWith(`sha256-${layer.digest.slice(7)}`)));
    assert.equal(await pull('test/app0:1'), target.image.manifest.digest);
    const clean = await cli(['cache', 'verify'], config);
    assert.equal(clean.code, 0, clean.stdout);
    const local = await cli(['verify', '--local', 'gcr.io/test/app0:1'], config);
    assert.equal(local.code, 0, local.stdout + local.stderr);
  });

  test('cache pin / unpin, gc --dry-run and gc, du', async () => {
    const pin = await cli(['cache', 'pin', 'gcr.io/test/app0:1'], config);
    assert.equal(pin.code, 0, pin.stderr);
    let ls = JSON.parse((await cli(['cache', 'ls', '--json'], config)).stdout) as Array<{ names: string[]; pinned: boolean }>;
    assert.equal(ls.find((i) => i.names.includes('gcr.io/test/app0:1'))?.pinned, true);
    assert.equal((await cli(['cache', 'unpin', 'gcr.io/test/app0:1'], config)).code, 0);
    ls = JSON.parse((await cli(['cache', 'ls', '--json'], config)).stdout) as Array<{ names: string[]; pinned: boolean }>;
    assert.equal(ls.find((i) => i.names.includes('gcr.io/test/app0:1'))?.pinned, false);
    assert.equal((await cli(['cache', 'unpin', 'gcr.io/test/app0:1'], config)).code, 1, 'unpin of what is not pinned says so');
    // seed --pin pins what it seeded.
    const list = join(work, 'seed-list.txt');
    writeFileSync(list, 'gcr.io/test/app0:1\n');
    const seeded = await cli(['seed', list, '--pin'], config);
    assert.equal(seeded.code, 0, seeded.stdout + seeded.stderr);
    ls = JSON.parse((await cli(['cache', 'ls', '--json'], config)).stdout) as Array<{ names: string[]; pinned: boolean }>;
    assert.equal(ls.find((i) => i.names.includes('gcr.io/test/app0:1'))?.pinned, true, 'seed --pin pinned it');
    assert.equal((await cli(['cache', 'unpin', 'gcr.io/test/app0:1'], config)).code, 0);

    // A stray file no row knows and nothing references: gc reports it, then removes it.
    const stray = Buffer.from('stray content');
    const strayDigest = sha256(stray);
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(dataDir, 'blobs', 'sha256', strayDigest.slice(7, 9)), { recursive: true });
    writeFileSync(blobFile(dataDir, strayDigest), stray);
    // Stray means older than a minute (a fill's row follows its bytes by a moment).
    const hourAgo = new Date(Date.now() - 3600_000);
    utimesSync(blobFile(dataDir, strayDigest), hourAgo, hourAgo);
    const fresh = sha256(Buffer.from('just committed'));
    writeFileSync(blobFile(dataDir, fresh), Buffer.from('just committed'));
    const dry = JSON.parse((await cli(['cache', 'gc', '--dry-run', '--json'], config)).stdout) as { strayFiles: Array<{ digest: string; action: string }> };
    assert.ok(dry.strayFiles.some((f) => f.digest === strayDigest && f.action === 'removed'));
    assert.ok(existsSync(blobFile(dataDir, strayDigest)), 'a dry run removes nothing');
    const gc = await cli(['cache', 'gc'], config);
    assert.equal(gc.code, 0, gc.stderr);
    assert.ok(!existsSync(blobFile(dataDir, strayDigest)));
    assert.ok(existsSync(blobFile(dataDir, fresh)), 'a file without a row younger than a minute stays');
    const du = JSON.parse((await cli(['cache', 'du', '--json'], config)).stdout) as { total: number; byRegistry: Record<string, { bytes: number }> };
    assert.ok(du.total > 0 && du.total <= MAX, `du total ${du.total}`);
    assert.ok((du.byRegistry['gcr.io']?.bytes ?? 0) > 0);
    // Every pull still works after all of it.
    assert.equal(await pull('test/pinned:1'), pinned.manifest.digest);
  });

  test('20 concurrent skopeo pulls of images that cannot all fit, while eviction runs: 0 failed, 0 digest mismatches', async () => {
    const before = (mirror.logText().match(/"msg":"evicted"/g) ?? []).length;
    const pulls = Array.from({ length: 20 }, (_, i) => images[i % images.length]);
    const results = await Promise.allSettled(pulls.map(async (x) => (x === undefined ? '' : [x.image.manifest.digest, await pull(x.name)])));
    const failed = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
    assert.deepEqual(failed, [], 'every pull succeeded');
    for (const r of results) if (r.status === 'fulfilled' && Array.isArray(r.value)) assert.equal(r.value[1], r.value[0], 'the pulled manifest has the pushed digest');
    assert.ok((mirror.logText().match(/"msg":"evicted"/g) ?? []).length > before, 'eviction ran during the pulls');
  });

  /** Every file under blobs/ hashes to its name; every row has its file (after the restart's reconciliation). */
  const consistent = async (): Promise<void> => {
    const Database = (await import('better-sqlite3')).default;
    const { createHash } = await import('node:crypto');
    const root = join(dataDir, 'blobs', 'sha256');
    for (const p of readdirSync(root)) {
      for (const f of readdirSync(join(root, p))) {
        assert.equal(createHash('sha256').update(readFileSync(join(root, p, f))).digest('hex'), f, `blobs/sha256/${p}/${f} hashes to its name`);
      }
    }
    const db = new Database(join(dataDir, 'meta.db'), { readonly: true });
    try {
      for (const table of ['blobs', 'manifests']) {
        for (const r of db.prepare(`SELECT digest FROM ${table}`).all() as Array<{ digest: string }>) assert.ok(existsSync(blobFile(dataDir, r.digest)), `${table} row ${r.digest} has its file`);
      }
    } finally {
      db.close();
    }
  };
  const restart = async (toml: string): Promise<void> => {
    mirror = await startMirror(join(work, 'mirror'), toml);
    await waitForLog(/start-up reconciliation/);
  };
  const waitForLog = async (re: RegExp, ms = 30_000): Promise<void> => {
    const until = Date.now() + ms;
    while (!re.test(mirror.logText())) {
      if (Date.now() > until) throw new Error(`no ${re} in the mirror log`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const normal = (): string => mirrorToml(`[cache]\ntag_ttl = "1h"\nmax_size = "300MiB"\nevict_grace = "0s"\npins = ["gcr.io/test/pinned:1"]\n[[registry]]\nhost = "gcr.io"\nendpoint = "${upstream.url}"\n`, 'gcr.io');

  test('kill -9 during eviction, then during cache gc: after a restart every file hashes to its name, every row has its file, pulls succeed', async () => {
    await mirror.stop();
    // A much smaller budget: the first sweep evicts nearly everything; the process is killed at its first eviction.
    mirror = await startMirror(join(work, 'mirror'), mirrorToml(`[cache]\nmax_size = "40MiB"\nevict_grace = "0s"\n[[registry]]\nhost = "gcr.io"\nendpoint = "${upstream.url}"\n`, 'gcr.io'));
    await waitForLog(/"msg":"evicted"/);
    process.kill(mirror.pid, 'SIGKILL');
    await mirror.stop();
    await restart(normal());
    await consistent();
    assert.equal(await pull(images[3]?.name ?? ''), images[3]?.image.manifest.digest);
    await mirror.stop();

    // Stray content for gc to remove, and gc killed while it works.
    const { mkdirSync } = await import('node:fs');
    for (let i = 0; i < 3000; i++) {
      const b = Buffer.from(`stray ${i}`);
      const d = sha256(b);
      mkdirSync(join(dataDir, 'blobs', 'sha256', d.slice(7, 9)), { recursive: true });
      writeFileSync(blobFile(dataDir, d), b);
      const old = new Date(Date.now() - 3600_000);
      utimesSync(blobFile(dataDir, d), old, old);
    }
    const child = (await import('node:child_process')).spawn(process.execPath, [BIN, 'cache', 'gc', '--config', config], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 700));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));
    await restart(normal());
    await consistent();
    assert.equal(await pull('test/pinned:1'), pinned.manifest.digest);
    assert.equal(await pull(images[5]?.name ?? ''), images[5]?.image.manifest.digest);
  });
});

test('config: evict_at without max_size, evict_to above evict_at and a bad pin stop start-up naming the key', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'regmirror-lifecycle-cfg-'));
  const cases: Array<[string, RegExp]> = [
    ['[cache]\nevict_at = "90%"\n', /cache\.evict_at: is a share of max_size/],
    ['[cache]\nmax_size = "1GiB"\nevict_at = "80%"\nevict_to = "90%"\n', /cache\.evict_to: must not be above evict_at/],
    ['[cache]\nmax_size = "1GiB"\nevict_at = "150%"\n', /cache\.evict_at: "150%" is not a percentage/],
    ['[cache]\npins = ["gcr.io/UPPER:1"]\n', /cache\.pins\[0\]/],
  ];
  try {
    for (const [body, want] of cases) {
      const file = join(dir, 'mirror.toml');
      writeFileSync(file, mirrorToml(`${body}[[registry]]\nhost = "gcr.io"\nendpoint = "http://127.0.0.1:9"\n`, 'gcr.io'));
      const r = await cli(['cache', 'du'], file);
      assert.equal(r.code, 2, `${body}: ${r.stdout}`);
      assert.match(r.stderr, want);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('cache API: the admin role', { timeout: 120_000 }, () => {
  let work: string;
  let open: MirrorProcess;
  let guarded: MirrorProcess;
  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-lifecycle-api-'));
    const { mkdirSync } = await import('node:fs');
    for (const d of ['open', 'guarded']) mkdirSync(join(work, d));
    open = await startMirror(join(work, 'open'), mirrorToml('[[registry]]\nhost = "gcr.io"\nendpoint = "http://127.0.0.1:9"\n', 'gcr.io'));
    guarded = await startMirror(
      join(work, 'guarded'),
      mirrorToml('[auth]\n[[auth.user]]\nname = "ops"\npassword = "ops-secret-1"\nroles = ["admin"]\n[[auth.user]]\nname = "dev"\npassword = "dev-secret-1"\nroles = ["pull"]\n[[registry]]\nhost = "gcr.io"\nendpoint = "http://127.0.0.1:9"\n', 'gcr.io'),
    );
  });
  after(async () => {
    await open?.stop();
    await guarded?.stop();
    rmSync(work, { recursive: true, force: true });
  });
  const basic = (u: string, p: string): string => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

  test('without [auth]: listing answers, a change is refused naming the fix', async () => {
    const ls = await fetch(`${open.url}/_regmirror/v1/cache/images`);
    assert.equal(ls.status, 200);
    assert.deepEqual(((await ls.json()) as { images: unknown[] }).images, []);
    const gc = await fetch(`${open.url}/_regmirror/v1/cache/gc`, { method: 'POST' });
    assert.equal(gc.status, 403);
    assert.match(await gc.text(), /\\"admin\\" role: add \[auth\]/);
  });

  test('with [auth]: anonymous 401, a user without admin 403, an admin user is served', async () => {
    const anon = await fetch(`${guarded.url}/_regmirror/v1/cache/usage`);
    assert.equal(anon.status, 401);
    const dev = await fetch(`${guarded.url}/_regmirror/v1/cache/gc?dry_run=true`, { method: 'POST', headers: { Authorization: basic('dev', 'dev-secret-1') } });
    assert.equal(dev.status, 403);
    assert.match(await dev.text(), /lacks the \\?"admin\\?" role/);
    const ops = await fetch(`${guarded.url}/_regmirror/v1/cache/gc?dry_run=true`, { method: 'POST', headers: { Authorization: basic('ops', 'ops-secret-1') } });
    assert.equal(ops.status, 200);
    assert.equal(((await ops.json()) as { dryRun: boolean }).dryRun, true);
    const rm = await fetch(`${guarded.url}/_regmirror/v1/cache/images?image=gcr.io/never/there:1`, { method: 'DELETE', headers: { Authorization: basic('ops', 'ops-secret-1') } });
    assert.equal(rm.status, 404);
    const bad = await fetch(`${guarded.url}/_regmirror/v1/cache/pins?image=gcr.io/UPPER:1`, { method: 'PUT', headers: { Authorization: basic('ops', 'ops-secret-1') } });
    assert.equal(bad.status, 400);
  });
});
