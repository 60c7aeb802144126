import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { authsKeyHost, helperServerUrl, readDockerConfig } from '../../src/config/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'regmirror-dc-'));
let n = 0;
const file = (doc: unknown): string => {
  const p = join(dir, `config-${n++}.json`);
  writeFileSync(p, JSON.stringify(doc));
  return p;
};
const b64 = (s: string) => Buffer.from(s).toString('base64');

test('auths keys match on host as Docker does: scheme and path ignored, Docker Hub aliases folded', () => {
  assert.equal(authsKeyHost('https://index.docker.io/v1/'), 'docker.io');
  assert.equal(authsKeyHost('registry-1.docker.io'), 'docker.io');
  assert.equal(authsKeyHost('https://gcr.io'), 'gcr.io');
  assert.equal(authsKeyHost('http://registry.local:5000/v2/'), 'registry.local:5000');
  assert.equal(authsKeyHost('GCR.IO/project'), 'gcr.io');
  assert.equal(helperServerUrl('docker.io'), 'https://index.docker.io/v1/');
  assert.equal(helperServerUrl('gcr.io'), 'gcr.io');
});

test('auths entry: auth, username/password, identitytoken', () => {
  assert.deepEqual(readDockerConfig(file({ auths: { 'https://index.docker.io/v1/': { auth: b64('u:p:with:colons') } } }), 'docker.io', 'docker_config'), {
    source: 'static', configKey: 'docker_config', credential: { kind: 'basic', username: 'u', password: 'p:with:colons' },
  });
  assert.deepEqual(readDockerConfig(file({ auths: { 'gcr.io': { username: 'a', password: 'b' } } }), 'gcr.io', 'k').source, 'static');
  const idt = readDockerConfig(file({ auths: { 'quay.io': { auth: b64('x:'), identitytoken: 'rt' } } }), 'quay.io', 'k');
  assert.deepEqual(idt, { source: 'static', configKey: 'k', credential: { kind: 'refresh', username: 'x', refreshToken: 'rt' } });
});

test('credHelpers beat credsStore, which beats auths', () => {
  const doc = { auths: { 'gcr.io': { auth: b64('a:b') } }, credsStore: 'store', credHelpers: { 'https://gcr.io': 'gcloud' } };
  assert.deepEqual(readDockerConfig(file(doc), 'gcr.io', 'k'), { source: 'helper', helper: 'gcloud', serverUrl: 'gcr.io', configKey: 'k' });
  assert.deepEqual(readDockerConfig(file(doc), 'docker.io', 'k'), { source: 'helper', helper: 'store', serverUrl: 'https://index.docker.io/v1/', configKey: 'k' });
});

test('missing host, bad JSON and bad auth give reasons that carry no secret', () => {
  assert.throws(() => readDockerConfig(file({ auths: { 'quay.io': { auth: b64('a:b') } } }), 'gcr.io', 'k'), /no credentials for "gcr.io"/);
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, '{not json');
  assert.throws(() => readDockerConfig(bad, 'gcr.io', 'k'), /not a readable Docker config.json/);
  assert.throws(() => readDockerConfig(file({ auths: { 'gcr.io': { auth: b64('nocolon-secret') } } }), 'gcr.io', 'k'), (e: Error) => /not base64 of user:password/.test(e.message) && !e.message.includes('nocolon-secret'));
});
