/** The command line as a process (bin/regmirror.js on the build): per-command help and option errors. */
import { test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import TOML from '@iarna/toml';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BIN } from '../helpers/mirror-process.ts';

const run = promisify(execFile);

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { timeout: 30_000, env: { ...process.env, REGMIRROR_CONFIG: '' } });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: err.code ?? -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

test("regmirror seed --help prints seed's own options and an example, nothing of the other commands", async () => {
  const r = await cli('seed', '--help');
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^Usage: regmirror seed LIST \[options\]/);
  assert.match(r.stdout, /--platform P/);
  assert.match(r.stdout, /--concurrency N/);
  assert.match(r.stdout, /Example:\n {2}regmirror seed images\.txt/);
  assert.doesNotMatch(r.stdout, /--mirror-url|--output|--local/);
});

test('regmirror help export works; --version prints the version', async () => {
  const r = await cli('help', 'export');
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^Usage: regmirror export LIST \[options\]/);
  assert.match(r.stdout, /-o, --output FILE/);
  const v = await cli('--version');
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^regmirror \d+\.\d+\.\d+\n$/);
});

test('regmirror serve --json exits 2 naming the option; a config option for another runtime too', async () => {
  const r = await cli('serve', '--json');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--json is not an option of serve/);
  assert.match(r.stderr, /regmirror help serve/);
  const dir = mkdtempSync(join(tmpdir(), 'regmirror-cli-'));
  const toml = join(dir, 'mirror.toml');
  writeFileSync(toml, `[server]\ndata_dir = "${dir}/data"\n`);
  const c = await cli('config', 'registries-conf', '--mirror-url', 'https://mirror.example:5000', '--no-fallback', '--config', toml);
  assert.equal(c.code, 2);
  assert.match(c.stderr, /--no-fallback does not apply to registries-conf: it is for containerd, openshift/);
  assert.equal(c.stdout, '', 'nothing printed that could be redirected into a file');
});

test('config <runtime> writes exactly the file to stdout (notes to stderr); docker is refused when Docker Hub is not the default registry', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'regmirror-cli-'));
  const toml = join(dir, 'mirror.toml');
  writeFileSync(toml, `default_registry = "docker.io"\n[server]\ndata_dir = "${dir}/data"\n[[registry]]\nhost = "docker.io"\n[[registry]]\nhost = "gcr.io"\n`);
  const d = await cli('config', 'docker', '--mirror-url', 'http://mirror.example:5000', '--config', toml);
  assert.equal(d.code, 0, d.stderr);
  assert.deepEqual(JSON.parse(d.stdout), { 'registry-mirrors': ['http://mirror.example:5000'], 'insecure-registries': ['mirror.example:5000'] });
  assert.match(d.stderr, /daemon\.json: install to \/etc\/docker\/daemon\.json/);
  assert.match(d.stderr, /note: Docker uses registry-mirrors for Docker Hub images only/);
  const o = await cli('config', 'openshift', '--mirror-url', 'https://mirror.example:5000', '--config', toml);
  assert.equal(o.code, 0, o.stderr);
  const docs = parseAllDocuments(o.stdout);
  assert.deepEqual(docs.map((x) => x.errors.length), [0, 0, 0]);
  assert.deepEqual(docs.map((x) => (x.toJS() as { kind: string }).kind), ['ImageDigestMirrorSet', 'ImageTagMirrorSet', 'ImageContentSourcePolicy']);
  const rc = await cli('config', 'registries-conf', '--mirror-url', 'https://mirror.example:5000', '--config', toml);
  assert.equal(rc.code, 0, rc.stderr);
  const conf = TOML.parse(rc.stdout) as { registry: Array<{ prefix: string }> };
  assert.deepEqual(conf.registry.map((r) => r.prefix), ['docker.io', 'gcr.io']);
  const gcrDefault = join(dir, 'gcr.toml');
  writeFileSync(gcrDefault, `default_registry = "gcr.io"\n[server]\ndata_dir = "${dir}/data"\n[[registry]]\nhost = "gcr.io"\n`);
  const refused = await cli('config', 'docker', '--mirror-url', 'http://mirror.example:5000', '--config', gcrDefault);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /routes such paths to "gcr\.io" \(default_registry\)/);
  assert.equal(refused.stdout, '');
});
