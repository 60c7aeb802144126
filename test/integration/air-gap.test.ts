/**
 * Air-gapped operation end to end: `regmirror seed` fills the cache from a real docker-registry,
 * the upstream is stopped, regmirror restarts offline and skopeo pulls every image from it through
 * every routing shape; `export` / `import` carry the cache to a second, empty mirror with identical
 * digests; a corrupted bundle is refused naming the bad digest, with nothing half-imported.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { startMirror, mirrorToml, BIN, type MirrorProcess } from '../helpers/mirror-process.ts';
import { makeImage, makeIndex, pushImage, pushIndex, sha256, type Image, type IndexImage } from '../helpers/fixtures.ts';
import { skopeo } from '../helpers/skopeo.ts';

const run = promisify(execFile);

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(args: string[], config: string): Promise<CliResult> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args, '--config', config], { timeout: 120_000, env: { ...process.env, CI: 'true' } });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: err.code ?? -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** The digest of the manifest skopeo pulled (a full copy: every blob is fetched and checked). */
async function pulledDigest(work: string, ref: string, all = false): Promise<string> {
  const dest = mkdtempSync(join(work, 'pull-'));
  await skopeo(['copy', '--src-tls-verify=false', ...(all ? ['--all'] : []), `docker://${ref}`, `dir:${dest}`]);
  return sha256(readFileSync(join(dest, 'manifest.json')));
}

function rows(dataDir: string, table: string): number {
  const db = new Database(join(dataDir, 'meta.db'), { readonly: true });
  try {
    return (db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
  } finally {
    db.close();
  }
}

const REGISTRIES = (endpoint: string, extra = ''): string =>
  `[[registry]]\nhost = "gcr.io"\nendpoint = "${endpoint}"\n${extra}[[registry]]\nhost = "quay.io"\nendpoint = "${endpoint}"\n[[namespace]]\nname = "gdc"\nregistry = "gcr.io"\n`;

describe('air-gapped operation: seed, offline, bundles', { timeout: 600_000 }, () => {
  let work: string;
  let upstream: RegistryProcess;
  let upstreamUrl: string;
  let app: Image;
  let tool: Image;
  let pinned: Image;
  let multi: IndexImage;
  let seedDir: string;
  let listFile: string;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-airgap-'));
    upstream = await startRegistry(join(work, 'upstream'));
    upstreamUrl = upstream.url;
    app = makeImage('airgap-app', [512 * 1024, 256 * 1024], 'docker');
    tool = makeImage('airgap-tool', [300 * 1024], 'oci');
    pinned = makeImage('airgap-pinned', [128 * 1024], 'oci');
    multi = makeIndex('airgap-multi', ['amd64', 'arm64'], 200 * 1024);
    await pushImage(upstream.url, 'team/app', 'v1', app);
    await pushImage(upstream.url, 'team/tool', '2.0', tool);
    await pushImage(upstream.url, 'team/pinned', 'old', pinned);
    await pushIndex(upstream.url, 'team/multi', 'v1', multi);
    seedDir = join(work, 'seed');
    mkdirSync(seedDir);
    writeFileSync(join(seedDir, 'mirror.toml'), mirrorToml(`[cache]\ntag_ttl = "1s"\n${REGISTRIES(upstream.url)}`, 'gcr.io'));
    listFile = join(work, 'images.txt');
    writeFileSync(
      listFile,
      [
        '# images for the disconnected site',
        'gcr.io/team/app:v1',
        'quay.io/team/tool:2.0   # a second registry',
        '',
        `gcr.io/team/pinned@${pinned.manifest.digest}`,
        'gcr.io/team/multi:v1',
      ].join('\n'),
    );
  });

  after(async () => {
    await upstream?.stop();
  });

  test('seed pulls every listed image (tags, digests, every platform of an index) and sums it up', async () => {
    const r = await cli(['seed', listFile, '--json'], join(seedDir, 'mirror.toml'));
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const s = JSON.parse(r.stdout) as { images: number; seeded: number; failed: unknown[]; manifests: { total: number; fetched: number }; blobs: { total: number; fetched: number; cached: number }; bytesFetched: number };
    assert.equal(s.images, 4);
    assert.equal(s.seeded, 4);
    assert.deepEqual(s.failed, []);
    assert.equal(s.manifests.total, 6, 'app, tool, pinned, the index and its two children');
    const blobs = [app, tool, pinned, ...multi.images].flatMap((im) => [im.config, ...im.layers]);
    assert.equal(s.blobs.fetched, blobs.length);
    assert.equal(s.bytesFetched, blobs.reduce((a, b) => a + b.size, 0));
    assert.match(r.stderr, /seeded {2}gcr\.io\/team\/app:v1/, 'a progress line per image when not on a terminal');
  });

  test('a second seed fetches nothing new', async () => {
    const layerGets = upstream.accessCount('GET', '/blobs/sha256:');
    await new Promise((r) => setTimeout(r, 1_100)); // past tag_ttl: tags are revalidated with HEAD, not refetched
    const r = await cli(['seed', listFile], join(seedDir, 'mirror.toml'));
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /blobs +11 \(0 fetched, 11 already cached\)/);
    assert.match(r.stdout, /fetched +0 B/);
    assert.equal(upstream.accessCount('GET', '/blobs/sha256:'), layerGets, 'no blob was downloaded again');
  });

  test('seed names an image that cannot be had and exits 1', async () => {
    const bad = join(work, 'bad.txt');
    writeFileSync(bad, 'gcr.io/team/app:v1\ngcr.io/team/nope:1\nevil.example.com/x:1\n');
    const r = await cli(['seed', bad], join(seedDir, 'mirror.toml'));
    assert.equal(r.code, 1);
    assert.match(r.stdout, /images +1 of 3 seeded, 2 FAILED/);
    assert.match(r.stdout, /FAILED +gcr\.io\/team\/nope:1: tag 1 not found in team\/nope/);
    assert.match(r.stdout, /FAILED +evil\.example\.com\/x:1: registry "evil\.example\.com" is not mirrored here/);
  });

  test('--platform seeds only the named platforms of an index', async () => {
    const dir = join(work, 'platform');
    mkdirSync(dir);
    writeFileSync(join(dir, 'mirror.toml'), mirrorToml(REGISTRIES(upstream.url), 'gcr.io'));
    const list = join(dir, 'list.txt');
    writeFileSync(list, 'gcr.io/team/multi:v1\n');
    const r = await cli(['seed', list, '--platform', 'linux/arm64', '--json'], join(dir, 'mirror.toml'));
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as { manifests: { total: number }; blobs: { fetched: number } };
    assert.equal(s.manifests.total, 2, 'the index and the arm64 image');
    assert.equal(s.blobs.fetched, 2, 'its config and layer');
  });

  describe('with the upstream gone', () => {
    let offline: MirrorProcess;
    let bundle: string;
    let bundleGz: string;

    before(async () => {
      // Bundles are written while we are at it; export reads the cache only.
      bundle = join(work, 'site.tar');
      bundleGz = join(work, 'site.tar.gz');
      for (const out of [bundle, bundleGz]) {
        const r = await cli(['export', listFile, '-o', out], join(seedDir, 'mirror.toml'));
        assert.equal(r.code, 0, r.stderr + r.stdout);
        assert.match(r.stdout, /4 images, 6 manifests, 11 blobs/);
      }
      await upstream.stop();
      offline = await startMirror(seedDir, mirrorToml(`[cache]\ntag_ttl = "1s"\noffline = true\n${REGISTRIES(upstreamUrl)}`, 'gcr.io'));
      await new Promise((r) => setTimeout(r, 1_100)); // every tag is now older than tag_ttl
    });

    after(async () => {
      await offline?.stop();
    });

    test('a fresh process answers manifest HEAD from metadata (right length, type, digest), then GET with the bytes', async () => {
      for (const ref of ['v1', app.manifest.digest]) {
        const h = await fetch(`${offline.url}/v2/gcr.io/team/app/manifests/${ref}`, { method: 'HEAD' });
        assert.equal(h.status, 200, ref);
        assert.equal(h.headers.get('content-length'), String(app.manifest.size), ref);
        assert.equal(h.headers.get('content-type'), app.manifest.mediaType, ref);
        assert.equal(h.headers.get('docker-content-digest'), app.manifest.digest, ref);
      }
      const g = await fetch(`${offline.url}/v2/gcr.io/team/app/manifests/v1`);
      assert.equal(g.status, 200);
      assert.ok(Buffer.from(await g.arrayBuffer()).equals(app.manifest.bytes));
      assert.equal(g.headers.get('content-length'), String(app.manifest.size));
    });

    test('skopeo pulls every seeded image from the offline mirror, identical digests', async () => {
      const h = offline.hostPort;
      assert.equal(await pulledDigest(work, `${h}/gcr.io/team/app:v1`), app.manifest.digest);
      assert.equal(await pulledDigest(work, `${h}/quay.io/team/tool:2.0`), tool.manifest.digest);
      assert.equal(await pulledDigest(work, `${h}/gcr.io/team/pinned@${pinned.manifest.digest}`), pinned.manifest.digest);
      assert.equal(await pulledDigest(work, `${h}/gcr.io/team/multi:v1`, true), multi.index.digest);
      assert.equal(await pulledDigest(work, `${h}/gdc/team/app:v1`), app.manifest.digest, 'namespace endpoint');
      assert.equal(await pulledDigest(work, `${h}/team/app:v1`), app.manifest.digest, 'default registry');
    });

    test('every routing shape resolves tags from the cache whatever their age', async () => {
      const d = app.manifest.digest;
      for (const path of ['/v2/team/app/manifests/v1?ns=gcr.io', '/v2/gdc/team/app/manifests/v1?ns=gcr.io', '/v2/gdc/v2/team/app/manifests/v1?ns=gcr.io', '/v2/gcr.io/team/app/manifests/v1', '/v2/gdc/team/app/manifests/v1', '/v2/team/app/manifests/v1']) {
        const r = await fetch(`${offline.url}${path}`, { method: 'HEAD' });
        assert.equal(r.status, 200, path);
        assert.equal(r.headers.get('docker-content-digest'), d, path);
        assert.equal(r.headers.get('x-regmirror-cache'), 'hit', path);
      }
    });

    test('what was never cached is MANIFEST_UNKNOWN / BLOB_UNKNOWN saying the mirror is offline', async () => {
      const m = await fetch(`${offline.url}/v2/gcr.io/team/app/manifests/v2`);
      assert.equal(m.status, 404);
      const mb = (await m.json()) as { errors: Array<{ code: string; message: string }> };
      assert.equal(mb.errors[0]?.code, 'MANIFEST_UNKNOWN');
      assert.match(mb.errors[0]?.message ?? '', /not in the cache and cannot be fetched: gcr\.io \(the mirror is offline for it\)/);
      const b = await fetch(`${offline.url}/v2/team/app/blobs/sha256:${'a'.repeat(64)}?ns=gcr.io`);
      assert.equal(b.status, 404);
      const bb = (await b.json()) as { errors: Array<{ code: string; message: string }> };
      assert.equal(bb.errors[0]?.code, 'BLOB_UNKNOWN');
      assert.match(bb.errors[0]?.message ?? '', /offline/);
      assert.doesNotMatch(offline.logText(), /upstream failed|unreachable/, 'no upstream was contacted');
    });

    for (const compressed of [false, true]) {
      test(`import${compressed ? ' of a .tar.gz' : ''} into an empty mirror serves identical digests, provenance "import"`, async () => {
        const dir = mkdtempSync(join(work, 'site-'));
        writeFileSync(join(dir, 'mirror.toml'), mirrorToml(`[cache]\noffline = true\n${REGISTRIES(upstreamUrl)}`, 'gcr.io'));
        const r = await cli(['import', compressed ? bundleGz : bundle], join(dir, 'mirror.toml'));
        assert.equal(r.code, 0, r.stderr + r.stdout);
        assert.match(r.stdout, /imported 4 images: 6 manifests, 11 blobs/);
        const site = await startMirror(dir, readFileSync(join(dir, 'mirror.toml'), 'utf8'));
        try {
          const h = site.hostPort;
          assert.equal(await pulledDigest(work, `${h}/gcr.io/team/app:v1`), app.manifest.digest);
          assert.equal(await pulledDigest(work, `${h}/quay.io/team/tool:2.0`), tool.manifest.digest);
          assert.equal(await pulledDigest(work, `${h}/gcr.io/team/pinned@${pinned.manifest.digest}`), pinned.manifest.digest);
          assert.equal(await pulledDigest(work, `${h}/gcr.io/team/multi:v1`, true), multi.index.digest);
          const p = (await (await fetch(`${site.url}/_regmirror/v1/provenance?image=gcr.io/team/app:v1`)).json()) as { source: { type: string; url: string }; upstreamDigest: string };
          assert.equal(p.source.type, 'import');
          assert.equal(p.source.url, upstreamUrl, 'where the seeding mirror fetched it');
          assert.equal(p.upstreamDigest, app.manifest.digest);
        } finally {
          await site.stop();
        }
      });
    }

    test('a corrupted bundle is refused naming the bad digest, and nothing is imported', async () => {
      const bytes = readFileSync(bundle);
      const layer = app.layers[0];
      assert.ok(layer !== undefined);
      const at = bytes.indexOf(layer.bytes.subarray(0, 4096));
      assert.ok(at > 0, 'the layer is in the bundle');
      bytes[at + 1000] = (bytes[at + 1000] ?? 0) ^ 0xff;
      const bad = join(work, 'corrupt.tar');
      writeFileSync(bad, bytes);
      const dir = mkdtempSync(join(work, 'site-'));
      writeFileSync(join(dir, 'mirror.toml'), mirrorToml(`[cache]\noffline = true\n${REGISTRIES(upstreamUrl)}`, 'gcr.io'));
      const r = await cli(['import', bad], join(dir, 'mirror.toml'));
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`bundle entry blobs/sha256/${layer.digest.slice(7)}: digest mismatch: expected ${layer.digest}`));
      assert.match(r.stderr, /nothing was imported/);
      const data = join(dir, 'data');
      for (const table of ['manifests', 'blobs', 'tags', 'provenance', 'repo_content']) assert.equal(rows(data, table), 0, table);
      assert.deepEqual(readdirSync(join(data, 'blobs')), [], 'no blob file was placed');
      assert.deepEqual(readdirSync(join(data, 'tmp')), [], 'no temporary file was left');
    });

    test('export of an image that is not cached names it', async () => {
      const list = join(work, 'missing.txt');
      writeFileSync(list, 'gcr.io/team/app:v9\n');
      const r = await cli(['export', list, '-o', join(work, 'x.tar')], join(seedDir, 'mirror.toml'));
      assert.equal(r.code, 1);
      assert.match(r.stderr, /gcr\.io\/team\/app:v9 is not in the cache .*seed it first/);
      assert.deepEqual(readdirSync(work).filter((f) => f.startsWith('x.tar')), [], 'no partial bundle left');
    });
  });
});

describe('per-registry offline', { timeout: 120_000 }, () => {
  test('a registry marked offline is never contacted while the others are', async () => {
    const work = mkdtempSync(join(tmpdir(), 'regmirror-offline-reg-'));
    const upstream = await startRegistry(join(work, 'upstream'));
    const im = makeImage('offline-reg', [64 * 1024], 'oci');
    await pushImage(upstream.url, 'team/app', 'v1', im);
    const mirror = await startMirror(work, mirrorToml(REGISTRIES(upstream.url, 'offline = true\n')));
    try {
      const off = await fetch(`${mirror.url}/v2/gcr.io/team/app/manifests/v1`);
      assert.equal(off.status, 404);
      assert.match(((await off.json()) as { errors: Array<{ message: string }> }).errors[0]?.message ?? '', /gcr\.io \(the mirror is offline for it\)/);
      assert.equal(upstream.accessCount('GET', '/v2/team/app/manifests'), 0);
      const on = await fetch(`${mirror.url}/v2/quay.io/team/app/manifests/v1`);
      assert.equal(on.status, 200);
      assert.equal(on.headers.get('docker-content-digest'), im.manifest.digest);
    } finally {
      await mirror.stop();
      await upstream.stop();
    }
  });
});

describe('a command beside a running server (issue 15: the caching decorator sees other processes)', { timeout: 300_000 }, () => {
  test("an import that moves a tag, run beside an offline server, is the server's very next answer, without a restart", async () => {
    const work = mkdtempSync(join(tmpdir(), 'regmirror-beside-'));
    const upstream = await startRegistry(join(work, 'upstream'));
    let site: MirrorProcess | undefined;
    try {
      const before = makeImage('beside-before', [64 * 1024], 'oci');
      const after = makeImage('beside-after', [96 * 1024], 'oci');
      const list = join(work, 'list.txt');
      writeFileSync(list, 'gcr.io/team/moving:v1\n');
      // Two bundles of the same tag, a week apart: v1 moved at the upstream between them.
      const bundles: string[] = [];
      for (const [i, image] of [before, after].entries()) {
        await pushImage(upstream.url, 'team/moving', 'v1', image);
        const dir = join(work, `seed-${i}`);
        mkdirSync(dir);
        const toml = join(dir, 'mirror.toml');
        writeFileSync(toml, mirrorToml(REGISTRIES(upstream.url), 'gcr.io'));
        const seeded = await cli(['seed', list], toml);
        assert.equal(seeded.code, 0, seeded.stderr + seeded.stdout);
        const file = join(work, `bundle-${i}.tar`);
        const exported = await cli(['export', list, '-o', file], toml);
        assert.equal(exported.code, 0, exported.stderr + exported.stdout);
        bundles.push(file);
      }
      const dir = join(work, 'site');
      mkdirSync(dir);
      const toml = join(dir, 'mirror.toml');
      writeFileSync(toml, mirrorToml(`[cache]\noffline = true\n${REGISTRIES(upstream.url)}`, 'gcr.io'));
      const first = await cli(['import', bundles[0] ?? ''], toml);
      assert.equal(first.code, 0, first.stderr + first.stdout);
      site = await startMirror(dir, readFileSync(toml, 'utf8'));
      const url = `${site.url}/v2/gcr.io/team/moving/manifests/v1`;
      const accept = { Accept: 'application/vnd.oci.image.manifest.v1+json' };
      // Answered several times, so the tag, its manifest row and link sit in the server's memory.
      for (let i = 0; i < 3; i++) {
        const r = await fetch(url, { method: i === 0 ? 'GET' : 'HEAD', headers: accept });
        if (i === 0) await r.arrayBuffer();
        assert.equal(r.headers.get('docker-content-digest'), before.manifest.digest);
      }
      const second = await cli(['import', bundles[1] ?? ''], toml);
      assert.equal(second.code, 0, second.stderr + second.stdout);
      const head = await fetch(url, { method: 'HEAD', headers: accept });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get('docker-content-digest'), after.manifest.digest, 'the next HEAD answers the moved tag');
      const get = await fetch(url, { headers: accept });
      assert.equal(sha256(Buffer.from(await get.arrayBuffer())), after.manifest.digest, 'and GET its bytes');
      const layer = after.layers[0];
      assert.ok(layer !== undefined);
      const blob = await fetch(`${site.url}/v2/gcr.io/team/moving/blobs/${layer.digest}`);
      assert.equal(blob.status, 200, 'the imported layer is served too');
      assert.equal(sha256(Buffer.from(await blob.arrayBuffer())), layer.digest);
    } finally {
      await site?.stop();
      await upstream.stop();
    }
  });
});
