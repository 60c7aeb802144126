/**
 * Issue 14's cache-integrity suites, with the mirror and `regmirror seed` as their own processes
 * over one data directory: a server starting beside a running seed keeps the seed's files (and a
 * seed whose blobs could not be stored exits 1 naming them), kill -9 during concurrent pulls leaves
 * every blob file hashing to its name with its row, and a full disk relays blobs verified instead
 * of cutting them.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { BIN, startMirror, mirrorToml, type MirrorProcess } from '../helpers/mirror-process.ts';
import { startFaultServer, type FaultServer } from '../helpers/fault-server.ts';
import { makeImage, randomBytesFor, sha256 } from '../helpers/fixtures.ts';
import { waitFor } from '../helpers/net.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/** Every blob file under `dataDir` with whether it hashes to its name and has a row. */
function auditCache(dataDir: string): { files: number; badHash: string[]; noRow: string[] } {
  const db = new Database(join(dataDir, 'meta.db'), { readonly: true });
  const out = { files: 0, badHash: [] as string[], noRow: [] as string[] };
  try {
    const root = join(dataDir, 'blobs', 'sha256');
    for (const prefix of existsSync(root) ? readdirSync(root) : []) {
      for (const name of readdirSync(join(root, prefix))) {
        const digest = `sha256:${name}`;
        out.files++;
        if (sha256(readFileSync(join(root, prefix, name))) !== digest) out.badHash.push(digest);
        const row = db.prepare('SELECT 1 FROM blobs WHERE digest = ? UNION SELECT 1 FROM manifests WHERE digest = ?').get(digest, digest);
        if (row === undefined) out.noRow.push(digest);
      }
    }
  } finally {
    db.close();
  }
  return out;
}

function blobRows(dataDir: string): number {
  const db = new Database(join(dataDir, 'meta.db'), { readonly: true });
  try {
    return (db.prepare('SELECT COUNT(*) AS n FROM blobs').get() as { n: number }).n;
  } finally {
    db.close();
  }
}

describe('cache integrity (issue 14)', { timeout: 900_000 }, () => {
  let work: string;
  let fault: FaultServer;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'regmirror-integrity-'));
    fault = await startFaultServer();
  });
  after(async () => {
    await fault?.close();
  });

  /** Puts an image on the fault server as `repo:tag`; its layers are served slowly. */
  const addImage = (seed: string, repo: string, slow: boolean): void => {
    const im = makeImage(seed, [1 * MiB], 'oci');
    for (const b of [im.config, ...im.layers]) {
      fault.blobs.set(b.digest, b.bytes);
      if (slow && b !== im.config) fault.plans.set(b.digest, { framing: 'length', fault: 'slow', pauseMs: 100 });
    }
    const m = { body: im.manifest.bytes, mediaType: im.manifest.mediaType, digest: im.manifest.digest };
    fault.manifests.set(`${repo}:v1`, m);
    fault.manifests.set(`${repo}:${im.manifest.digest}`, m);
  };

  const seedConfig = (dir: string): string => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'mirror.toml'), mirrorToml(`[[registry]]\nhost = "slow.test"\nendpoint = "${fault.url}"\n`));
    return join(dir, 'mirror.toml');
  };

  /** Starts `regmirror seed` on `list`; resolves with its exit code and output. */
  const startSeed = (config: string, list: string): { pid: number; done: Promise<{ code: number | null; out: string }> } => {
    const child = spawn(process.execPath, [BIN, 'seed', list, '--config', config], { env: { ...process.env, CI: 'true' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    return { pid: child.pid ?? 0, done: new Promise((r) => child.once('close', (code) => r({ code, out }))) };
  };

  test('a server starting beside a running seed keeps its temporary files; the seed stores everything', async () => {
    const dir = join(work, 'seed-beside');
    const config = seedConfig(dir);
    for (const r of ['team/a', 'team/b', 'team/c']) addImage(`beside-${r}`, r, true);
    const list = join(dir, 'images.txt');
    writeFileSync(list, 'slow.test/team/a:v1\nslow.test/team/b:v1\nslow.test/team/c:v1\n');
    const seed = startSeed(config, list);
    await new Promise((r) => setTimeout(r, 1500));
    const server = await startMirror(dir, readFileSync(config, 'utf8'));
    const { code, out } = await seed.done;
    await server.stop();
    assert.equal(code, 0, out);
    assert.match(out, /3 of 3 seeded/);
    assert.doesNotMatch(out, /ENOENT/);
    assert.doesNotMatch(server.logText(), /removed leftover temporary files/);
    assert.equal(blobRows(join(dir, 'data')), 6, 'a row for each of the 6 blobs');
    const audit = auditCache(join(dir, 'data'));
    assert.deepEqual([audit.badHash, audit.noRow], [[], []]);
  });

  test('a seed whose blobs could not be put in place exits 1 naming the image', async () => {
    const dir = join(work, 'seed-broken');
    const config = seedConfig(dir);
    addImage('broken-d', 'team/d', true);
    const list = join(dir, 'images.txt');
    writeFileSync(list, 'slow.test/team/d:v1\n');
    const seed = startSeed(config, list);
    // Remove the seed's temp files under it while its layer downloads (what a careless cleanup did).
    const tmp = join(dir, 'data', 'tmp');
    await waitFor('the seed to write a temp file', () => {
      try {
        return readdirSync(tmp).some((d) => d.startsWith(`p${seed.pid}-`) && readdirSync(join(tmp, d)).some((f) => f.endsWith('.partial')));
      } catch {
        return false;
      }
    }, 20_000, 20);
    await new Promise((r) => setTimeout(r, 300)); // the manifest is in place by now; the layer is still coming
    for (const d of readdirSync(tmp)) for (const f of readdirSync(join(tmp, d))) if (f.endsWith('.partial')) rmSync(join(tmp, d, f));
    const { code, out } = await seed.done;
    assert.equal(code, 1, out);
    assert.match(out, /FAILED\s+slow\.test\/team\/d:v1: .*could not write blob sha256:[0-9a-f]{64} to its cache/);
  });

  test('kill -9 during 50 concurrent pulls, 5 rounds: every blob file hashes to its name and has its row', async () => {
    const dir = join(work, 'kill');
    mkdirSync(dir);
    const digests: string[] = [];
    for (let i = 0; i < 60; i++) {
      const bytes = randomBytesFor(`kill-${i}`, 512 * 1024 + ((i * 7919) % (3 * MiB)));
      const d = sha256(bytes);
      fault.blobs.set(d, bytes);
      digests.push(d);
    }
    const toml = mirrorToml(`[log]\nlevel = "info"\n[[registry]]\nhost = "slow.test"\nendpoint = "${fault.url}"\n`);
    // A verified file that lost its row (the state a kill between rename and row leaves), placed by hand
    // so that the repair is proven whatever the kills below hit.
    const orphan = randomBytesFor('orphan', 4096);
    const orphanDigest = sha256(orphan);
    mkdirSync(join(dir, 'data', 'blobs', 'sha256', orphanDigest.slice(7, 9)), { recursive: true });
    writeFileSync(join(dir, 'data', 'blobs', 'sha256', orphanDigest.slice(7, 9), orphanDigest.slice(7)), orphan);
    const totals = { files: 0, rounds: 0 };
    for (let round = 0; round < 5; round++) {
      const mirror: MirrorProcess = await startMirror(dir, toml);
      const pulls = Array.from({ length: 50 }, (_, i) => {
        const d = digests[(round * 11 + i) % digests.length] as string;
        return fetch(`${mirror.url}/v2/slow.test/team/k${i % 5}/blobs/${d}`).then((r) => r.arrayBuffer()).catch(() => undefined);
      });
      await new Promise((r) => setTimeout(r, 250 + round * 100));
      process.kill(mirror.pid, 'SIGKILL');
      await Promise.all(pulls);
      await mirror.stop();
      // The next start reconciles; then the files and rows must agree.
      const next = await startMirror(dir, toml);
      await waitFor('start-up reconciliation', () => /start-up reconciliation/.test(next.logText()), 30_000);
      assert.match(next.logText(), /"scannedAfter":"1 process\(es\) that died with the cache open"/, `round ${round}: the files are scanned after a kill`);
      const audit = auditCache(join(dir, 'data'));
      assert.deepEqual(audit.badHash, [], `round ${round}: files whose bytes do not hash to their name`);
      assert.deepEqual(audit.noRow, [], `round ${round}: files without a row`);
      const leftovers = readdirSync(join(dir, 'data', 'tmp')).filter((n) => !n.startsWith(`p${next.pid}-`));
      assert.deepEqual(leftovers, [], `round ${round}: temp folders of the killed process are removed`);
      await next.stop();
      totals.files = audit.files;
      process.stdout.write(`# kill -9 round ${round}: ${audit.files} blob files, all hashing to their names, each with its row\n`);
      totals.rounds++;
    }
    assert.equal(totals.rounds, 5);
    // After clean stops only, start-up does not scan the files again.
    const clean = await startMirror(dir, toml);
    await waitFor('start-up reconciliation', () => /start-up reconciliation/.test(clean.logText()), 30_000);
    await clean.stop();
    assert.doesNotMatch(clean.logText(), /scannedAfter/, 'no scan after clean stops');
    assert.ok(totals.files > 0, 'some blobs were cached across the rounds');
    process.stdout.write(`# kill -9: 5 rounds, ${totals.files} blob files at the end, all verified with rows\n`);
  });
});

describe('a full cache disk (issue 14, defect 6)', { timeout: 300_000 }, () => {
  let work: string;
  let mnt: string;
  let fault: FaultServer;
  let mirror: MirrorProcess | undefined;

  before(async () => {
    assert.equal(process.getuid?.(), 0, 'this suite mounts a small tmpfs for the cache and needs root (npm test runs as root in CI)');
    work = mkdtempSync(join(tmpdir(), 'regmirror-full-'));
    mnt = join(work, 'data');
    mkdirSync(mnt);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', mnt]);
    fault = await startFaultServer();
  });
  after(async () => {
    await mirror?.stop();
    await fault?.close();
    if (mnt !== undefined) await run('umount', [mnt]).catch(() => undefined);
  });

  test('a blob larger than the free space reaches the client whole and verified, not cut; the cause is logged once', async () => {
    mirror = await startMirror(work, mirrorToml('[log]\nlevel = "info"\n[[registry]]\nhost = "full.test"\nendpoint = "' + fault.url + '"\n'));
    // Leave about 20 MiB free on the 64 MiB disk.
    writeFileSync(join(mnt, 'filler'), Buffer.alloc(40 * MiB));
    const bytes = randomBytesFor('too-big', 40 * MiB + 3);
    const digest = sha256(bytes);
    fault.blobs.set(digest, bytes);
    for (let attempt = 0; attempt < 2; attempt++) {
      const res = await fetch(`${mirror.url}/v2/full.test/team/big/blobs/${digest}`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-length'), String(bytes.length));
      assert.equal(sha256(Buffer.from(await res.arrayBuffer())), digest, `attempt ${attempt}: the right bytes`);
    }
    assert.equal(fault.blobGets.get(digest), 2, 'one upstream download per attempt, each complete');
    const log = mirror.logText();
    assert.equal((log.match(/the cache disk is full/g) ?? []).length, 1, 'the cause is logged once');
    assert.match(log, /"freeBytes":\d+.*the cache disk is full/);
    const tmp = readdirSync(join(mnt, 'tmp'));
    for (const d of tmp) assert.deepEqual(readdirSync(join(mnt, 'tmp', d)), [], 'no partial file left');
  });
});
