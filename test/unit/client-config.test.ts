import { test } from 'node:test';
import assert from 'node:assert/strict';
import TOML from '@iarna/toml';
import { parseAllDocuments } from 'yaml';
import { parseConfigText } from '../../src/config/index.ts';
import { RUNTIMES, clientConfig, type ClientConfigOptions } from '../../src/cli/client-config.ts';

const config = parseConfigText(
  'default_registry = "docker.io"\n[[registry]]\nhost = "docker.io"\n[[registry]]\nhost = "gcr.io"\n[[namespace]]\nname = "gdc"\nregistry = "gcr.io"\n[[namespace]]\nname = "site"\n',
  '/tmp',
  {},
);
const base: ClientConfigOptions = { mirrorUrl: 'https://mirror.example:5000', noFallback: false, digestOnly: false, defaultHost: false };

/** Every generated file parses as what it claims to be. */
function parseAll(files: Array<{ path: string; content: string }>): unknown[] {
  return files.map((f) => {
    if (f.path.endsWith('.toml') || f.path.endsWith('.conf')) return TOML.parse(f.content);
    if (f.path.endsWith('.json')) return JSON.parse(f.content) as unknown;
    const docs = parseAllDocuments(f.content);
    for (const d of Array.isArray(docs) ? docs : [docs]) assert.deepEqual(d.errors, [], f.path);
    return (Array.isArray(docs) ? docs : [docs]).map((d) => d.toJS() as unknown);
  });
}

test('every runtime, with every option, generates files that parse', () => {
  const variants: Array<Partial<ClientConfigOptions>> = [{}, { ca: '/etc/regmirror/ca.crt', noFallback: true, defaultHost: true, digestOnly: true, credentials: '/etc/regmirror/pull.json' }, { namespace: 'gdc' }, { mirrorUrl: 'http://10.0.0.5:5000' }];
  for (const runtime of RUNTIMES) {
    for (const v of variants) {
      const out = clientConfig(config, runtime, { ...base, ...v });
      assert.ok(out.files.length > 0, runtime);
      parseAll(out.files);
    }
  }
});

test('containerd: server kept for fallback, or the mirror itself with --no-fallback; namespace endpoint with override_path', () => {
  const plain = clientConfig(config, 'containerd', { ...base, ca: '/ca.crt', defaultHost: true });
  const gcr = TOML.parse(plain.files.find((f) => f.path === 'certs.d/gcr.io/hosts.toml')?.content ?? '') as { server: string; host: Record<string, { capabilities: string[]; ca: string }> };
  assert.equal(gcr.server, 'https://gcr.io');
  assert.deepEqual(gcr.host['https://mirror.example:5000'], { capabilities: ['pull', 'resolve'], ca: '/ca.crt' });
  const hub = TOML.parse(plain.files.find((f) => f.path === 'certs.d/docker.io/hosts.toml')?.content ?? '') as { server: string };
  assert.equal(hub.server, 'https://registry-1.docker.io');
  assert.ok(plain.files.some((f) => f.path === 'certs.d/_default/hosts.toml'));
  const closed = clientConfig(config, 'containerd', { ...base, noFallback: true });
  assert.equal((TOML.parse(closed.files[0]?.content ?? '') as { server: string }).server, 'https://mirror.example:5000');
  const ns = clientConfig(config, 'containerd', { ...base, namespace: 'gdc' });
  const nsDoc = TOML.parse(ns.files[0]?.content ?? '') as { host: Record<string, { override_path: boolean }> };
  assert.equal(ns.files[0]?.path, 'certs.d/gcr.io/hosts.toml');
  assert.equal(nsDoc.host['https://mirror.example:5000/v2/gdc']?.override_path, true);
});

test('docker, registries-conf, gdc and openshift content', () => {
  const d = JSON.parse(clientConfig(config, 'docker', { ...base, mirrorUrl: 'http://m:5000' }).files[0]?.content ?? '') as Record<string, unknown>;
  assert.deepEqual(d, { 'registry-mirrors': ['http://m:5000'], 'insecure-registries': ['m:5000'] });
  assert.match(clientConfig(config, 'docker', base).notes.join(' '), /Docker Hub images only/);
  const rc = TOML.parse(clientConfig(config, 'registries-conf', { ...base, digestOnly: true }).files[0]?.content ?? '') as { registry: Array<{ prefix: string; 'mirror-by-digest-only': boolean; mirror: Array<{ location: string; insecure?: boolean }> }> };
  assert.deepEqual(rc.registry.map((r) => [r.prefix, r['mirror-by-digest-only'], r.mirror[0]?.location, r.mirror[0]?.insecure]), [['docker.io', true, 'mirror.example:5000/docker.io', undefined], ['gcr.io', true, 'mirror.example:5000/gcr.io', undefined]]);
  const [g] = parseAll(clientConfig(config, 'gdc', { ...base, ca: '/ca.crt', credentials: '/pull.json', namespace: 'gdc' }).files) as Array<Array<{ registryMirrors: unknown }>>;
  assert.deepEqual(g?.[0]?.registryMirrors, [{ endpoint: 'https://mirror.example:5000/v2/gdc', caCertPath: '/ca.crt', pullCredentialConfigPath: '/pull.json', hosts: ['gcr.io'] }]);
  const os = parseAll(clientConfig(config, 'openshift', { ...base, noFallback: true }).files) as Array<Array<{ kind: string; spec: Record<string, Array<{ source: string; mirrors: string[]; mirrorSourcePolicy?: string }>> }>>;
  assert.deepEqual(os.map((docs) => docs[0]?.kind), ['ImageDigestMirrorSet', 'ImageTagMirrorSet', 'ImageContentSourcePolicy']);
  assert.deepEqual(os[0]?.[0]?.spec.imageDigestMirrors?.[1], { source: 'gcr.io', mirrors: ['mirror.example:5000/gcr.io'], mirrorSourcePolicy: 'NeverContactSource' });
});

test('bad options are named', () => {
  assert.throws(() => clientConfig(config, 'containerd', { ...base, mirrorUrl: 'mirror:5000' }), /--mirror-url "mirror:5000" is not a URL|must be http/);
  assert.throws(() => clientConfig(config, 'containerd', { ...base, mirrorUrl: 'https://m:5000/v2/gdc' }), /scheme, host and port only.*--namespace/);
  assert.throws(() => clientConfig(config, 'containerd', { ...base, namespace: 'nope' }), /--namespace nope: no such \[\[namespace\]\]/);
  assert.throws(() => clientConfig(config, 'gdc', { ...base, namespace: 'site' }), /local namespace/);
});
