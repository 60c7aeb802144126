/**
 * Endpoints, retries and resume of UpstreamClient (issue 19 items 2 and 3), against small HTTP
 * servers in this process: failover in order on no answer / 5xx / 429, none on a 404; rounds with
 * backoff bounded by `retries` and `retry_budget`, Retry-After honoured; a cut blob body resumed
 * with Range from the byte where it stopped, a bounded number of times. The real-registry proofs are
 * test/integration/upstream-failover.test.ts and upstream-resume.test.ts.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, parseConfigText } from '../../src/config/index.ts';
import { UpstreamClient, UpstreamError, backoffMs, retryAfterMs } from '../../src/upstream/index.ts';
import { createLogger } from '../../src/log/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'regmirror-endpoints-'));
const servers: Server[] = [];
after(async () => {
  for (const s of servers) await new Promise((r) => s.close(r));
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const s = createServer(handler);
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

/** A loopback port nothing listens on. */
async function deadUrl(): Promise<string> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return `http://127.0.0.1:${port}`;
}

function client(registryToml: string): UpstreamClient {
  const cfg = parseConfigText(`default_registry = ""\n[[registry]]\nhost = "r.example"\n${registryToml}\n`, dir);
  const reg = cfg.registries[0];
  assert.ok(reg !== undefined);
  return new UpstreamClient(reg, createLogger('silent'));
}

const MANIFEST = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:00","size":2},"layers":[]}');
const okManifest = (res: ServerResponse): void => {
  res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': MANIFEST.length });
  res.end(MANIFEST);
};

test('endpoint / endpoints in the config: strings, tables with their own credentials and trust, and the errors', () => {
  const one = parseConfigText('default_registry = ""\n[[registry]]\nhost = "r.example"\nendpoint = "https://a.example"\n', dir).registries[0];
  assert.deepEqual(one?.endpoints.map((e) => e.url), ['https://a.example']);
  assert.deepEqual(one?.retry, { retries: 2, retryBudgetMs: 10_000, resumeAttempts: 5 });
  const two = parseConfigText('default_registry = ""\n[upstream]\nretries = 1\nretry_budget = "3s"\n[[registry]]\nhost = "r.example"\nusername = "u"\npassword = "p"\nresume_attempts = 0\nendpoints = ["https://a.example", "https://b.example/"]\n', dir).registries[0];
  assert.deepEqual(two?.endpoints.map((e) => [e.url, e.auth?.configKey]), [['https://a.example', 'password'], ['https://b.example', 'password']]);
  assert.deepEqual(two?.retry, { retries: 1, retryBudgetMs: 3_000, resumeAttempts: 0 });
  assert.equal(two?.endpoint, 'https://a.example');
  const tables = parseConfigText('default_registry = ""\n[[registry]]\nhost = "r.example"\nusername = "u"\npassword = "p"\n[[registry.endpoints]]\nurl = "https://a.example"\ntoken = "t"\ninsecure_skip_verify = true\n[[registry.endpoints]]\nurl = "https://b.example"\n', dir).registries[0];
  assert.deepEqual(tables?.endpoints.map((e) => [e.url, e.auth?.configKey, e.insecureSkipVerify]), [['https://a.example', 'token', true], ['https://b.example', 'password', false]]);

  const refused = (toml: string, key: string, why: RegExp): void => {
    assert.throws(() => parseConfigText(`default_registry = ""\n[[registry]]\nhost = "r.example"\n${toml}\n`, dir), (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.ok(e.problems.some((p) => p.keyPath === key && why.test(p.message)), `${key} ${why}: ${e.message}`);
      return true;
    });
  };
  refused('endpoint = "https://a.example"\nendpoints = ["https://b.example"]', 'registry[0].endpoints', /not both/);
  refused('endpoints = []', 'registry[0].endpoints', /at least one/);
  refused('endpoints = ["https://a.example", "https://a.example/"]', 'registry[0].endpoints[1]', /listed twice/);
  refused('endpoints = ["https://a.example", "https://b.example/v2/"]', 'registry[0].endpoints[1]', /has a path/);
  refused('endpoints = "https://a.example"', 'registry[0].endpoints', /array of URLs/);
  refused('[[registry.endpoints]]\nca_file = "x"', 'registry[0].endpoints[0].url', /is required/);
  refused('[[registry.endpoints]]\nurl = "https://a.example"\nretries = 3', 'registry[0].endpoints[0].retries', /unknown key/);
  refused('retries = 11', 'registry[0].retries', /whole number from 0 to 10/);
  refused('resume_attempts = -1', 'registry[0].resume_attempts', /whole number from 0 to 100/);
  refused('retry_budget = "soon"', 'registry[0].retry_budget', /not a duration/);
  // Bad neighbours are each named for what is wrong with them, none as an unknown key.
  assert.throws(() => parseConfigText('default_registry = ""\n[upstream]\nretries = 20\nresume_attempts = "5"\nconnect_timeout = "x"\nheader_timeout = "y"\n', dir), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.deepEqual(e.problems.map((p) => p.keyPath), ['upstream.connect_timeout', 'upstream.header_timeout', 'upstream.retries', 'upstream.resume_attempts']);
    assert.ok(e.problems.every((p) => !/unknown key/.test(p.message)), e.message);
    return true;
  });
});

test('Retry-After in seconds or as a date; backoff doubles with jitter and is capped', () => {
  assert.equal(retryAfterMs('3'), 3_000);
  assert.equal(retryAfterMs(new Date(10_000 + 2_000).toUTCString(), 10_000), 2_000);
  assert.equal(retryAfterMs('soon'), undefined);
  assert.equal(retryAfterMs(undefined), undefined);
  assert.deepEqual([1, 2, 3].map((r) => backoffMs(r, () => 0)), [125, 250, 500]);
  assert.deepEqual([1, 2, 10].map((r) => backoffMs(r, () => 1)), [250, 500, 4_000]);
});

test('the next endpoint answers when the first has no answer, a 5xx or a 429; a 404 does not fail over', async () => {
  const seen: string[] = [];
  const good = await serve((req, res) => {
    seen.push(`good ${req.method} ${req.url}`);
    okManifest(res);
  });
  const failing = await serve((req, res) => {
    seen.push(`failing ${req.url}`);
    const code = req.url?.includes('/five/') === true ? 503 : req.url?.includes('/many/') === true ? 429 : 404;
    res.writeHead(code, code === 429 ? { 'retry-after': '0' } : {});
    res.end();
  });
  const dead = await deadUrl();
  const c = client(`endpoints = ["${dead}", "${failing}", "${good}"]\nretries = 0`);
  try {
    for (const repo of ['five', 'many']) {
      const m = await c.getManifest(`${repo}/app`, '1');
      assert.equal(m.endpoint, good);
      assert.deepEqual(m.body, MANIFEST);
    }
    await assert.rejects(c.getManifest('absent/app', '1'), (e: unknown) => e instanceof UpstreamError && e.kind === 'not_found');
    assert.deepEqual(seen, ['failing /v2/five/app/manifests/1', 'good GET /v2/five/app/manifests/1', 'failing /v2/many/app/manifests/1', 'good GET /v2/many/app/manifests/1', 'failing /v2/absent/app/manifests/1']);
  } finally {
    await c.close();
  }
});

test('rounds over the endpoints with backoff until one answers, bounded by retries; Retry-After waited for', async () => {
  /** Answers to come, in order; then 200 with the manifest. */
  let script: Array<[number, Record<string, string>]> = [];
  let calls = 0;
  const flaky = await serve((req, res) => {
    calls++;
    const next = script.shift();
    if (next === undefined) return okManifest(res);
    res.writeHead(next[0], next[1]);
    res.end();
  });
  script = [[502, {}], [429, { 'retry-after': '1' }]];
  const c = client(`endpoint = "${flaky}"\nretries = 2`);
  try {
    const t = performance.now();
    const m = await c.getManifest('app', '1');
    assert.deepEqual(m.body, MANIFEST);
    assert.equal(calls, 3);
    assert.ok(performance.now() - t >= 950, 'the third attempt waited for Retry-After: 1');
  } finally {
    await c.close();
  }
  calls = 0;
  script = [[502, {}], [503, {}], [504, {}]];
  const bounded = client(`endpoint = "${flaky}"\nretries = 1`);
  try {
    await assert.rejects(bounded.getManifest('app', '1'), (e: unknown) => e instanceof UpstreamError && e.status === 503);
    assert.equal(calls, 2, 'one try and one retry');
  } finally {
    await bounded.close();
  }
  // A 429 asking for a minute, past retry_budget: no wait, the 429 passes on with its Retry-After.
  script = [[429, { 'retry-after': '60' }]];
  const budget = client(`endpoint = "${flaky}"\nretries = 2\nretry_budget = "2s"`);
  try {
    const t = performance.now();
    await assert.rejects(budget.getManifest('app', '1'), (e: unknown) => e instanceof UpstreamError && e.kind === 'toomanyrequests' && e.retryAfter === '60');
    assert.ok(performance.now() - t < 900);
  } finally {
    await budget.close();
  }
});

/** A blob server that cuts its answers after `cutAt` bytes of each of the first `cuts` answers; honours Range. */
async function cuttingBlobServer(blob: Buffer, plan: { cuts: number; cutAt: number; ignoreRange?: boolean }): Promise<{ url: string; ranges: Array<string | undefined> }> {
  const ranges: Array<string | undefined> = [];
  let cuts = plan.cuts;
  const url = await serve((req, res) => {
    ranges.push(req.headers.range);
    const m = plan.ignoreRange === true ? null : /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = m === null ? 0 : Number(m[1]);
    const body = blob.subarray(start);
    res.writeHead(m === null ? 200 : 206, { 'content-length': body.length, ...(m === null ? {} : { 'content-range': `bytes ${start}-${blob.length - 1}/${blob.length}` }) });
    if (cuts > 0) {
      cuts--;
      res.write(body.subarray(0, plan.cutAt), () => res.socket?.destroy());
    } else res.end(body);
  });
  return { url, ranges };
}

async function readAll(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of body) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

test('a cut blob body is resumed with Range from the byte where it stopped, also against a 200; bounded', async () => {
  const blob = Buffer.alloc(3 * 1024 * 1024 + 17);
  for (let i = 0; i < blob.length; i++) blob[i] = (i * 31 + (i >> 9)) & 0xff;
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;

  const twice = await cuttingBlobServer(blob, { cuts: 2, cutAt: 1024 * 1024 });
  const c = client(`endpoint = "${twice.url}"`);
  try {
    const res = await c.getBlob('app', digest);
    assert.equal(res.size, blob.length);
    assert.ok((await readAll(res.body)).equals(blob), 'the whole blob, right bytes');
    assert.equal(twice.ranges[0], undefined);
    assert.match(twice.ranges[1] ?? '', /^bytes=\d+-$/);
    const [, second, third] = twice.ranges.map((r) => Number(/\d+/.exec(r ?? '0')?.[0]));
    assert.ok((second ?? 0) > 0 && (second ?? 0) <= 1024 * 1024 && (third ?? 0) > (second ?? 0), String(twice.ranges));
  } finally {
    await c.close();
  }

  const whole = await cuttingBlobServer(blob, { cuts: 1, cutAt: 700_000, ignoreRange: true });
  const w = client(`endpoint = "${whole.url}"`);
  try {
    const res = await w.getBlob('app', digest);
    assert.ok((await readAll(res.body)).equals(blob), 'a 200 to a Range request: the bytes already sent are skipped');
  } finally {
    await w.close();
  }

  const always = await cuttingBlobServer(blob, { cuts: 100, cutAt: 100_000 });
  const b = client(`endpoint = "${always.url}"\nresume_attempts = 3`);
  try {
    const res = await b.getBlob('app', digest);
    await assert.rejects(readAll(res.body), /was cut at byte \d+ of 3145745 .* and 3 resumes did not complete it/);
    assert.equal(always.ranges.length, 4);
  } finally {
    await b.close();
  }

  const off = await cuttingBlobServer(blob, { cuts: 1, cutAt: 100_000 });
  const o = client(`endpoint = "${off.url}"\nresume_attempts = 0`);
  try {
    const res = await o.getBlob('app', digest);
    await assert.rejects(readAll(res.body));
    assert.equal(off.ranges.length, 1, 'resume disabled: no Range request');
  } finally {
    await o.close();
  }
});

test('destroying a resumable body stops it without a resume', async () => {
  const blob = Buffer.alloc(4 * 1024 * 1024, 7);
  const srv = await cuttingBlobServer(blob, { cuts: 0, cutAt: 0 });
  const c = client(`endpoint = "${srv.url}"`);
  try {
    const res = await c.getBlob('app', 'sha256:aa');
    const it = res.body[Symbol.asyncIterator]();
    await it.next();
    res.body.destroy();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(srv.ranges.length, 1);
  } finally {
    await c.close();
  }
});
