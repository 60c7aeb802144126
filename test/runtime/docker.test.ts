/**
 * The Docker daemon (Debian docker.io) with the daemon.json `regmirror config docker` generates:
 * a real `docker pull` of a one-segment Docker Hub name (the mirror sees /v2/library/<name>) and
 * of a two-segment name goes through regmirror while Docker Hub is unreachable. Runs inside a
 * network namespace with only loopback (scripts/test.sh). dockerd runs as root with vfs storage,
 * no iptables, no bridge, its own data-root, exec-root, pidfile and socket, on a containerd of the
 * test's own.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { startMirror, mirrorToml, BIN, type MirrorProcess } from '../helpers/mirror-process.ts';
import { makeImage, pushImage, type Image } from '../helpers/fixtures.ts';
import { waitFor } from '../helpers/net.ts';

const run = promisify(execFile);
const DOCKER = '/usr/bin/docker'; // the client from the docker.io package, matching its daemon

function startDaemon(cmd: string, args: string[], logFile: string, sock: string, what: string): Promise<ChildProcess> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = createWriteStream(logFile);
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  let exited: number | null | undefined;
  child.once('close', (c) => (exited = c));
  return waitFor(`${what} to listen`, () => {
    if (exited !== undefined) throw new Error(`${what} exited with ${exited}: ${readFileSync(logFile, 'utf8').slice(-2000)}`);
    return existsSync(sock);
  }, 60_000).then(() => child);
}

describe('Docker daemon registry-mirrors (network namespace, loopback only)', { timeout: 600_000 }, () => {
  let work: string;
  let upstream: RegistryProcess;
  let mirror: MirrorProcess;
  let containerd: ChildProcess | undefined;
  let dockerd: ChildProcess | undefined;
  let dockerSock: string;
  let hello: Image;
  let two: Image;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-docker-'));
    await assert.rejects(fetch('https://registry-1.docker.io/v2/', { signal: AbortSignal.timeout(5_000) }), 'Docker Hub must be unreachable here: run in a network namespace (scripts/test.sh does)');
    upstream = await startRegistry(join(work, 'upstream'));
    hello = makeImage('docker-hello', [150 * 1024], 'docker');
    two = makeImage('docker-two', [120 * 1024, 30 * 1024], 'docker');
    await pushImage(upstream.url, 'library/hello', 'v1', hello);
    await pushImage(upstream.url, 'team/two', 'v1', two);
    mirror = await startMirror(work, mirrorToml(`[[registry]]\nhost = "docker.io"\nendpoint = "${upstream.url}"\n`, 'docker.io'));

    const d = join(work, 'd');
    mkdirSync(d);
    writeFileSync(join(d, 'containerd.toml'), `version = 2\nroot = "${d}/croot"\nstate = "${d}/cstate"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "${d}/containerd.sock"\n`);
    containerd = await startDaemon('containerd', ['--config', join(d, 'containerd.toml')], join(d, 'containerd.log'), join(d, 'containerd.sock'), 'containerd');

    // The generated daemon.json, plus what this sandboxed daemon needs.
    // As a user would: `regmirror config docker ... > daemon.json` (stdout is exactly the file).
    const { stdout: daemonJson } = await run(process.execPath, [BIN, 'config', 'docker', '--mirror-url', mirror.url, '--config', join(work, 'mirror.toml')]);
    const generated = JSON.parse(daemonJson) as Record<string, unknown>;
    assert.deepEqual(generated, { 'registry-mirrors': [mirror.url], 'insecure-registries': [mirror.hostPort] });
    dockerSock = join(d, 'docker.sock');
    writeFileSync(
      join(d, 'daemon.json'),
      JSON.stringify({
        ...generated,
        'storage-driver': 'vfs',
        iptables: false,
        ip6tables: false,
        bridge: 'none',
        'data-root': join(d, 'data'),
        'exec-root': join(d, 'exec'),
        pidfile: join(d, 'docker.pid'),
        hosts: [`unix://${dockerSock}`],
        containerd: join(d, 'containerd.sock'),
      }),
    );
    dockerd = await startDaemon('dockerd', ['--config-file', join(d, 'daemon.json')], join(d, 'dockerd.log'), dockerSock, 'dockerd');
  });

  after(async () => {
    dockerd?.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    containerd?.kill('SIGTERM');
    await mirror?.stop();
    await upstream?.stop();
  });

  async function docker(args: string[]): Promise<string> {
    try {
      return (await run(DOCKER, ['-H', `unix://${dockerSock}`, ...args], { timeout: 180_000 })).stdout;
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      throw new Error(`docker ${args.join(' ')} failed: ${err.stderr ?? err.message}`);
    }
  }

  const requests = (): Array<{ method: string; path: string; status: number; registry: string }> =>
    mirror
      .logText()
      .split('\n')
      .filter((l) => l.includes('"msg":"request"'))
      .map((l) => JSON.parse(l) as { method: string; path: string; status: number; registry: string });

  test('docker info shows the generated mirror', async () => {
    const info = await docker(['info', '--format', '{{json .RegistryConfig.Mirrors}}']);
    assert.deepEqual(JSON.parse(info), [`${mirror.url}/`]);
  });

  test('docker pull of a one-segment name goes through the mirror as /v2/library/<name>', async () => {
    await docker(['pull', 'hello:v1']);
    const repoDigest = (await docker(['image', 'inspect', '--format', '{{index .RepoDigests 0}}', 'hello:v1'])).trim();
    assert.equal(repoDigest, `hello@${hello.manifest.digest}`, 'the repo digest is the upstream manifest digest');
    const reqs = requests();
    assert.ok(reqs.some((r) => r.path === '/v2/library/hello/manifests/v1' && r.registry === 'docker.io' && r.status === 200), JSON.stringify(reqs.slice(-10)));
    assert.ok(reqs.some((r) => r.method === 'GET' && r.path === `/v2/library/hello/blobs/${hello.layers[0]?.digest}` && r.status === 200), 'the layer came from the mirror');
  });

  test('docker pull of a two-segment name goes through the mirror', async () => {
    await docker(['pull', 'team/two:v1']);
    const repoDigest = (await docker(['image', 'inspect', '--format', '{{index .RepoDigests 0}}', 'team/two:v1'])).trim();
    assert.equal(repoDigest, `team/two@${two.manifest.digest}`);
    assert.ok(requests().some((r) => r.path === '/v2/team/two/manifests/v1' && r.status === 200));
    const prov = (await (await fetch(`${mirror.url}/_regmirror/v1/provenance?image=team/two:v1`)).json()) as { digest: string; misses: number };
    assert.equal(prov.digest, two.manifest.digest);
    assert.ok(prov.misses >= 1, 'the mirror recorded serving it');
  });
});
