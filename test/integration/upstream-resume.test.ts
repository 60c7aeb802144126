/**
 * A cut upstream blob resumed with Range (issue 19 item 3): a 256 MiB layer in a real
 * docker-registry, behind a proxy that cuts blob answers at random offsets (the connection
 * destroyed mid-body), 20 cuts in all over 10 cold pulls through fresh mirrors. With resume, every
 * client receives the whole blob with the right digest and the proxy saw a `Range: bytes=N-` per
 * cut; with resume_attempts = 0 the transfer fails, never a short success.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomInt } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RegistryProcess } from '../helpers/registry-process.ts';
import { startMirror, mirrorToml } from '../helpers/mirror-process.ts';
import { makeImage, pushImage, type Image } from '../helpers/fixtures.ts';

const BIG = 256 * 1024 * 1024;

interface CutProxy {
  url: string;
  /** Cuts still to make: each blob answer while > 0 is cut at a random offset. */
  cutsLeft: number;
  /** Blob GETs seen: their Range header and, when cut, how many body bytes went out first. */
  blobGets: Array<{ range: string | undefined; cutAfter?: number }>;
  close(): Promise<void>;
}

/** A proxy to `upstream` that cuts blob GET answers of `digest` mid-body. */
async function cutProxy(upstream: string, digest: string): Promise<CutProxy> {
  const target = new URL(upstream);
  const state: CutProxy = { url: '', cutsLeft: 0, blobGets: [], close: async () => undefined };
  const server: Server = createServer((req, res) => {
    const isBlob = req.method === 'GET' && req.url?.endsWith(`/blobs/${digest}`) === true;
    const entry: CutProxy['blobGets'][number] = { range: req.headers.range };
    if (isBlob) state.blobGets.push(entry);
    const up = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      const length = Number(ur.headers['content-length'] ?? 0);
      if (!isBlob || state.cutsLeft <= 0 || length < 4 * 1024 * 1024) {
        ur.pipe(res);
        return;
      }
      state.cutsLeft--;
      const cutAt = randomInt(1024 * 1024, length - 1024 * 1024);
      let sent = 0;
      ur.on('data', (chunk: Buffer) => {
        if (sent >= cutAt) return;
        const part = sent + chunk.length > cutAt ? chunk.subarray(0, cutAt - sent) : chunk;
        sent += part.length;
        const more = res.write(part);
        if (sent >= cutAt) {
          entry.cutAfter = sent;
          ur.destroy();
          res.write('', () => res.socket?.destroy());
        } else if (!more) {
          ur.pause();
          res.once('drain', () => ur.resume());
        }
      });
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.close = () => new Promise((r) => server.close(() => r()));
  return state;
}

/** GETs a blob through the mirror: the digest of what arrived, its length, and whether the transfer completed. */
function getBlob(url: string): Promise<{ status: number; complete: boolean; bytes: number; digest: string }> {
  return new Promise((resolve) => {
    const hash = createHash('sha256');
    let bytes = 0;
    const req = request(url, (res) => {
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        hash.update(c);
      });
      const done = (complete: boolean): void => resolve({ status: res.statusCode ?? 0, complete, bytes, digest: `sha256:${hash.digest('hex')}` });
      res.on('end', () => done(res.complete));
      res.on('error', () => done(false));
      res.on('aborted', () => undefined);
    });
    req.on('error', () => resolve({ status: 0, complete: false, bytes, digest: '' }));
    req.end();
  });
}

describe('a cut upstream blob is resumed with Range', { timeout: 600_000 }, () => {
  let work: string;
  let upstream: RegistryProcess;
  let proxy: CutProxy;
  let image: Image;
  let layer: { digest: string; size: number };

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-resume-'));
    upstream = await startRegistry(join(work, 'upstream'));
    image = makeImage('resume', [BIG], 'oci');
    const l = image.layers[0];
    assert.ok(l !== undefined);
    layer = { digest: l.digest, size: l.bytes.length };
    await pushImage(upstream.url, 'team/big', '1', image);
    proxy = await cutProxy(upstream.url, layer.digest);
  });

  after(async () => {
    await proxy?.close();
    await upstream?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const freshMirror = async (name: string, extra: string) => {
    const dir = join(work, name);
    mkdirSync(dir);
    return startMirror(dir, mirrorToml(`[[registry]]\nhost = "cut.example"\nendpoint = "${proxy.url}"\n${extra}\n[cache]\ndirect_io = false\n`));
  };

  test('20 cuts at random offsets over 10 cold pulls: every client gets the right bytes; a Range request per cut', async () => {
    for (let trial = 0; trial < 10; trial++) {
      const mirror = await freshMirror(`with-${trial}`, '');
      try {
        proxy.cutsLeft = 2;
        const before = proxy.blobGets.length;
        const got = await getBlob(`${mirror.url}/v2/cut.example/team/big/blobs/${layer.digest}`);
        assert.equal(got.status, 200, `trial ${trial}`);
        assert.ok(got.complete, `trial ${trial}: the transfer completed`);
        assert.equal(got.bytes, layer.size, `trial ${trial}`);
        assert.equal(got.digest, layer.digest, `trial ${trial}: the right bytes`);
        const gets = proxy.blobGets.slice(before);
        assert.equal(gets.length, 3, `trial ${trial}: the first GET and two resumes: ${JSON.stringify(gets)}`);
        assert.equal(gets[0]?.range, undefined);
        // Each resume starts where the mirror's bytes stopped: after the previous start plus what was sent before the cut.
        let start = 0;
        for (let i = 1; i < 3; i++) {
          const m = /^bytes=(\d+)-$/.exec(gets[i]?.range ?? '');
          assert.ok(m !== null, `trial ${trial}: resume ${i} asked for a range: ${gets[i]?.range}`);
          const from = Number(m[1]);
          assert.ok(from > start && from <= start + (gets[i - 1]?.cutAfter ?? 0), `trial ${trial}: resume ${i} from ${from}, after ${start} + ${gets[i - 1]?.cutAfter}`);
          start = from;
        }
        assert.match(mirror.logText(), new RegExp(`upstream blob transfer cut at byte \\d+ of ${layer.size}; resuming with Range \\(2 of 5\\)`));
        // And it was cached whole: a warm read gives the same bytes without the upstream.
        const warm = await getBlob(`${mirror.url}/v2/cut.example/team/big/blobs/${layer.digest}`);
        assert.equal(warm.digest, layer.digest);
        assert.equal(proxy.blobGets.length, before + 3);
      } finally {
        await mirror.stop();
      }
    }
  });

  test('with resume_attempts = 0 a cut transfer fails at the client, never a short success', async () => {
    for (let trial = 0; trial < 3; trial++) {
      const mirror = await freshMirror(`without-${trial}`, 'resume_attempts = 0');
      try {
        proxy.cutsLeft = 1;
        const before = proxy.blobGets.length;
        const got = await getBlob(`${mirror.url}/v2/cut.example/team/big/blobs/${layer.digest}`);
        assert.equal(got.complete, false, `trial ${trial}: ${JSON.stringify(got)}`);
        assert.ok(got.bytes < layer.size);
        assert.deepEqual(proxy.blobGets.slice(before).map((g) => g.range), [undefined], 'no Range request');
      } finally {
        await mirror.stop();
      }
    }
  });
});
