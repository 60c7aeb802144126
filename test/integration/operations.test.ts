/**
 * Operations, end to end with regmirror as its own process in front of real docker-registry
 * upstreams: /metrics after a known pull sequence (exact counters, bounded labels), /metrics behind
 * [auth], /livez and /readyz with a drain file and with SIGTERM while a 256 MiB transfer goes on,
 * SIGHUP reloads (a rotated upstream password, a transfer across the reload, a broken file refused,
 * a new [[registry]] routed), and a second listener on the main one's address stopping start-up.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { BIN, ROOT, startMirror, mirrorToml, type MirrorProcess } from '../helpers/mirror-process.ts';
import { makeImage, pushBlob, pushImage, randomBytesFor, sha256, type Image } from '../helpers/fixtures.ts';
import { freePort, waitFor } from '../helpers/net.ts';
import { issueCert, makeCa } from '../helpers/pki.ts';

const HOST = 'ops.example';

/** GET (or HEAD) through the mirror; the status, headers and body. */
async function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const res = await fetch(url, { method, headers });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

/** The sample lines of the regmirror_ series in a /metrics body. */
const series = (text: string): string[] => text.split('\n').filter((l) => l.startsWith('regmirror_'));
/** The value of one sample line (`name{labels}` exactly), or undefined when absent. */
function sample(text: string, nameAndLabels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${nameAndLabels} `));
  return line === undefined ? undefined : Number(line.slice(nameAndLabels.length + 1));
}

/** A response whose body is not read until resume() (a slow client holding a transfer open). */
function pausedGet(url: string): Promise<{ res: IncomingMessage; finish: () => Promise<{ bytes: number; digest: string }> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, (res) => {
      res.pause();
      const hash = createHash('sha256');
      let bytes = 0;
      const finish = (): Promise<{ bytes: number; digest: string }> =>
        new Promise((done, fail) => {
          res.on('data', (c: Buffer) => {
            bytes += c.byteLength;
            hash.update(c);
          });
          res.once('end', () => done({ bytes, digest: `sha256:${hash.digest('hex')}` }));
          res.once('error', fail);
          res.resume();
        });
      resolve({ res, finish });
    });
    req.once('error', reject);
    req.end();
  });
}

/** Sends SIGHUP to the mirror and waits for its reload line; the line. */
async function sighup(m: MirrorProcess): Promise<string> {
  const count = (): number => (m.logText().match(/"msg":"configuration reload/g) ?? []).length;
  const before = count();
  process.kill(m.pid, 'SIGHUP');
  await waitFor('the reload to be logged', () => count() > before, 10_000, 50);
  return m.logText().split('\n').filter((l) => l.includes('"msg":"configuration reload')).at(-1) ?? '';
}

/** Waits for the mirror process to exit. */
function exitOf(pid: number, timeoutMs: number): Promise<void> {
  return waitFor(`process ${pid} to exit`, () => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  }, timeoutMs, 100);
}

describe('operations: metrics, health, drain, reload', { timeout: 600_000 }, () => {
  let work: string;
  let upstream: RegistryProcess;
  let a: Image;
  let b: Image;
  const big = randomBytesFor('ops-big', 256 * 1024 * 1024);
  const bigDigest = sha256(big);

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-ops-'));
    upstream = await startRegistry(join(work, 'upstream'));
    a = makeImage('ops-a', [150 * 1024], 'oci');
    b = makeImage('ops-b', [100 * 1024, 60 * 1024], 'docker');
    await pushImage(upstream.url, 'team/a', '1', a);
    await pushImage(upstream.url, 'team/b', '1', b);
    await pushBlob(upstream.url, 'team/big', { digest: bigDigest, bytes: big });
  });

  after(async () => {
    await upstream?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const registryToml = (endpoint: string, host = HOST): string => `[[registry]]\nhost = "${host}"\nendpoint = "${endpoint}"\n`;

  test('/metrics after two cold pulls, the same two warm and one 404: exact counters, bounded labels', async () => {
    const dir = mkdtempSync(join(work, 'metrics-'));
    const m = await startMirror(dir, mirrorToml(registryToml(upstream.url)));
    try {
      const images = [['team/a', a], ['team/b', b]] as const;
      const blobsOf = (im: Image) => [im.config, ...im.layers];
      // A pull: its blobs by digest, then its manifest by tag (blobs first: the manifest's config
      // prefetch then finds the config cached, so every answer's cache result is known).
      const pull = async (repo: string, im: Image, cache: string): Promise<void> => {
        for (const blob of blobsOf(im)) {
          const r = await get(`${m.url}/v2/${HOST}/${repo}/blobs/${blob.digest}`);
          assert.equal(r.status, 200);
          assert.equal(r.headers.get('x-regmirror-cache'), cache);
          assert.equal(sha256(r.body), blob.digest);
        }
        const r = await get(`${m.url}/v2/${HOST}/${repo}/manifests/1`, { accept: im.manifest.mediaType });
        assert.equal(r.status, 200);
        assert.equal(r.headers.get('x-regmirror-cache'), cache);
      };
      for (const [repo, im] of images) await pull(repo, im, 'miss');
      for (const [repo, im] of images) await pull(repo, im, 'hit');
      assert.equal((await get(`${m.url}/v2/${HOST}/team/a/manifests/nope`)).status, 404);

      const text = (await get(`${m.url}/metrics`)).body.toString();
      const blobCount = blobsOf(a).length + blobsOf(b).length;
      const blobBytes = [...blobsOf(a), ...blobsOf(b)].reduce((n, x) => n + x.size, 0);
      const manifestBytes = a.manifest.size + b.manifest.size;
      const R = `registry="${HOST}"`;
      assert.equal(sample(text, `regmirror_http_requests_total{${R},kind="blob",cache="miss",code="200"}`), blobCount);
      assert.equal(sample(text, `regmirror_http_requests_total{${R},kind="blob",cache="hit",code="200"}`), blobCount);
      assert.equal(sample(text, `regmirror_http_requests_total{${R},kind="manifest",cache="miss",code="200"}`), 2);
      assert.equal(sample(text, `regmirror_http_requests_total{${R},kind="manifest",cache="hit",code="200"}`), 2);
      assert.equal(sample(text, `regmirror_http_requests_total{${R},kind="manifest",cache="",code="404"}`), 1);
      assert.equal(sample(text, `regmirror_http_request_duration_seconds_count{${R},kind="blob"}`), 2 * blobCount);
      assert.equal(sample(text, `regmirror_http_request_duration_seconds_count{${R},kind="manifest"}`), 5);
      assert.equal(sample(text, `regmirror_served_bytes_total{${R},kind="blob",cache="miss"}`), blobBytes);
      assert.equal(sample(text, `regmirror_served_bytes_total{${R},kind="blob",cache="hit"}`), blobBytes);
      assert.equal(sample(text, `regmirror_served_bytes_total{${R},kind="manifest",cache="miss"}`), manifestBytes);
      assert.equal(sample(text, `regmirror_served_bytes_total{${R},kind="manifest",cache="hit"}`), manifestBytes);
      assert.equal(sample(text, `regmirror_upstream_bytes_total{${R},kind="blob"}`), blobBytes);
      assert.equal(sample(text, `regmirror_upstream_bytes_total{${R},kind="manifest"}`), manifestBytes);
      assert.equal(sample(text, `regmirror_fills_total{${R},outcome="stored"}`), blobCount);
      assert.equal(sample(text, `regmirror_upstream_requests_total{${R},method="GET",kind="blob",code="200"}`), blobCount);
      assert.equal(sample(text, `regmirror_upstream_requests_total{${R},method="GET",kind="manifest",code="200"}`), 2);
      assert.equal(sample(text, `regmirror_upstream_requests_total{${R},method="GET",kind="manifest",code="404"}`), 1);
      assert.ok((sample(text, `regmirror_upstream_last_success_timestamp_seconds{${R}}`) ?? 0) > Date.now() / 1000 - 120);
      assert.equal(sample(text, 'regmirror_fills_in_flight'), 0);
      assert.equal(sample(text, 'regmirror_cache_objects{kind="blob"}'), blobCount);
      assert.equal(sample(text, 'regmirror_cache_objects{kind="manifest"}'), 2);
      assert.equal(sample(text, 'regmirror_cache_bytes{kind="blob"}'), blobBytes);
      assert.match(text, /^regmirror_build_info\{version="\d+\.\d+\.\d+",nodejs="[\d.]+"\} 1$/m);
      // Bounded labels: no repository, tag or digest anywhere; every label value from a small set.
      assert.equal(/sha256:|team\/|nope/.test(text), false);
      const values = new Set<string>();
      for (const line of series(text)) for (const [, v] of line.matchAll(/="([^"]*)"/g)) values.add(v ?? '');
      const allowed = /^(|ops\.example|blob|manifest|tags|ping|health|metrics|other|hit|miss|stale|stored|failed|relayed|GET|HEAD|\d{3}|error|[\d.]+|\+Inf|\d+\.\d+\.\d+)$/;
      for (const v of values) assert.match(v, allowed, `label value ${v}`);
      assert.equal((await get(`${m.url}/metrics`, {}, 'POST')).status, 405);
      // The Grafana dashboard in the repository asks only for series this /metrics has.
      const dashboard = JSON.parse(readFileSync(join(ROOT, 'packaging/grafana/regmirror-dashboard.json'), 'utf8')) as { panels: Array<{ title: string; targets: Array<{ expr: string }> }> };
      const families = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((x) => x[1]));
      for (const panel of dashboard.panels) {
        for (const t of panel.targets) {
          for (const [name] of t.expr.matchAll(/\b(?:regmirror|process|nodejs)_[a-z0-9_]+/g)) {
            assert.ok(families.has(name) || families.has(name.replace(/_bucket$/, '')), `dashboard panel "${panel.title}" asks for ${name}, which /metrics does not have`);
          }
        }
      }
    } finally {
      await m.stop();
    }
  });

  test('/readyz: 503 while the drain file exists and after SIGTERM, while an in-flight 256 MiB transfer completes', async () => {
    const dir = mkdtempSync(join(work, 'drain-'));
    const drain = join(dir, 'drain');
    const serverKeys = 'data_dir = "data"\ndrain_file = "drain"\nshutdown_delay = "2s"\nshutdown_timeout = "60s"\n';
    const m = await startMirror(dir, mirrorToml(registryToml(upstream.url)).replace('data_dir = "data"\n', serverKeys));
    try {
      assert.equal((await get(`${m.url}/livez`)).body.toString(), 'ok\n');
      const ready = await get(`${m.url}/readyz`);
      assert.equal(ready.status, 200);
      assert.deepEqual(JSON.parse(ready.body.toString()), { status: 'ready', checks: { draining: 'ok', storage: 'ok', metadata: 'ok' } });
      writeFileSync(drain, '');
      await waitFor('/readyz to fail with the drain file', async () => (await get(`${m.url}/readyz`)).status === 503, 5_000, 200);
      const drained = JSON.parse((await get(`${m.url}/readyz`)).body.toString()) as { checks: { draining: string } };
      assert.match(drained.checks.draining, /drain file .*drain exists/);
      // Draining by file still serves (a balancer takes the mirror out; it is not stopping).
      assert.equal((await get(`${m.url}/v2/${HOST}/team/a/manifests/1`, { accept: a.manifest.mediaType })).status, 200);
      rmSync(drain);
      await waitFor('/readyz to pass again', async () => (await get(`${m.url}/readyz`)).status === 200, 5_000, 200);

      const transfer = await pausedGet(`${m.url}/v2/${HOST}/team/big/blobs/${bigDigest}`);
      assert.equal(transfer.res.statusCode, 200);
      process.kill(m.pid, 'SIGTERM');
      await waitFor('/readyz to fail after SIGTERM', async () => (await get(`${m.url}/readyz`).catch(() => ({ status: 0 }))).status === 503, 2_000, 100);
      assert.equal((await get(`${m.url}/livez`)).status, 200);
      // After shutdown_delay the listener is closed: new connections are refused...
      await waitFor('the listener to close', async () => (await get(`${m.url}/livez`).then(() => false, () => true)), 5_000, 100);
      // ...and the transfer that was going on completes, byte for byte.
      const done = await transfer.finish();
      assert.equal(done.bytes, big.byteLength);
      assert.equal(done.digest, bigDigest);
      await exitOf(m.pid, 15_000);
      assert.match(m.logText(), /"signal":"SIGTERM".*"msg":"shutting down"/);
      assert.match(m.logText(), /"msg":"stopped"/);
    } finally {
      await m.stop();
    }
  });

  test('[server] shutdown_timeout cuts a transfer still running at the deadline, then the process exits', async () => {
    const dir = mkdtempSync(join(work, 'cut-'));
    const m = await startMirror(dir, mirrorToml(registryToml(upstream.url)).replace('data_dir = "data"\n', 'data_dir = "data"\nshutdown_timeout = "1s"\n'));
    try {
      const transfer = await pausedGet(`${m.url}/v2/${HOST}/team/big/blobs/${bigDigest}`);
      assert.equal(transfer.res.statusCode, 200);
      const t = performance.now();
      process.kill(m.pid, 'SIGTERM');
      await exitOf(m.pid, 10_000);
      const took = performance.now() - t;
      assert.ok(took >= 900 && took < 8_000, `exited ${took.toFixed(0)} ms after SIGTERM (shutdown_timeout 1 s)`);
      // The held transfer was cut, never completed short.
      const done = await transfer.finish().then((r) => r, (e: Error) => e);
      assert.ok(done instanceof Error || done.bytes < big.byteLength, 'the transfer was cut');
    } finally {
      await m.stop();
    }
  });

  test('[metrics] enabled = false answers /metrics 404; public = true opens it with [auth] on', async () => {
    const off = await startMirror(mkdtempSync(join(work, 'metrics-off-')), mirrorToml(`[metrics]\nenabled = false\n${registryToml(upstream.url)}`));
    try {
      const r = await get(`${off.url}/metrics`);
      assert.equal(r.status, 404);
      assert.match(r.body.toString(), /metrics are off: \[metrics\] enabled = false/);
      assert.equal((await get(`${off.url}/readyz`)).status, 200);
    } finally {
      await off.stop();
    }
    const open = await startMirror(mkdtempSync(join(work, 'metrics-public-')), mirrorToml(`[metrics]\npublic = true\n[auth]\n[[auth.user]]\nname = "ops"\npassword = "ops-Pw-3"\nroles = ["admin"]\n${registryToml(upstream.url)}`));
    try {
      const r = await get(`${open.url}/metrics`);
      assert.equal(r.status, 200);
      assert.match(r.body.toString(), /^regmirror_build_info\{/m);
    } finally {
      await open.stop();
    }
  });

  test('SIGHUP: rotated upstream password, a transfer across the reload, a broken file refused, a new [[registry]] routed, /metrics behind [auth]', async () => {
    const dir = mkdtempSync(join(work, 'reload-'));
    const htpasswd = join(dir, 'htpasswd');
    writeFileSync(htpasswd, execFileSync('htpasswd', ['-Bbn', 'robot', 'first-Pw-1']));
    const secret = await startRegistry(join(dir, 'secret'), { extraYaml: `auth:\n  htpasswd:\n    realm: r\n    path: ${htpasswd}\n` });
    try {
      const basic = (pw: string): Record<string, string> => ({ authorization: `Basic ${Buffer.from(`robot:${pw}`).toString('base64')}` });
      const v1 = makeImage('ops-secret-1', [80 * 1024], 'oci');
      const v2 = makeImage('ops-secret-2', [90 * 1024], 'oci');
      await pushImage(secret.url, 'team/secret', 'v1', v1, basic('first-Pw-1'));
      const pwFile = join(dir, 'pw');
      writeFileSync(pwFile, 'first-Pw-1\n');
      const users = `[auth]\n[[auth.user]]\nname = "ops"\npassword = "ops-Pw-9"\nroles = ["admin"]\n[[auth.user]]\nname = "dev"\npassword = "dev-Pw-9"\nroles = ["pull"]\n`;
      const config = (pw: string, extra = ''): string =>
        mirrorToml(`${users}[[registry]]\nhost = "secret.example"\nendpoint = "${secret.url}"\nusername = "robot"\npassword_file = "${pw}"\n${extra}`);
      const m = await startMirror(dir, config(pwFile));
      const toml = join(dir, 'mirror.toml');
      const hup = (): Promise<string> => sighup(m);
      const manifest = (repo: string, tag: string, im: Image) => get(`${m.url}/v2/${repo}/manifests/${tag}`, { accept: im.manifest.mediaType });
      try {
        assert.equal((await manifest('secret.example/team/secret', 'v1', v1)).status, 200);
        const layer = `${m.url}/v2/secret.example/team/secret/blobs/${v1.layers[0]?.digest ?? ''}`;
        assert.equal(sha256((await get(layer)).body), v1.layers[0]?.digest);

        // /metrics with [auth]: admin only.
        assert.equal((await get(`${m.url}/metrics`)).status, 401);
        assert.equal((await get(`${m.url}/metrics`, { authorization: `Basic ${Buffer.from('dev:dev-Pw-9').toString('base64')}` })).status, 403);
        const asOps = { authorization: `Basic ${Buffer.from('ops:ops-Pw-9').toString('base64')}` };
        assert.equal((await get(`${m.url}/metrics`, asOps)).status, 200);
        // Health stays open.
        assert.equal((await get(`${m.url}/readyz`)).status, 200);

        // The upstream's password is rotated; the mirror still has the old one.
        writeFileSync(htpasswd, execFileSync('htpasswd', ['-Bbn', 'robot', 'second-Pw-2']));
        await waitFor('the upstream to take the new password', async () => {
          const r = await fetch(`${secret.url}/v2/`, { headers: basic('second-Pw-2') });
          return r.status === 200;
        }, 10_000, 200);
        await pushImage(secret.url, 'team/secret', 'v2', v2, basic('second-Pw-2'));
        const before = await manifest('secret.example/team/secret', 'v2', v2);
        assert.notEqual(before.status, 200, 'the old password no longer works upstream');

        // A transfer in flight across the reload: a client holding a layer's response open.
        const slow = await pausedGet(layer);
        assert.equal(slow.res.statusCode, 200);

        const pw2 = join(dir, 'pw2');
        writeFileSync(pw2, 'second-Pw-2\n');
        writeFileSync(toml, config(pw2, registryToml(upstream.url, 'public.example')));
        const unrouted = await manifest('public.example/team/a', '1', a);
        assert.equal(unrouted.status, 403, 'public.example is not routed before the reload');
        assert.match(unrouted.body.toString(), /registry \\"public\.example\\" is not mirrored here/);
        const line = await hup();
        assert.match(line, /"msg":"configuration reloaded: registry public\.example added; registry secret\.example changed"/);
        const done = await slow.finish();
        assert.equal(done.digest, v1.layers[0]?.digest);
        assert.equal((await manifest('secret.example/team/secret', 'v2', v2)).status, 200);
        assert.equal((await manifest('secret.example/team/secret', 'v1', v1)).status, 200);
        assert.equal((await manifest('public.example/team/a', '1', a)).status, 200);

        // A file that does not validate changes nothing, and says which key is wrong.
        writeFileSync(toml, `${config(pw2, registryToml(upstream.url, 'public.example'))}[cache]\nmax_sise = "1GiB"\n`);
        const refused = await hup();
        assert.match(refused, /configuration reload refused, the running configuration stays: cache\.max_sise: unknown key; did you mean \\"max_size\\"\?/);
        assert.equal((await manifest('public.example/team/a', '1', a)).status, 200);
        assert.equal((await get(`${m.url}/metrics`, asOps)).status, 200);

        // A key that only a restart can change is named, and keeps its running value.
        writeFileSync(toml, config(pw2, registryToml(upstream.url, 'public.example')).replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:1"'));
        assert.match(await hup(), /keep their running values until a restart: server\.listen/);
        assert.equal((await get(`${m.url}/livez`)).status, 200);

        // The mirror's own users: a rotated password applies at once, the old one stops working.
        writeFileSync(toml, config(pw2, registryToml(upstream.url, 'public.example')).replace('"ops-Pw-9"', '"ops-Pw-10"'));
        assert.match(await hup(), /configuration reloaded: \[auth\] users"/);
        assert.equal((await get(`${m.url}/metrics`, asOps)).status, 401);
        assert.equal((await get(`${m.url}/metrics`, { authorization: `Basic ${Buffer.from('ops:ops-Pw-10').toString('base64')}` })).status, 200);
        assert.equal(/second-Pw-2|first-Pw-1|ops-Pw-9|ops-Pw-10/.test(m.logText()), false, 'no password in the log');
      } finally {
        await m.stop();
      }
    } finally {
      await secret.stop();
    }
  });

  test('SIGHUP takes a renewed TLS certificate: new connections get it, an open one goes on; a broken key is refused', async () => {
    const dir = mkdtempSync(join(work, 'tls-'));
    const ca = makeCa(dir, 'ca');
    const first = issueCert(ca, dir, 'first', 'server');
    const second = issueCert(ca, dir, 'second', 'server');
    copyFileSync(first.cert, join(dir, 'tls.crt'));
    copyFileSync(first.key, join(dir, 'tls.key'));
    const m = await startMirror(dir, mirrorToml(registryToml(upstream.url)).replace('data_dir = "data"\n', 'data_dir = "data"\ntls_cert = "tls.crt"\ntls_key = "tls.key"\n'));
    const caPem = readFileSync(ca.cert);
    const connectTls = (): Promise<TLSSocket> => new Promise((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port: m.port, ca: caPem }, () => resolve(s));
      s.once('error', reject);
    });
    const cn = (s: TLSSocket): string => String(s.getPeerCertificate().subject.CN);
    /** One HTTP/1.1 request on an open TLS connection; the status line. */
    const ask = (s: TLSSocket): Promise<string> => new Promise((resolve) => {
      s.once('data', (d: Buffer) => resolve(d.toString().split('\r\n')[0] ?? ''));
      s.write('GET /livez HTTP/1.1\r\nHost: mirror\r\n\r\n');
    });
    const hup = (): Promise<string> => sighup(m);
    try {
      const open = await connectTls();
      assert.equal(cn(open), 'first');
      copyFileSync(second.cert, join(dir, 'tls.crt'));
      copyFileSync(second.key, join(dir, 'tls.key'));
      assert.match(await hup(), /server\.tls_cert \/ tls_key re-read/);
      const renewed = await connectTls();
      assert.equal(cn(renewed), 'second');
      renewed.destroy();
      assert.equal(await ask(open), 'HTTP/1.1 200 OK', 'a connection opened before the reload goes on');
      open.destroy();
      writeFileSync(join(dir, 'tls.key'), 'not a key\n');
      assert.match(await hup(), /reload refused, the running configuration stays: server\.tls_key: \S+tls\.key holds no PEM private key/);
      const after = await connectTls();
      assert.equal(cn(after), 'second');
      after.destroy();
    } finally {
      await m.stop();
    }
  });

  test('with [api] listen, /livez, /readyz and /metrics answer on both listeners', async () => {
    const dir = mkdtempSync(join(work, 'api-'));
    const m = await startMirror(dir, mirrorToml(`[api]\nlisten = "127.0.0.1:0"\n${registryToml(upstream.url)}`));
    try {
      let apiPort = 0;
      await waitFor('the API listener', () => {
        apiPort = Number(/"apiPort":(\d+)/.exec(m.logText())?.[1] ?? 0);
        return apiPort > 0;
      });
      for (const base of [m.url, `http://127.0.0.1:${apiPort}`]) {
        assert.equal((await get(`${base}/livez`)).status, 200, base);
        assert.equal((await get(`${base}/readyz`)).status, 200, base);
        const metrics = await get(`${base}/metrics`);
        assert.equal(metrics.status, 200, base);
        assert.match(metrics.body.toString(), /^regmirror_build_info\{/m);
      }
    } finally {
      await m.stop();
    }
  });

  test('[api] listen on the main listener\'s address: start-up fails and the process exits', async () => {
    const dir = mkdtempSync(join(work, 'api-clash-'));
    const port = await freePort();
    const toml = join(dir, 'mirror.toml');
    writeFileSync(toml, `default_registry = ""\n[server]\nlisten = "127.0.0.1:${port}"\ndata_dir = "data"\n[api]\nlisten = "127.0.0.1:${port}"\n`);
    const r = spawnSync(process.execPath, [BIN, 'serve', '--config', toml], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /cannot start: an address in use/);
  });
});
