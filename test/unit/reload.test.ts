import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfigText } from '../../src/config/index.ts';
import { reloadPlan } from '../../src/cli/reload.ts';

const dir = mkdtempSync(join(tmpdir(), 'regmirror-reload-'));
const parse = (toml: string) => parseConfigText(toml, dir, {});
const BASE = '[[registry]]\nhost = "docker.io"\nendpoint = "http://127.0.0.1:1"\n';
const USER = '[auth]\n[[auth.user]]\nname = "ops"\npassword = "one"\nroles = ["admin"]\n';

test('a reload applies what can change live and names what needs a restart, keeping its running value', () => {
  const old = parse(`[server]\nlisten = "127.0.0.1:5000"\n[log]\nlevel = "info"\n${BASE}${USER}`);
  const next = parse(`[server]\nlisten = "127.0.0.1:6000"\n[log]\nlevel = "debug"\nformat = "text"\n[cache]\ndirect_io = false\nmax_size = "1GiB"\n${BASE}[[namespace]]\nname = "site"\n${USER.replace('"one"', '"two"')}`);
  const plan = reloadPlan(old, next);
  assert.deepEqual(plan.restartNeeded, ['server.listen', 'cache.direct_io', 'log.format']);
  assert.deepEqual(plan.effective.server.listen, old.server.listen);
  assert.equal(plan.effective.cache.directIo, true);
  assert.equal(plan.effective.log.format, 'json');
  assert.equal(plan.effective.log.level, 'debug');
  assert.equal(plan.effective.cache.maxSizeBytes, 1024 ** 3);
  assert.deepEqual(plan.changed, ['[[namespace]]', '[auth] users', 'log.level', 'cache budget (max_size, evict_at, evict_to, min_free, evict_grace, evict_local)']);
  assert.equal(plan.effective.auth?.users.get('ops')?.password, 'two');
});

test('adding or removing [auth] waits for a restart (the token endpoint and push routes are built at start)', () => {
  const withUsers = parse(`${BASE}${USER}`);
  const without = parse(BASE);
  const off = reloadPlan(withUsers, without);
  assert.deepEqual(off.restartNeeded, ['[auth] (removed: its users stay)']);
  assert.equal(off.effective.auth, withUsers.auth);
  const on = reloadPlan(without, withUsers);
  assert.deepEqual(on.restartNeeded, ['[auth] (added: the mirror stays without users)']);
  assert.equal(on.effective.auth, undefined);
  assert.deepEqual(reloadPlan(without, parse(BASE)), { effective: reloadPlan(without, parse(BASE)).effective, changed: [], restartNeeded: [] });
});
