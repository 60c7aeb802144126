/** The command line as a process (bin/regmirror.js on the build): per-command help and option errors. */
import { test } from 'node:test';
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
