import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseChallenges } from '../../src/upstream/index.ts';
import { TokenCache } from '../../src/upstream/index.ts';

test('Docker Hub bearer challenge', () => {
  assert.deepEqual(parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"'), [
    { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/nginx:pull' } },
  ]);
});

test('quoted commas inside scope and escaped quotes', () => {
  const [c] = parseChallenges('Bearer realm="https://r/token", scope="repository:a/b:pull,push repository:c:pull", error="insufficient_scope", note="say \\"hi\\""');
  assert.equal(c?.params.scope, 'repository:a/b:pull,push repository:c:pull');
  assert.equal(c?.params.error, 'insufficient_scope');
  assert.equal(c?.params.note, 'say "hi"');
});

test('Basic challenge, unquoted values, several challenges, odd spacing and case', () => {
  assert.deepEqual(parseChallenges('Basic realm="Registry Realm"'), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
  const cs = parseChallenges('Basic realm=x ,  BEARER Realm = "https://t" , Service=svc');
  assert.deepEqual(cs, [
    { scheme: 'basic', params: { realm: 'x' } },
    { scheme: 'bearer', params: { realm: 'https://t', service: 'svc' } },
  ]);
});

test('empty and garbage headers give no or partial challenges without throwing', () => {
  assert.deepEqual(parseChallenges(''), []);
  assert.deepEqual(parseChallenges('Bearer realm="unterminated'), [{ scheme: 'bearer', params: { realm: 'unterminated' } }]);
  assert.doesNotThrow(() => parseChallenges('=== ,,, "'));
});

test('token cache: honours expires_in with a 60 s floor, refreshes before expiry, coalesces fetches', async () => {
  let now = 1_000_000;
  const cache = new TokenCache(() => now);
  const key = TokenCache.key('https://r', 's', 'repository:a:pull');
  cache.set(key, 't1', 5);
  now += 45_000;
  assert.equal(cache.get(key), 't1', 'short expires_in is raised to 60 s');
  now += 10_000;
  assert.equal(cache.get(key), undefined, 'refreshed 10 s before expiry');
  let calls = 0;
  const fetcher = async () => {
    calls++;
    await new Promise((r) => setTimeout(r, 5));
    return { token: 't2', expiresIn: 300 };
  };
  const got = await Promise.all([cache.getOrFetch(key, fetcher), cache.getOrFetch(key, fetcher), cache.getOrFetch(key, fetcher)]);
  assert.deepEqual(got, ['t2', 't2', 't2']);
  assert.equal(calls, 1);
});
