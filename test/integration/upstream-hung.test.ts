/**
 * A hung upstream (docker-registry stopped with SIGSTOP: connections accepted, nothing answered)
 * behind regmirror as its own process: an expired tag answers stale within revalidate_timeout
 * instead of the 30 s header timeout, later requests for it at once; after three slow registries
 * answers the registry is marked down and every cached tag answers stale at once, an uncached one
 * fails at once naming the registry; after SIGCONT fresh answers return.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { startMirror, mirrorToml, type MirrorProcess } from '../helpers/mirror-process.ts';
import { makeImage, pushImage, type Image } from '../helpers/fixtures.ts';
import { waitFor } from '../helpers/net.ts';

describe('a hung upstream: revalidate_timeout and the circuit breaker', { timeout: 180_000 }, () => {
  let work: string;
  let upstream: RegistryProcess;
  let mirror: MirrorProcess;
  const repos = ['team/a', 'team/b', 'team/c', 'team/d'];
  let image: Image;
  let stopped = false;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-hung-'));
    upstream = await startRegistry(join(work, 'upstream'));
    image = makeImage('hung-app', [64 * 1024], 'oci');
    for (const r of repos) await pushImage(upstream.url, r, '1', image);
    mirror = await startMirror(work, mirrorToml(`[[registry]]\nhost = "hung.example"\nendpoint = "${upstream.url}"\ntag_ttl = "1s"\nrevalidate_timeout = "1s"\nheader_timeout = "30s"\n`));
  });

  after(async () => {
    if (stopped) process.kill(upstream.pid, 'SIGCONT');
    await mirror?.stop();
    await upstream?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  /** HEAD of a tag through the mirror: status, cache result and how long it took. */
  const head = async (repo: string, tag = '1'): Promise<{ status: number; cache: string | null; ms: number; body: string }> => {
    const t = performance.now();
    const r = await fetch(`${mirror.url}/v2/hung.example/${repo}/manifests/${tag}`, { method: tag === '1' ? 'HEAD' : 'GET', headers: { accept: image.manifest.mediaType } });
    const body = await r.text();
    return { status: r.status, cache: r.headers.get('x-regmirror-cache'), ms: performance.now() - t, body };
  };

  test('stale within revalidate_timeout, then at once; marked down after three; fresh again after SIGCONT', async () => {
    for (const r of repos) assert.equal((await head(r)).cache, 'miss');
    await new Promise((r) => setTimeout(r, 1_200)); // every tag expired
    process.kill(upstream.pid, 'SIGSTOP');
    stopped = true;

    const first = await head('team/a');
    assert.equal(first.status, 200);
    assert.equal(first.cache, 'stale');
    assert.ok(first.ms < 1_500, `the first answer came after ${first.ms.toFixed(0)} ms (revalidate_timeout 1 s)`);
    // The revalidation goes on in the background: the same tag answers stale at once meanwhile.
    const again = await head('team/a');
    assert.equal(again.cache, 'stale');
    assert.ok(again.ms < 300, `${again.ms.toFixed(0)} ms`);

    // Two more slow revalidations mark the registry down...
    for (const r of ['team/b', 'team/c']) {
      const x = await head(r);
      assert.equal(x.cache, 'stale');
      assert.ok(x.ms < 1_500, `${r}: ${x.ms.toFixed(0)} ms`);
    }
    await waitFor('the registry to be marked down', () => /hung\.example marked down after 3 consecutive failures/.test(mirror.logText()), 5_000);
    // ...then a cached tag never asked before answers stale at once, an uncached one fails at once.
    const d = await head('team/d');
    assert.equal(d.cache, 'stale');
    assert.ok(d.ms < 300, `team/d: ${d.ms.toFixed(0)} ms`);
    const unknown = await head('team/a', 'never-pulled');
    assert.equal(unknown.status, 502);
    assert.equal((JSON.parse(unknown.body) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAVAILABLE');
    assert.ok(unknown.ms < 300, `uncached: ${unknown.ms.toFixed(0)} ms`);
    assert.match(unknown.body, /hung\.example is marked down after 3 consecutive failures; the mirror tries it again in \d+ s/);

    process.kill(upstream.pid, 'SIGCONT');
    stopped = false;
    // The hung requests are answered, the registry is back, and tags revalidate fresh.
    await waitFor('fresh answers again', async () => (await head('team/d')).cache === 'hit', 20_000, 250);
    assert.match(mirror.logText(), /hung\.example answers again/);
  });
});
