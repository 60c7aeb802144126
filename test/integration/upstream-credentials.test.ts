/**
 * Per-registry credentials and trust against real docker-registry processes: htpasswd (Basic)
 * with every credential source, TLS with a CA made by openssl (fails without ca_file, works
 * with it), and mTLS. regmirror runs as its own process for each configuration.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { startMirror, mirrorToml, type MirrorProcess } from '../helpers/mirror-process.ts';
import { makeImage, pushImage, sha256, type Image } from '../helpers/fixtures.ts';
import { issueCert, makeCa } from '../helpers/pki.ts';
import { skopeo } from '../helpers/skopeo.ts';

const PASSWORD = 'htpw-S3cr3t-9f2c-upstream';
const HOST = 'basic.registry.test';

describe('upstream credentials and trust', { timeout: 300_000 }, () => {
  let work: string;
  let basicReg: RegistryProcess;
  let image: Image;
  let helperDir: string;
  let helperLog: string;
  const logs: string[] = [];

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-creds-'));
    const htpasswd = join(work, 'htpasswd');
    writeFileSync(htpasswd, execFileSync('htpasswd', ['-Bbn', 'robot', PASSWORD]));
    basicReg = await startRegistry(join(work, 'basic'), { extraYaml: `auth:\n  htpasswd:\n    realm: basic-realm\n    path: ${htpasswd}\n` });
    image = makeImage('creds-app', [200 * 1024], 'oci');
    await pushImage(basicReg.url, 'team/secret', 'v1', image, { authorization: `Basic ${Buffer.from(`robot:${PASSWORD}`).toString('base64')}` });
    helperDir = join(work, 'bin');
    mkdirSync(helperDir);
    helperLog = join(work, 'helper.log');
    const helper = join(helperDir, 'docker-credential-regtest');
    writeFileSync(
      helper,
      `#!/bin/sh
[ "$1" = get ] || exit 2
host=$(cat)
echo "get $host" >> ${helperLog}
if [ "$host" = "${HOST}" ]; then
  printf '{"ServerURL":"%s","Username":"robot","Secret":"%s"}' "$host" '${PASSWORD}'
else
  echo "credentials not found in native keychain"
  exit 1
fi
`,
    );
    chmodSync(helper, 0o755);
  });

  after(async () => {
    await basicReg?.stop();
  });

  /** Starts a mirror whose only registry is `HOST` at `endpoint` with `extra` lines in its [[registry]]. */
  async function mirrorWith(extra: string, endpoint = basicReg.url, env: NodeJS.ProcessEnv = {}): Promise<MirrorProcess> {
    const dir = mkdtempSync(join(work, 'm-'));
    return startMirror(dir, mirrorToml(`[log]\nlevel = "debug"\n[[registry]]\nhost = "${HOST}"\nendpoint = "${endpoint}"\n${extra}\n`), {
      PATH: `${helperDir}:${process.env.PATH ?? ''}`,
      ...env,
    });
  }

  async function pullsThrough(m: MirrorProcess): Promise<void> {
    try {
      const r = await fetch(`${m.url}/v2/${HOST}/team/secret/manifests/v1`);
      assert.equal(r.status, 200, await r.clone().text());
      assert.equal(sha256(Buffer.from(await r.arrayBuffer())), image.manifest.digest);
      const layer = image.layers[0];
      assert.ok(layer);
      const b = await fetch(`${m.url}/v2/${HOST}/team/secret/blobs/${layer.digest}`);
      assert.equal(sha256(Buffer.from(await b.arrayBuffer())), layer.digest);
    } finally {
      await m.stop();
      logs.push(m.logText());
    }
  }

  function writeDockerConfig(doc: unknown): string {
    const p = join(mkdtempSync(join(work, 'dc-')), 'config.json');
    writeFileSync(p, JSON.stringify(doc));
    return p;
  }

  const b64 = Buffer.from(`robot:${PASSWORD}`).toString('base64');

  test('htpasswd upstream: inline password (pulled with skopeo)', async () => {
    const m = await mirrorWith(`username = "robot"\npassword = "${PASSWORD}"`);
    const dest = mkdtempSync(join(work, 'pull-'));
    await skopeo(['copy', '--src-tls-verify=false', `docker://${m.hostPort}/${HOST}/team/secret:v1`, `dir:${dest}`]);
    assert.equal(sha256(readFileSync(join(dest, 'manifest.json'))), image.manifest.digest);
    await pullsThrough(m);
  });

  test('htpasswd upstream: password_env', async () => {
    await pullsThrough(await mirrorWith('username = "robot"\npassword_env = "UPSTREAM_PW"', basicReg.url, { UPSTREAM_PW: PASSWORD }));
  });

  test('htpasswd upstream: password_file', async () => {
    const f = join(work, 'pw.txt');
    writeFileSync(f, `${PASSWORD}\n`);
    await pullsThrough(await mirrorWith(`username = "robot"\npassword_file = "${f}"`));
  });

  test('htpasswd upstream: docker config.json auths.<host>.auth', async () => {
    await pullsThrough(await mirrorWith(`docker_config = "${writeDockerConfig({ auths: { [HOST]: { auth: b64 } } })}"`));
  });

  test('htpasswd upstream: config.json username/password under a scheme-and-path key', async () => {
    await pullsThrough(await mirrorWith(`docker_config = "${writeDockerConfig({ auths: { [`https://${HOST}/v1/`]: { username: 'robot', password: PASSWORD } } })}"`));
  });

  test('htpasswd upstream: credHelpers runs docker-credential-<name> get with the host on stdin', async () => {
    const before = readLog();
    await pullsThrough(await mirrorWith(`docker_config = "${writeDockerConfig({ auths: {}, credHelpers: { [HOST]: 'regtest' } })}"`));
    assert.ok(readLog().length > before.length);
    assert.match(readLog(), new RegExp(`get ${HOST.replace(/\./g, '\\.')}`));
  });

  test('htpasswd upstream: credsStore', async () => {
    await pullsThrough(await mirrorWith(`docker_config = "${writeDockerConfig({ auths: { [HOST]: {} }, credsStore: 'regtest' })}"`));
  });

  test('no credentials: a clear UNAUTHORIZED naming the keys to set', async () => {
    const m = await mirrorWith('');
    try {
      const r = await fetch(`${m.url}/v2/${HOST}/team/secret/manifests/v1`);
      assert.equal(r.status, 401);
      const e = ((await r.json()) as { errors: Array<{ code: string; message: string }> }).errors[0];
      assert.equal(e?.code, 'UNAUTHORIZED');
      assert.match(e?.message ?? '', /basic\.registry\.test requires credentials.*docker_config, gcr_key_file or token/);
    } finally {
      await m.stop();
    }
  });

  test('wrong password: UNAUTHORIZED saying which credential key was rejected', async () => {
    const m = await mirrorWith('username = "robot"\npassword_env = "UPSTREAM_PW"', basicReg.url, { UPSTREAM_PW: 'not-the-password' });
    try {
      const r = await fetch(`${m.url}/v2/${HOST}/team/secret/manifests/v1`);
      assert.equal(r.status, 401);
      const e = ((await r.json()) as { errors: Array<{ code: string; message: string }> }).errors[0];
      assert.match(e?.message ?? '', /rejected the mirror's credentials \(password_env/);
      assert.ok(!JSON.stringify(e).includes('not-the-password'));
    } finally {
      await m.stop();
      logs.push(m.logText());
    }
  });

  test('a credential helper missing from PATH stops start-up naming docker_config', async () => {
    const dc = writeDockerConfig({ credHelpers: { [HOST]: 'nosuchhelper' } });
    await assert.rejects(mirrorWith(`docker_config = "${dc}"`), /registry\[0\]\.docker_config: credential helper docker-credential-nosuchhelper .* is not on PATH/);
  });

  describe('TLS', () => {
    let tlsReg: RegistryProcess;
    let mtlsReg: RegistryProcess;
    let caFile: string;
    let client: { cert: string; key: string };

    before(async () => {
      const pki = join(work, 'pki');
      const ca = makeCa(pki, 'upstream-ca');
      caFile = ca.cert;
      const server = issueCert(ca, pki, 'registry', 'server');
      const clientCa = makeCa(pki, 'client-ca');
      client = issueCert(clientCa, pki, 'mirror-client', 'client');
      // Both TLS registries serve the storage the htpasswd registry was filled in, without auth.
      const storageDir = join(work, 'basic', 'storage');
      const tlsYaml = (clientCas: boolean) =>
        `  tls:\n    certificate: ${server.cert}\n    key: ${server.key}\n${clientCas ? `    clientcas:\n      - ${clientCa.cert}\n` : ''}`;
      tlsReg = await startRegistry(join(work, 'tls'), { tls: true, httpYaml: tlsYaml(false), storageDir });
      mtlsReg = await startRegistry(join(work, 'mtls'), { tls: true, httpYaml: tlsYaml(true), storageDir });
    });

    after(async () => {
      await tlsReg?.stop();
      await mtlsReg?.stop();
    });

    async function status(m: MirrorProcess): Promise<{ status: number; message: string }> {
      try {
        const r = await fetch(`${m.url}/v2/${HOST}/team/secret/manifests/v1`);
        const text = await r.text();
        const message = r.status === 200 ? sha256(Buffer.from(text)) : ((JSON.parse(text) as { errors: Array<{ message: string }> }).errors[0]?.message ?? '');
        return { status: r.status, message };
      } finally {
        await m.stop();
      }
    }

    test('an upstream with a certificate from an unknown CA fails clearly without ca_file', async () => {
      const r = await status(await mirrorWith('', tlsReg.url));
      assert.equal(r.status, 502);
      assert.match(r.message, /basic\.registry\.test is unreachable or failing.*(certificate|self.signed|verify)/i);
    });

    test('the same upstream works with ca_file naming the CA', async () => {
      const r = await status(await mirrorWith(`ca_file = "${caFile}"`, tlsReg.url));
      assert.equal(r.status, 200);
      assert.equal(r.message, image.manifest.digest);
    });

    test('insecure_skip_verify = true accepts it without the CA', async () => {
      const r = await status(await mirrorWith('insecure_skip_verify = true', tlsReg.url));
      assert.equal(r.status, 200);
    });

    test('mTLS: refused without a client certificate, served with client_cert and client_key', async () => {
      const without = await status(await mirrorWith(`ca_file = "${caFile}"`, mtlsReg.url));
      assert.equal(without.status, 502);
      const withCert = await status(await mirrorWith(`ca_file = "${caFile}"\nclient_cert = "${client.cert}"\nclient_key = "${client.key}"`, mtlsReg.url));
      assert.equal(withCert.status, 200);
      assert.equal(withCert.message, image.manifest.digest);
    });
  });

  function readLog(): string {
    try {
      return readFileSync(helperLog, 'utf8');
    } catch {
      return '';
    }
  }

  test('no secret in any mirror log of these runs', () => {
    assert.ok(logs.length >= 8);
    for (const log of logs) {
      for (const s of [PASSWORD, b64, 'not-the-password']) assert.ok(!log.includes(s), `log contains ${s.slice(0, 6)}...`);
    }
  });
});
