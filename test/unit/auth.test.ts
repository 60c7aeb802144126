import { test } from 'node:test';
import assert from 'node:assert/strict';
import bcrypt from 'bcryptjs';
import { Authenticator, authorize, challenge } from '../../src/server/auth.ts';
import { RegistryError } from '../../src/oci/index.ts';
import type { AuthUser } from '../../src/config/index.ts';

const users = new Map<string, AuthUser>([
  ['ci', { name: 'ci', bcryptHash: bcrypt.hashSync('ci-pw', 4), roles: new Set(['pull', 'push']) }],
  ['reader', { name: 'reader', password: 'r-pw', roles: new Set(['pull']) }],
]);
const auth = new Authenticator({ users, tokenTtlMs: 120_000, anonymousLocalPull: false });
const b64 = (s: string): string => `Basic ${Buffer.from(s).toString('base64')}`;

test('Basic credentials: bcrypt and plain secrets; empty user name is anonymous; wrong ones are undefined', async () => {
  assert.equal((await auth.identify(b64('ci:ci-pw')))?.user?.name, 'ci');
  assert.equal((await auth.identify(b64('ci:ci-pw')))?.user?.name, 'ci', 'cached check');
  assert.equal((await auth.identify(b64('reader:r-pw')))?.user?.name, 'reader');
  assert.equal(await auth.identify(b64('ci:wrong')), undefined);
  assert.equal(await auth.identify(b64('nobody:x')), undefined);
  assert.deepEqual(await auth.identify(b64(':')), { user: undefined }, 'containers/image without credentials');
  assert.deepEqual(await auth.identify(undefined), { user: undefined });
  assert.equal(await auth.identify('Digest abc'), undefined);
});

test('tokens name the user, expire, and cannot be forged', async () => {
  const now = Date.now();
  const t = auth.issueToken(users.get('ci'), now);
  assert.equal(t.expiresIn, 120);
  assert.equal((await auth.identify(`Bearer ${t.token}`, now + 1000))?.user?.name, 'ci');
  assert.equal(await auth.identify(`Bearer ${t.token}`, now + 121_000), undefined, 'expired');
  const [payload, sig] = t.token.split('.');
  const forged = Buffer.from(JSON.stringify({ sub: 'reader', exp: Math.floor(now / 1000) + 100 })).toString('base64url');
  assert.equal(await auth.identify(`Bearer ${forged}.${sig}`, now), undefined);
  assert.equal(await auth.identify(`Bearer ${payload}.AAAA`, now), undefined);
  assert.deepEqual(await auth.identify(`Bearer ${auth.issueToken(undefined, now).token}`, now), { user: undefined }, 'anonymous token');
  const other = new Authenticator({ users, tokenTtlMs: 120_000, anonymousLocalPull: false });
  assert.equal(await other.identify(`Bearer ${t.token}`, now), undefined, 'another process key (a restart) rejects it');
});

test('authorize: anonymous gets 401 with a scoped Bearer challenge, a user without the role 403', () => {
  assert.throws(() => authorize({ user: undefined }, 'push', 'http://m:5000', 'repository:site/app:pull,push'), (e: unknown) => {
    assert.ok(e instanceof RegistryError);
    assert.equal(e.status, 401);
    assert.equal(e.headers['WWW-Authenticate'], 'Bearer realm="http://m:5000/_regmirror/token",service="regmirror",scope="repository:site/app:pull,push"');
    return true;
  });
  assert.throws(() => authorize({ user: users.get('reader') }, 'push', 'http://m:5000', 'repository:site/app:pull,push'), (e: unknown) => e instanceof RegistryError && e.status === 403 && /lacks the "push" role/.test(e.message));
  authorize({ user: users.get('ci') }, 'push', 'http://m:5000', 'repository:site/app:pull,push');
  authorize({ user: undefined }, undefined, 'http://m:5000', 'x');
  assert.deepEqual(challenge('https://m'), { 'WWW-Authenticate': 'Bearer realm="https://m/_regmirror/token",service="regmirror"' });
});
