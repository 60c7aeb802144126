/**
 * The container image (scripts/build-image.sh, built offline before the namespace is entered: the
 * archive's path is in REGMIRROR_TEST_IMAGE) under containerd, in the loopback-only network
 * namespace: pushed into a regmirror local namespace, pulled from there by `ctr` with the mirror's
 * own credentials, run as a container (uid 1000, host network, config and cache bind-mounted), and
 * an image pulled through the containerised mirror from a docker-registry upstream.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { startMirror, mirrorToml, type MirrorProcess } from '../helpers/mirror-process.ts';
import { makeImage, pushImage, sha256, type Image } from '../helpers/fixtures.ts';
import { skopeo } from '../helpers/skopeo.ts';
import { freePort, waitFor } from '../helpers/net.ts';
import { startContainerd, type Containerd } from '../helpers/containerd.ts';

const run = promisify(execFile);
const IMAGE_ARCHIVE = process.env.REGMIRROR_TEST_IMAGE ?? '';
const PUSHER_PW = 'image-Pw-7731';
const NAME = 'regmirror-under-test';

describe('the container image under containerd (network namespace, loopback only)', { timeout: 600_000 }, () => {
  let work: string;
  let upstream: RegistryProcess;
  let registryMirror: MirrorProcess;
  let containerd: Containerd | undefined;
  let sock: string;
  let app: Image;
  let ref: string;

  const ctr = async (args: string[], timeout = 180_000): Promise<string> => {
    const { stdout } = await run('ctr', ['--address', sock, ...args], { timeout }).catch((e: { stderr?: string; message: string }) => {
      throw new Error(`ctr ${args.join(' ')} failed: ${e.stderr ?? e.message}`);
    });
    return stdout;
  };

  before(async () => {
    assert.ok(IMAGE_ARCHIVE !== '' && existsSync(IMAGE_ARCHIVE), 'REGMIRROR_TEST_IMAGE must name the image archive scripts/build-image.sh wrote (scripts/test.sh builds it before entering the namespace)');
    await assert.rejects(fetch('https://registry-1.docker.io/v2/', { signal: AbortSignal.timeout(5_000) }), 'the internet must be unreachable here: run in a network namespace (scripts/test.sh does)');
    work = mkdtempSync(join(tmpdir(), 'regmirror-image-'));
    upstream = await startRegistry(join(work, 'upstream'));
    app = makeImage('image-test-app', [300 * 1024, 40 * 1024], 'oci');
    await pushImage(upstream.url, 'team/app', '1', app);
    // The registry the image is published to: a regmirror local namespace (push needs a user).
    registryMirror = await startMirror(work, mirrorToml(`[[namespace]]\nname = "site"\n[auth]\n[[auth.user]]\nname = "ci"\npassword_env = "PUSHER_PW"\nroles = ["pull", "push"]\n`), { PUSHER_PW });
    ref = `${registryMirror.hostPort}/site/regmirror:test`;
    await skopeo(['copy', '--quiet', '--dest-tls-verify=false', '--dest-creds', `ci:${PUSHER_PW}`, `oci-archive:${IMAGE_ARCHIVE}`, `docker://${ref}`], 300_000);

    containerd = await startContainerd(join(work, 'containerd'));
    sock = containerd.sock;
  });

  after(async () => {
    await ctr(['tasks', 'kill', '--signal', 'SIGKILL', NAME]).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 500));
    await ctr(['tasks', 'delete', NAME]).catch(() => undefined);
    await ctr(['containers', 'delete', NAME]).catch(() => undefined);
    containerd?.stop();
    await registryMirror?.stop();
    await upstream?.stop();
  });

  test('ctr pulls the image from a regmirror local namespace, runs it, and an image is pulled through the containerised mirror', async () => {
    const pulled = await ctr(['images', 'pull', '--plain-http', '--user', `ci:${PUSHER_PW}`, '--snapshotter', 'native', ref]);
    assert.match(pulled, /done/);
    // The containerised mirror's own config and cache, bind-mounted; it runs as the image's uid 1000.
    const port = await freePort();
    const etc = join(work, 'etc');
    const data = join(work, 'cache');
    mkdirSync(etc);
    mkdirSync(data);
    chownSync(data, 1000, 1000);
    writeFileSync(join(etc, 'mirror.toml'), `default_registry = ""\n[server]\nlisten = "127.0.0.1:${port}"\ndata_dir = "/var/lib/regmirror"\n[[registry]]\nhost = "upstream.example"\nendpoint = "${upstream.url}"\n`);
    const logFile = join(work, 'container.log');
    await ctr([
      'run', '--detach', '--net-host', '--snapshotter', 'native', '--log-uri', `file://${logFile}`,
      '--mount', `type=bind,src=${etc},dst=/etc/regmirror,options=rbind:ro`,
      '--mount', `type=bind,src=${data},dst=/var/lib/regmirror,options=rbind:rw`,
      ref, NAME,
    ]);
    const log = (): string => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
    const base = `http://127.0.0.1:${port}`;
    await waitFor('the containerised mirror to be ready', async () => (await fetch(`${base}/readyz`).then((r) => r.status, () => 0)) === 200, 60_000, 250).catch((e: Error) => {
      throw new Error(`${e.message}; container log:\n${log()}`);
    });
    assert.match(log(), /"msg":"regmirror listening"/);
    // It runs as the image's user, not root.
    const ps = await ctr(['tasks', 'ps', NAME]);
    const pid = /^\s*(\d+)/m.exec(ps.split('\n').slice(1).join('\n'))?.[1];
    assert.ok(pid !== undefined, ps);
    assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), /^Uid:\s+1000\s/m);

    const dest = mkdtempSync(join(work, 'pull-'));
    await skopeo(['copy', '--quiet', '--src-tls-verify=false', `docker://127.0.0.1:${port}/upstream.example/team/app:1`, `dir:${dest}`]);
    assert.equal(sha256(readFileSync(join(dest, 'manifest.json'))), app.manifest.digest);
    for (const l of app.layers) assert.equal(sha256(readFileSync(join(dest, l.digest.slice('sha256:'.length)))), l.digest);
    // The content is in the container's cache volume, and its metrics counted the miss.
    assert.ok(existsSync(join(data, 'blobs')), 'the cache is on the bind-mounted volume');
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^regmirror_http_requests_total\{registry="upstream\.example",kind="manifest",cache="miss",code="200"\} [1-9]/m);
    // SIGTERM drains and stops the container.
    await ctr(['tasks', 'kill', '--signal', 'SIGTERM', NAME]);
    await waitFor('the container to stop', async () => /STOPPED/.test(await ctr(['tasks', 'ls'])), 30_000, 250);
    assert.match(log(), /"msg":"stopped"/);
  });
});
