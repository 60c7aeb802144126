/**
 * Issue 14's fault suites against the mirror as its own process, with a misbehaving upstream
 * (test/helpers/fault-server.ts) and a raw-socket client speaking HTTP/1.0 and HTTP/1.1:
 * close-delimited bodies that crashed the process, cut and wrong bodies in every framing (never a
 * short success), fills that fail before their first byte (an OCI error, not an empty reply), a
 * redirect target that asks for the upstream's credentials, and requests the parser rejects.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMirror, mirrorToml, type MirrorProcess } from '../helpers/mirror-process.ts';
import { startFaultServer, type Fault, type FaultServer, type Framing } from '../helpers/fault-server.ts';
import { rawHttp } from '../helpers/raw-http.ts';
import { randomBytesFor, sha256 } from '../helpers/fixtures.ts';

const FRAMINGS: Framing[] = ['length', 'chunked', 'close'];
const VERSIONS = ['1.0', '1.1'] as const;
const TRIALS = 50;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('upstream faults (issue 14)', { timeout: 600_000 }, () => {
  let work: string;
  let fault: FaultServer;
  let cdn: FaultServer;
  let mirror: MirrorProcess;
  let seq = 0;

  /** A new blob on the fault server with `plan`; returns its digest. */
  const addBlob = (size: number, framing: Framing, fault_: Fault, cutAt?: number): { digest: string; bytes: Buffer } => {
    const bytes = randomBytesFor(`fault-${seq++}`, size);
    const digest = sha256(bytes);
    fault.blobs.set(digest, bytes);
    fault.plans.set(digest, { framing, fault: fault_, ...(cutAt === undefined ? {} : { cutAt }) });
    return { digest, bytes };
  };
  const blobFile = (digest: string): string => join(work, 'data', 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-faults-'));
    fault = await startFaultServer();
    cdn = await startFaultServer();
    mirror = await startMirror(
      work,
      mirrorToml(`[log]
level = "info"
[[registry]]
host = "faulty.test"
endpoint = "${fault.url}"
[[registry]]
host = "cdn.test"
endpoint = "${fault.url}"
username = "mirror"
password = "s3cret-upstream-password"
`),
    );
  });

  after(async () => {
    await mirror?.stop();
    await fault?.close();
    await cdn?.close();
  });

  test('close-delimited 60-100 KB upstream bodies are relayed whole and the mirror stays up', async () => {
    for (let i = 0; i < 20; i++) {
      const { digest } = addBlob(60_000 + i * 2_000, 'close', 'good');
      const r = await rawHttp(mirror.port, `/v2/faulty.test/team/app/blobs/${digest}`, i % 2 === 0 ? '1.1' : '1.0');
      assert.equal(r.status, 200, `trial ${i}`);
      assert.equal(r.complete, true);
      assert.equal(sha256(r.body), digest);
      assert.ok(alive(mirror.pid), `the mirror exited after trial ${i}: ${mirror.logText().slice(-2000)}`);
    }
    assert.doesNotMatch(mirror.logText(), /AssertionError|uncaught exception/);
  });

  for (const framing of FRAMINGS) {
    for (const version of VERSIONS) {
      test(`cut and wrong ${framing} bodies never reach an HTTP/${version} client as a success (${TRIALS} trials)`, async () => {
        const outcomes = { error: 0, cut: 0 };
        for (let i = 0; i < TRIALS; i++) {
          const size = 60_000 + ((i * 7919) % 400_000);
          const kind: Fault = i % 2 === 0 ? 'cut' : 'wrong';
          const cutAt = kind === 'cut' ? 1 + ((i * 104_729) % (size - 1)) : undefined;
          const { digest } = addBlob(size, framing, kind, cutAt);
          const r = await rawHttp(mirror.port, `/v2/faulty.test/team/app/blobs/${digest}`, version);
          const what = `trial ${i} (${kind}${cutAt === undefined ? '' : ` at ${cutAt}`} of ${size}): status ${r.status}, ${r.body.length} bytes, complete ${r.complete}`;
          assert.ok(!(r.status === 200 && r.complete), `a short success: ${what}`);
          if (r.status >= 400) {
            assert.match(r.body.toString('utf8'), /"errors":\[\{"code":"(UNAVAILABLE|BLOB_UNKNOWN)"/, what);
            outcomes.error++;
          } else outcomes.cut++;
          assert.equal(existsSync(blobFile(digest)), false, `nothing is cached: ${what}`);
        }
        assert.ok(alive(mirror.pid), 'the mirror is still running');
        assert.equal(outcomes.error + outcomes.cut, TRIALS);
        process.stdout.write(`# ${framing} HTTP/${version}: ${outcomes.error} OCI errors, ${outcomes.cut} failed transfers, 0 short successes\n`);
      });
    }
  }

  test('a fill that fails before its first byte is a 502 UNAVAILABLE naming the registry', async () => {
    for (const framing of FRAMINGS) {
      for (let i = 0; i < 5; i++) {
        const { digest } = addBlob(200_000, framing, 'cut', 0);
        const r = await rawHttp(mirror.port, `/v2/faulty.test/team/app/blobs/${digest}`, '1.1');
        assert.equal(r.status, 502, `${framing} trial ${i}: ${r.status} ${r.body.toString('utf8').slice(0, 200)}`);
        const body = JSON.parse(r.body.toString('utf8')) as { errors: Array<{ code: string; message: string }> };
        assert.equal(body.errors[0]?.code, 'UNAVAILABLE');
        assert.match(body.errors[0]?.message ?? '', /faulty\.test/);
      }
    }
  });

  test('an HTTP/1.0 client of a blob of unknown length gets it whole, with Content-Length', async () => {
    for (const framing of ['chunked', 'close'] as const) {
      const { digest } = addBlob(3 * 1024 * 1024 + 5, framing, 'good');
      const r = await rawHttp(mirror.port, `/v2/faulty.test/team/app/blobs/${digest}`, '1.0');
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-length'], String(3 * 1024 * 1024 + 5));
      assert.equal(sha256(r.body), digest);
    }
  });

  test("a redirect target's 401 challenge is never answered with the registry's credentials", async () => {
    fault.redirectBlobsTo = cdn.url;
    fault.basicAuth = 'mirror:s3cret-upstream-password';
    try {
      const { digest } = addBlob(100_000, 'length', 'good');
      const seenBefore = cdn.seen.length;
      const r = await rawHttp(mirror.port, `/v2/cdn.test/team/app/blobs/${digest}`, '1.1');
      assert.ok(r.status >= 500, `status ${r.status}`);
      assert.match(r.body.toString('utf8'), /asked for credentials \(401\)/);
      const atCdn = cdn.seen.slice(seenBefore);
      assert.ok(atCdn.some((s) => s.url.startsWith('/cdn/')), 'the redirect was followed');
      assert.equal(atCdn.filter((s) => s.url.startsWith('/token')).length, 0, 'no token request to the redirect target');
      for (const s of atCdn) {
        assert.equal(s.authorization, undefined, 'no Authorization to the other origin');
        assert.doesNotMatch(s.body ?? '', /s3cret/);
      }
      // The registry's own credentials still work: nothing was poisoned.
      fault.redirectBlobsTo = undefined;
      const ok = await rawHttp(mirror.port, `/v2/cdn.test/team/app/blobs/${digest}`, '1.1');
      assert.equal(ok.status, 200);
      assert.equal(sha256(ok.body), digest);
    } finally {
      fault.redirectBlobsTo = undefined;
      fault.basicAuth = undefined;
    }
    assert.doesNotMatch(mirror.logText(), /s3cret/);
  });

  test('requests the HTTP parser rejects get a status and an OCI error before the close', async () => {
    const cases: Array<{ what: string; raw: string; status: number }> = [
      { what: 'oversized headers', raw: `GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, status: 431 },
      { what: 'duplicate Content-Length', raw: 'POST /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', status: 400 },
      { what: 'Transfer-Encoding with Content-Length', raw: 'POST /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', status: 400 },
      { what: 'a bad method', raw: 'FROB /v2/ HTTP/1.1\r\nHost: x\r\n\r\n', status: 501 },
      { what: 'a header line without a colon', raw: 'GET /v2/ HTTP/1.1\r\nHost x\r\n\r\n', status: 400 },
    ];
    for (const c of cases) {
      const r = await rawHttp(mirror.port, '/v2/', '1.1', { raw: c.raw });
      assert.equal(r.status, c.status, c.what);
      assert.match(r.body.toString('utf8'), /^\{"errors":\[\{"code":"[A-Z_]+","message":"[^"]+"/, c.what);
    }
    assert.ok(alive(mirror.pid));
  });
});
