/**
 * Repo-digest provenance end to end: a real docker-registry upstream, skopeo pulls through
 * regmirror, the /_regmirror/v1 API, and the `verify` / `inspect` commands run as processes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { startMirror, mirrorToml, BIN, type MirrorProcess } from '../helpers/mirror-process.ts';
import { makeImage, makeIndex, pushImage, pushIndex, type Image, type IndexImage } from '../helpers/fixtures.ts';
import { skopeo } from '../helpers/skopeo.ts';
import { waitFor } from '../helpers/net.ts';

const run = promisify(execFile);
const SECRET = 'prov-Pw-never-in-api-731';

interface Provenance {
  digest: string;
  registry: string;
  repository: string;
  tags: string[];
  repoDigests: string[];
  source: { type: string; url: string };
  upstreamDigest: string;
  hits: number;
  misses: number;
  firstFetched: string;
  lastChecked: string;
  lastServed: string;
  children: Array<{ digest: string; platform: string }>;
}

describe('repo-digest provenance', { timeout: 300_000 }, () => {
  let work: string;
  let upstream: RegistryProcess;
  let mirror: MirrorProcess;
  let app: Image;
  let moved: Image;
  let multi: IndexImage;
  let configFile: string;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-prov-'));
    upstream = await startRegistry(join(work, 'upstream'));
    app = makeImage('prov-app', [256 * 1024, 128 * 1024], 'docker');
    moved = makeImage('prov-moved', [64 * 1024], 'oci');
    multi = makeIndex('prov-multi', ['amd64', 'arm64'], 100 * 1024);
    await pushImage(upstream.url, 'team/app', 'v1', app);
    await pushIndex(upstream.url, 'team/multi', 'v1', multi);
    mirror = await startMirror(
      work,
      mirrorToml(`[cache]\ntag_ttl = "1h"\n[[registry]]\nhost = "gcr.io"\nendpoint = "${upstream.url}"\nusername = "robot"\npassword = "${SECRET}"\n[[namespace]]\nname = "test-namespace"\nregistry = "gcr.io"\n`, 'gcr.io'),
    );
    configFile = join(work, 'mirror.toml');
  });

  after(async () => {
    await mirror?.stop();
    await upstream?.stop();
  });

  async function api<T>(path: string): Promise<{ status: number; body: T; text: string }> {
    const r = await fetch(`${mirror.url}${path}`);
    const text = await r.text();
    assert.ok(!text.includes(SECRET), `${path} leaked the registry password`);
    return { status: r.status, body: JSON.parse(text) as T, text };
  }

  async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const { stdout, stderr } = await run(process.execPath, [BIN, ...args, '--config', configFile, '--mirror', mirror.url], { timeout: 60_000 });
      return { code: 0, stdout, stderr };
    } catch (e) {
      const err = e as { code?: number; stdout?: string; stderr?: string };
      return { code: err.code ?? -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
    }
  }

  test('a pulled image has a provenance record: digest, repo digests for every way to address the mirror, source, a miss', async () => {
    const dest = mkdtempSync(join(work, 'pull-'));
    await skopeo(['copy', '--src-tls-verify=false', `docker://${mirror.hostPort}/gcr.io/team/app:v1`, `dir:${dest}`]);
    const { status, body } = await api<Provenance>('/_regmirror/v1/provenance?image=gcr.io/team/app:v1');
    assert.equal(status, 200);
    const d = app.manifest.digest;
    assert.equal(body.digest, d);
    assert.deepEqual(body.repoDigests, [`gcr.io/team/app@${d}`, `${mirror.hostPort}/gcr.io/team/app@${d}`, `${mirror.hostPort}/test-namespace/team/app@${d}`, `${mirror.hostPort}/team/app@${d}`]);
    assert.deepEqual(body.tags, ['v1']);
    assert.deepEqual(body.source, { type: 'upstream', url: upstream.url });
    assert.equal(body.upstreamDigest, d, "the upstream's own Docker-Content-Digest");
    assert.equal(body.misses, 1);
    assert.equal(body.hits, 0);
    assert.ok(Date.parse(body.firstFetched) > 0 && Date.parse(body.lastServed) > 0);
  });

  test('a hit after the miss is counted', async () => {
    const r = await fetch(`${mirror.url}/v2/test-namespace/team/app/manifests/v1`);
    assert.equal(r.headers.get('x-regmirror-cache'), 'hit');
    const { body } = await api<Provenance>(`/_regmirror/v1/provenance?image=gcr.io/team/app@${app.manifest.digest}`);
    assert.equal(body.hits, 1);
    assert.equal(body.misses, 1);
  });

  test('an index records its child manifests with their platforms', async () => {
    const dest = mkdtempSync(join(work, 'pull-'));
    await skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${mirror.hostPort}/gcr.io/team/multi:v1`, `dir:${dest}`]);
    const { body } = await api<Provenance>('/_regmirror/v1/provenance?image=gcr.io/team/multi:v1');
    assert.equal(body.digest, multi.index.digest);
    assert.deepEqual(body.children.map((c) => [c.digest, c.platform]), multi.images.map((im) => [im.manifest.digest, `linux/${im.arch}`]));
  });

  test('list with filters and paging; summary with hit ratio and bytes', async () => {
    const all = await api<{ items: Provenance[]; next: number | null }>('/_regmirror/v1/provenance?registry=gcr.io');
    assert.ok(all.body.items.length >= 4, 'app, multi and its two children');
    const one = await api<{ items: Provenance[]; next: number | null }>('/_regmirror/v1/provenance?registry=gcr.io&limit=1');
    assert.equal(one.body.items.length, 1);
    assert.equal(one.body.next, 1);
    const repo = await api<{ items: Provenance[] }>('/_regmirror/v1/provenance?repo=team/app');
    assert.deepEqual(repo.body.items.map((i) => i.digest), [app.manifest.digest]);
    const future = await api<{ items: Provenance[] }>(`/_regmirror/v1/provenance?since=${new Date(Date.now() + 60_000).toISOString()}`);
    assert.equal(future.body.items.length, 0);
    const bad = await api<{ errors: Array<{ code: string }> }>('/_regmirror/v1/provenance?since=yesterday');
    assert.equal(bad.status, 400);
    const sum = await api<Record<string, number>>('/_regmirror/v1/summary');
    const imageBytes = [app.config, ...app.layers, ...multi.images.flatMap((im) => [im.config, ...im.layers])].reduce((a, b) => a + b.size, 0);
    assert.equal(sum.body.bytesFetchedUpstream, imageBytes);
    assert.ok((sum.body.hitRatio ?? 0) > 0 && (sum.body.hitRatio ?? 1) < 1);
    assert.ok((sum.body.manifestHits ?? 0) >= 1);
  });

  test('verify says MATCH when the mirror and the upstream agree', async () => {
    const r = await cli(['verify', 'gcr.io/team/app:v1']);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, new RegExp(`mirror +gcr\\.io/team/app@${app.manifest.digest}`));
    assert.match(r.stdout, new RegExp(`upstream +gcr\\.io/team/app@${app.manifest.digest}`));
    assert.match(r.stdout, /^MATCH$/m);
    const j = await cli(['verify', 'gcr.io/team/app:v1', '--json']);
    assert.equal((JSON.parse(j.stdout) as { result: string }).result, 'MATCH');
  });

  test('inspect prints repoDigests and cache state like crictl inspecti', async () => {
    const r = await cli(['inspect', 'gcr.io/team/app:v1']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { status: { id: string; repoTags: string[]; repoDigests: string[] }; info: { provenance: Provenance } };
    assert.equal(out.status.id, app.manifest.digest);
    assert.deepEqual(out.status.repoTags, ['gcr.io/team/app:v1']);
    assert.ok(out.status.repoDigests.includes(`gcr.io/team/app@${app.manifest.digest}`));
    assert.ok(!r.stdout.includes(SECRET));
  });

  test('after the tag moves upstream (within tag_ttl), verify reports MISMATCH and why', async () => {
    await pushImage(upstream.url, 'team/app', 'v1', moved);
    const r = await cli(['verify', 'gcr.io/team/app:v1']);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, new RegExp(`mirror +gcr\\.io/team/app@${app.manifest.digest}`));
    assert.match(r.stdout, new RegExp(`upstream +gcr\\.io/team/app@${moved.manifest.digest}`));
    assert.match(r.stdout, /^MISMATCH: the tag moved at the upstream.*tag_ttl \(3600 s\)/m);
  });

  test('verify exits non-zero naming the side that failed', async () => {
    const r = await cli(['verify', 'gcr.io/team/nothing:here']);
    assert.equal(r.code, 3);
    assert.match(r.stdout, /mirror +FAILED: .*not found/);
    assert.match(r.stdout, /upstream +FAILED: /);
  });

  test('verify --local re-hashes the cache and names a corrupted blob', async () => {
    const ok = await cli(['verify', '--local', 'gcr.io/team/app:v1']);
    assert.equal(ok.code, 0, ok.stdout);
    assert.match(ok.stdout, /INTACT/);
    const layer = app.layers[1];
    assert.ok(layer);
    const file = join(work, 'data', 'blobs', 'sha256', layer.digest.slice(7, 9), layer.digest.slice(7));
    writeFileSync(file, Buffer.from('bit rot'));
    const bad = await cli(['verify', '--local', 'gcr.io/team/app:v1']);
    assert.equal(bad.code, 1);
    assert.match(bad.stdout, new RegExp(`CORRUPT +blob +${layer.digest}`));
    const j = await cli(['verify', '--local', '--json', 'gcr.io/team/app:v1']);
    const parsed = JSON.parse(j.stdout) as { ok: boolean; checks: Array<{ digest: string; state: string }> };
    assert.equal(parsed.ok, false);
    assert.equal(parsed.checks.find((c) => c.digest === layer.digest)?.state, 'corrupt');
  });

  test('the API can be switched off, or served on its own address only', async () => {
    const off = await startMirror(mkdtempSync(join(work, 'off-')), mirrorToml(`[api]\nenabled = false\n[[registry]]\nhost = "gcr.io"\nendpoint = "${upstream.url}"\n`));
    try {
      const r = await fetch(`${off.url}/_regmirror/v1/summary`);
      assert.equal(r.status, 404);
    } finally {
      await off.stop();
    }
    const sep = await startMirror(mkdtempSync(join(work, 'sep-')), mirrorToml(`[api]\nlisten = "127.0.0.1:0"\n[[registry]]\nhost = "gcr.io"\nendpoint = "${upstream.url}"\n`));
    try {
      let apiPort = 0;
      await waitFor('the API listener', () => {
        const m = /"apiPort":(\d+)/.exec(sep.logText());
        if (m !== null) apiPort = Number(m[1]);
        return m !== null;
      });
      assert.equal((await fetch(`${sep.url}/_regmirror/v1/summary`)).status, 404, 'not on the registry listener');
      const r = await fetch(`http://127.0.0.1:${apiPort}/_regmirror/v1/summary`);
      assert.equal(r.status, 200);
      assert.equal(((await r.json()) as { manifests: number }).manifests, 0);
    } finally {
      await sep.stop();
    }
  });
});
