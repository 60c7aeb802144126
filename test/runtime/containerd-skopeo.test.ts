/**
 * Runtime integrations with real clients, using the files `regmirror config` generates.
 * Runs inside a network namespace with only loopback (scripts/test.sh): the real gcr.io and
 * quay.io are unreachable, so a client that fell back to them would fail, and nothing leaves the
 * machine. The upstream is a local docker-registry behind the mirror.
 *
 *  - containerd 1.6 (its own daemon, root/state/socket in a temp dir) + `ctr images pull
 *    --hosts-dir`: plain hosts.toml (?ns=), the namespace endpoint with and without override_path
 *    (/v2/<ns>/... and /v2/<ns>/v2/...), and _default/hosts.toml;
 *  - skopeo with the generated registries.conf, and with --digest-only.
 * Each checks the mirror served the pull (its request log) and the digest equals the upstream's.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import TOML from '@iarna/toml';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { startMirror, mirrorToml, BIN, type MirrorProcess } from '../helpers/mirror-process.ts';
import { makeImage, pushImage, sha256, type Image } from '../helpers/fixtures.ts';
import { skopeo } from '../helpers/skopeo.ts';
import { waitFor } from '../helpers/net.ts';
import { startContainerd, type Containerd } from '../helpers/containerd.ts';

const run = promisify(execFile);

/** Request-log lines of the mirror: method, path and registry of each request it answered. */
function served(m: MirrorProcess): Array<{ method: string; path: string; registry: string; status: number }> {
  return m
    .logText()
    .split('\n')
    .filter((l) => l.includes('"msg":"request"'))
    .map((l) => JSON.parse(l) as { method: string; path: string; registry: string; status: number });
}

async function regmirrorConfig(args: string[], config: string): Promise<string> {
  const { stdout } = await run(process.execPath, [BIN, 'config', ...args, '--config', config], { timeout: 30_000 });
  return stdout;
}

describe('runtimes through the generated client configuration (network namespace, loopback only)', { timeout: 600_000 }, () => {
  let work: string;
  let upstream: RegistryProcess;
  let mirror: MirrorProcess;
  let containerd: Containerd | undefined;
  let sock: string;
  const images: Record<string, Image> = {};

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-runtime-'));
    await assert.rejects(fetch('https://gcr.io/v2/', { signal: AbortSignal.timeout(5_000) }), 'gcr.io must be unreachable here: run these tests in a network namespace (scripts/test.sh does)');
    upstream = await startRegistry(join(work, 'upstream'));
    for (const name of ['plain', 'nsoverride', 'nsdoubled', 'default', 'skopeo', 'digestonly']) {
      images[name] = makeImage(`runtime-${name}`, [200 * 1024, 50 * 1024], name === 'nsdoubled' ? 'docker' : 'oci');
      await pushImage(upstream.url, `team/${name}`, 'v1', images[name] as Image);
    }
    mirror = await startMirror(
      work,
      mirrorToml(
        `[[registry]]\nhost = "gcr.io"\nendpoint = "${upstream.url}"\n[[registry]]\nhost = "quay.io"\nendpoint = "${upstream.url}"\n[[namespace]]\nname = "gdc"\nregistry = "gcr.io"\n`,
      ),
    );
    // containerd as root with its own root, state and socket.
    containerd = await startContainerd(join(work, 'containerd'));
    sock = containerd.sock;
  });

  after(async () => {
    containerd?.stop();
    await mirror?.stop();
    await upstream?.stop();
  });

  async function ctrPull(hostsDir: string, ref: string): Promise<string> {
    const { stdout } = await run('ctr', ['--address', sock, 'images', 'pull', '--hosts-dir', hostsDir, '--snapshotter', 'native', ref], { timeout: 120_000 }).catch((e: { stderr?: string; message: string }) => {
      throw new Error(`ctr images pull ${ref} failed: ${e.stderr ?? e.message}`);
    });
    assert.match(stdout, /done/);
    const ls = await run('ctr', ['--address', sock, 'images', 'ls', `name==${ref}`]);
    const digest = /sha256:[a-f0-9]{64}/.exec(ls.stdout.split('\n')[1] ?? '')?.[0];
    assert.ok(digest !== undefined, ls.stdout);
    return digest;
  }

  const config = (): string => join(work, 'mirror.toml');

  test('generated files parse: hosts.toml as TOML (server, host, capabilities)', async () => {
    const out = join(work, 'gen-plain');
    await regmirrorConfig(['containerd', '--mirror-url', mirror.url, '--out', out, '--default'], config());
    for (const host of ['gcr.io', 'quay.io', '_default']) {
      const doc = TOML.parse(readFileSync(join(out, 'certs.d', host, 'hosts.toml'), 'utf8')) as { server?: string; host: Record<string, { capabilities: string[] }> };
      assert.deepEqual(doc.host[mirror.url]?.capabilities, ['pull', 'resolve'], host);
      if (host !== '_default') assert.equal(doc.server, `https://${host}`, 'server kept so the runtime can fall back');
    }
    TOML.parse(readFileSync(join(out, 'containerd-config-snippet.toml'), 'utf8'));
  });

  test('containerd: ctr pull gcr.io/... with the generated hosts.toml goes through the mirror (?ns=gcr.io)', async () => {
    const out = join(work, 'gen-plain');
    const digest = await ctrPull(join(out, 'certs.d'), 'gcr.io/team/plain:v1');
    assert.equal(digest, images.plain?.manifest.digest);
    const reqs = served(mirror).filter((r) => r.path.startsWith('/v2/team/plain/'));
    assert.ok(reqs.some((r) => r.method === 'HEAD' && r.path === '/v2/team/plain/manifests/v1' && r.registry === 'gcr.io' && r.status === 200), JSON.stringify(reqs));
    assert.ok(reqs.filter((r) => r.path.includes('/blobs/')).length >= 3, 'config and layers through the mirror');
  });

  test('containerd: the namespace endpoint with override_path sends /v2/<namespace>/<repo>', async () => {
    const out = join(work, 'gen-ns');
    await regmirrorConfig(['containerd', '--mirror-url', mirror.url, '--namespace', 'gdc', '--out', out], config());
    const text = readFileSync(join(out, 'certs.d', 'gcr.io', 'hosts.toml'), 'utf8');
    assert.match(text, new RegExp(`\\[host\\."${mirror.url}/v2/gdc"\\]`));
    assert.match(text, /override_path = true/);
    assert.equal(await ctrPull(join(out, 'certs.d'), 'gcr.io/team/nsoverride:v1'), images.nsoverride?.manifest.digest);
    assert.ok(served(mirror).some((r) => r.path === '/v2/gdc/team/nsoverride/manifests/v1' && r.registry === 'gcr.io' && r.status === 200));
  });

  test('containerd: the namespace endpoint without override_path sends the doubled /v2/<namespace>/v2/<repo>', async () => {
    const out = join(work, 'gen-ns-doubled');
    await regmirrorConfig(['containerd', '--mirror-url', mirror.url, '--namespace', 'gdc', '--out', out], config());
    const file = join(out, 'certs.d', 'gcr.io', 'hosts.toml');
    writeFileSync(file, readFileSync(file, 'utf8').replace(/\s*override_path = true/, ''));
    assert.equal(await ctrPull(join(out, 'certs.d'), 'gcr.io/team/nsdoubled:v1'), images.nsdoubled?.manifest.digest);
    assert.ok(served(mirror).some((r) => r.path === '/v2/gdc/v2/team/nsdoubled/manifests/v1' && r.registry === 'gcr.io' && r.status === 200));
  });

  test('containerd: _default/hosts.toml sends any other registry to the mirror with ?ns=', async () => {
    const out = join(work, 'gen-default');
    await regmirrorConfig(['containerd', '--mirror-url', mirror.url, '--default', '--out', out], config());
    const hostsDir = join(work, 'default-only');
    mkdirSync(join(hostsDir, '_default'), { recursive: true });
    writeFileSync(join(hostsDir, '_default', 'hosts.toml'), readFileSync(join(out, 'certs.d', '_default', 'hosts.toml')));
    assert.equal(await ctrPull(hostsDir, 'quay.io/team/default:v1'), images.default?.manifest.digest);
    assert.ok(served(mirror).some((r) => r.path === '/v2/team/default/manifests/v1' && r.registry === 'quay.io' && r.status === 200));
  });

  test('skopeo with the generated registries.conf pulls gcr.io/... from the mirror (host-prefixed)', async () => {
    const out = join(work, 'gen-regconf');
    await regmirrorConfig(['registries-conf', '--mirror-url', mirror.url, '--out', out], config());
    const conf = join(out, 'registries.conf');
    const doc = TOML.parse(readFileSync(conf, 'utf8')) as { registry: Array<{ prefix: string; mirror: Array<{ location: string; insecure: boolean }> }> };
    assert.deepEqual(doc.registry.map((r) => [r.prefix, r.mirror[0]?.location, r.mirror[0]?.insecure]), [['gcr.io', `${mirror.hostPort}/gcr.io`, true], ['quay.io', `${mirror.hostPort}/quay.io`, true]]);
    const dest = mkdtempSync(join(work, 'skopeo-'));
    await skopeo(['--registries-conf', conf, 'copy', 'docker://gcr.io/team/skopeo:v1', `dir:${dest}`]);
    assert.equal(sha256(readFileSync(join(dest, 'manifest.json'))), images.skopeo?.manifest.digest);
    assert.ok(served(mirror).some((r) => r.method === 'GET' && r.path === '/v2/gcr.io/team/skopeo/manifests/v1' && r.status === 200));
  });

  test('skopeo with --digest-only: tag pulls do not use the mirror, digest pulls do', async () => {
    const out = join(work, 'gen-digest');
    await regmirrorConfig(['registries-conf', '--mirror-url', mirror.url, '--digest-only', '--out', out], config());
    const conf = join(out, 'registries.conf');
    assert.match(readFileSync(conf, 'utf8'), /mirror-by-digest-only = true/);
    const before = served(mirror).length;
    await assert.rejects(skopeo(['--registries-conf', conf, 'copy', 'docker://gcr.io/team/digestonly:v1', `dir:${mkdtempSync(join(work, 'skopeo-'))}`], 60_000), /gcr\.io/);
    assert.ok(!served(mirror).slice(before).some((r) => r.path.includes('digestonly')), 'the tag pull never reached the mirror');
    const d = images.digestonly?.manifest.digest ?? '';
    const dest = mkdtempSync(join(work, 'skopeo-'));
    await skopeo(['--registries-conf', conf, 'copy', `docker://gcr.io/team/digestonly@${d}`, `dir:${dest}`]);
    assert.equal(sha256(readFileSync(join(dest, 'manifest.json'))), d);
    assert.ok(served(mirror).some((r) => r.path === `/v2/gcr.io/team/digestonly/manifests/${d}` && r.status === 200));
  });
});
