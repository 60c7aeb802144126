/**
 * Two endpoints for one registry (issue 19 item 2), both real docker-registry processes serving one
 * storage: with the first stopped, skopeo pulls through the mirror succeed from the second with no
 * client-visible error; when the first comes back (same port) it is probed and used again.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { startMirror, mirrorToml, type MirrorProcess } from '../helpers/mirror-process.ts';
import { makeImage, pushImage } from '../helpers/fixtures.ts';
import { skopeo } from '../helpers/skopeo.ts';
import { waitFor } from '../helpers/net.ts';

describe('two endpoints: failover to the second, back to the first', { timeout: 180_000 }, () => {
  let work: string;
  let a: RegistryProcess;
  let b: RegistryProcess;
  let mirror: MirrorProcess;
  const storageDir = (): string => join(work, 'storage');

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-failover-'));
    a = await startRegistry(join(work, 'a'), { storageDir: storageDir() });
    b = await startRegistry(join(work, 'b'), { storageDir: storageDir() });
    for (const repo of ['team/one', 'team/two', 'team/three']) await pushImage(a.url, repo, '1', makeImage(repo, [200 * 1024, 50 * 1024], 'oci'));
    const dir = join(work, 'mirror');
    mkdirSync(dir);
    mirror = await startMirror(dir, mirrorToml(`[[registry]]\nhost = "fo.example"\nendpoints = ["${a.url}", "${b.url}"]\ntag_ttl = "1s"\nconnect_timeout = "2s"\n`));
  });

  after(async () => {
    await mirror?.stop();
    await a?.stop();
    await b?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const pull = (repo: string): Promise<string> => skopeo(['copy', '--src-tls-verify=false', `docker://${mirror.hostPort}/fo.example/${repo}:1`, `dir:${join(work, `out-${repo.replace('/', '-')}-${Date.now()}`)}`]);

  test('the first endpoint while it is up; the second while it is down, unseen by the client; the first again once back', async () => {
    await pull('team/one');
    assert.ok(a.accessCount('GET', '/v2/team/one/manifests/1') >= 1, 'the first endpoint served the manifest');
    assert.ok(a.accessCount('GET', '/v2/team/one/blobs/') >= 2, 'and the blobs');
    assert.equal(b.accessCount('GET', '/v2/team/one/'), 0, 'the second endpoint was not asked');

    const port = a.port;
    await a.stop();
    await pull('team/two'); // no error reaches skopeo
    assert.ok(b.accessCount('GET', '/v2/team/two/manifests/1') >= 1, 'the second endpoint served the manifest');
    assert.ok(b.accessCount('GET', '/v2/team/two/blobs/') >= 2, 'and the blobs');
    assert.match(mirror.logText(), new RegExp(`endpoint ${a.url.replace(/[.:/]/g, '\\$&')} failed; trying the next`));
    await waitFor('the first endpoint marked down', () => mirror.logText().includes(`fo.example endpoint ${a.url} marked down after 3 consecutive failures`), 10_000);

    a = await startRegistry(join(work, 'a'), { storageDir: storageDir(), port });
    // The expired tag of team/one is revalidated upstream on every HEAD; once the breaker's backoff
    // is over, one probe goes to the first endpoint and it takes the traffic again.
    await waitFor(
      'the first endpoint to be used again',
      async () => {
        const r = await fetch(`${mirror.url}/v2/fo.example/team/one/manifests/1`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
        assert.equal(r.status, 200);
        return a.accessCount('HEAD', '/v2/team/one/manifests/1') >= 1;
      },
      30_000,
      250,
    );
    await waitFor('the mirror to log it', () => mirror.logText().includes(`fo.example endpoint ${a.url} answers again`), 5_000);
    const bBefore = b.accessCount('GET', '/v2/team/three/');
    await pull('team/three');
    assert.ok(a.accessCount('GET', '/v2/team/three/blobs/') >= 2, 'the first endpoint serves again');
    assert.equal(b.accessCount('GET', '/v2/team/three/'), bBefore);
  });
});
