import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, parseConfigText, parseDuration, parseSize, parseListen } from '../../src/config/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'regmirror-config-'));
const parse = (toml: string, env: NodeJS.ProcessEnv = {}) => parseConfigText(toml, dir, env);
const REG = '[[registry]]\nhost = "docker.io"\n';

function rejects(toml: string, keyPath: string, reason: RegExp, env: NodeJS.ProcessEnv = {}): void {
  assert.throws(() => parse(toml, env), (e: unknown) => {
    assert.ok(e instanceof ConfigError, String(e));
    assert.equal(e.keyPath, keyPath);
    assert.match(e.message, reason);
    return true;
  });
}

test('the embedded default: loopback :5000, ./data, Docker Hub default, five registries', () => {
  const c = loadConfig(undefined, {});
  assert.deepEqual(c.server.listen, { host: '127.0.0.1', port: 5000 });
  assert.equal(c.server.dataDir, join(process.cwd(), 'data'));
  assert.equal(c.defaultRegistry, 'docker.io');
  assert.deepEqual(c.registries.map((r) => r.host), ['docker.io', 'gcr.io', 'ghcr.io', 'quay.io', 'registry.k8s.io']);
  assert.equal(c.registries[0]?.endpoint, 'https://registry-1.docker.io');
  assert.equal(c.registries[1]?.endpoint, 'https://gcr.io');
  assert.equal(c.cache.tagTtlMs, 600_000);
  assert.equal(c.cache.directIo, true);
  assert.equal(c.server.warmUp, true);
});

test('mirror.toml.example starts as it is (no variable to set), and its [auth] lines work uncommented', () => {
  const file = join(import.meta.dirname, '../../mirror.toml.example');
  const c = loadConfig(file, {});
  assert.ok(c.registries.length >= 1);
  assert.equal(c.auth, undefined);
  const text = readFileSync(file, 'utf8');
  const [head, rest] = [text.slice(0, text.indexOf('#[auth]')), text.slice(text.indexOf('#[auth]'))];
  const uncommented = `${head}${rest.slice(0, rest.indexOf('[uploads]')).replace(/^#(?=[[a-z])/gm, '')}${rest.slice(rest.indexOf('[uploads]'))}`;
  const withUsers = parseConfigText(uncommented, dir, { REGMIRROR_CI_PASSWORD: 'y' });
  assert.deepEqual([...(withUsers.auth?.users.get('ci')?.roles ?? [])], ['pull', 'push']);
  assert.equal(c.uploads.abandonAfterMs, 24 * 3600_000);
  assert.equal(c.cache.directIo, true);
  assert.equal(c.server.warmUp, true);
  assert.equal(parse(`${REG}[cache]\ndirect_io = false\n[server]\nwarm_up = false`).cache.directIo, false);
  assert.equal(parse(`${REG}[server]\nwarm_up = false`).server.warmUp, false);
});

test('a full config: aliases folded, per-registry TTL, namespaces, relative paths', () => {
  const c = parse(`default_registry = "index.docker.io"
[server]
listen = "[::1]:5555"
data_dir = "cache"
[cache]
tag_ttl = "1h30m"
max_size = "50GiB"
[upstream]
connect_timeout = "2s"
[[registry]]
host = "registry-1.docker.io"
[[registry]]
host = "gcr.io"
endpoint = "http://127.0.0.1:9999/"
tag_ttl = "1m"
[[namespace]]
name = "test-namespace"
registry = "gcr.io"
[[namespace]]
name = "local"
`);
  assert.equal(c.defaultRegistry, 'docker.io');
  assert.deepEqual(c.server.listen, { host: '::1', port: 5555 });
  assert.equal(c.server.dataDir, join(dir, 'cache'));
  assert.equal(c.cache.tagTtlMs, 5_400_000);
  assert.equal(c.cache.maxSizeBytes, 50 * 1024 ** 3);
  assert.equal(c.registries[0]?.host, 'docker.io');
  assert.equal(c.registries[0]?.timeouts.connectMs, 2000);
  assert.equal(c.registries[1]?.endpoint, 'http://127.0.0.1:9999');
  assert.equal(c.registries[1]?.tagTtlMs, 60_000);
  assert.deepEqual(c.namespaces, [{ name: 'test-namespace', registry: 'gcr.io' }, { name: 'local' }]);
});

test('bad configs stop start-up naming the key path and the reason', () => {
  rejects(`bogus = 1\n${REG}`, "bogus", /unknown key/);
  rejects(`${REG}bogus = 1`, "registry[0].bogus", /unknown key/);
  rejects(`${REG}[server]\nlisten = "nope"`, 'server.listen', /host:port/);
  rejects(`${REG}[server]\nlistne = "x"`, 'server.listne', /unknown key; did you mean "listen"\?/);
  rejects(`${REG}[[registry]]\nhost = "gcr.io"\npasword = "x"`, 'registry[1].pasword', /did you mean "password"/);
  rejects(`${REG}[cache]\ntag_ttl = "10 minutes"`, 'cache.tag_ttl', /not a duration/);
  rejects(`${REG}[cache]\ntag_ttl = 10`, 'cache.tag_ttl', /expected a string/);
  rejects(`${REG}[cache]\nmax_size = "lots"`, 'cache.max_size', /not a size/);
  rejects(`${REG}[[registry]]\nendpoint = "https://x"`, 'registry[1].host', /required/);
  rejects(`${REG}[[registry]]\nhost = "gcr.io"\nendpoint = "ftp://gcr.io"`, 'registry[1].endpoint', /scheme/);
  rejects(`${REG}[[registry]]\nhost = "gcr.io"\nendpoint = "https://u:p@gcr.io"`, 'registry[1].endpoint', /credentials/);
  rejects(`${REG}[[registry]]\nhost = "index.docker.io"`, 'registry[1].host', /configured twice/);
  rejects(`${REG}[[registry]]\nhost = "gcr.io"\nca_file = "missing.pem"`, 'registry[1].ca_file', /no such file/);
  rejects(`${REG}[[registry]]\nhost = "gcr.io"\nusername = "u"`, 'registry[1].password', /none of password/);
  rejects(`${REG}[[registry]]\nhost = "gcr.io"\nusername = "u"\npassword_env = "NOPE"`, 'registry[1].password_env', /not set/);
  rejects(`${REG}[[registry]]\nhost = "gcr.io"\nfrobnicate = true`, 'registry[1].frobnicate', /unknown key/);
  rejects(`${REG}[[namespace]]\nname = "x"\nregistry = "quay.io"`, 'namespace[0].registry', /not a configured/);
  rejects(`${REG}[[namespace]]\nname = "v2"`, 'namespace[0].name', /not a valid namespace/);
  rejects(`[[registry]]\nhost = "gcr.io"`, 'default_registry', /not a configured \[\[registry\]\]/);
  rejects(`${REG}[log]\nlevel = "loud"`, 'log.level', /not one of/);
  rejects(`${REG}[cache]\ndirect_io = "yes"`, 'cache.direct_io', /expected true or false/);
  rejects(`${REG}[server]\nwarm_up = 1`, 'server.warm_up', /expected true or false/);
  rejects(`server = 5\n${REG}`, "server", /expected a table/);
  rejects(`${REG}[[registry]]\nhost = "gcr.io"\n[[registry]]\nhost = "bad host!"`, 'registry[2].host', /not a registry host/);
});

test('a secret never appears in a config error message', () => {
  const secret = 's3cr3t-value-123';
  assert.throws(() => parse(`${REG}[[registry]]\nhost = "gcr.io"\npassword = "${secret}"`), (e: unknown) => e instanceof ConfigError && !e.message.includes(secret) && e.keyPath === 'registry[1].username');
});

test('TOML syntax errors name the line', () => {
  assert.throws(() => parse('[server\nlisten = 1'), /TOML syntax error: line 1/);
});

test('password sources: inline, env and file resolve at start-up', () => {
  const f = join(dir, 'pw');
  writeFileSync(f, 'from-file\n');
  const base = `${REG}[[registry]]\nhost = "gcr.io"\nusername = "u"\n`;
  const pw = (c: ReturnType<typeof parse>) => {
    const a = c.registries[1]?.auth;
    return a?.source === 'static' && a.credential.kind === 'basic' ? a.credential.password : undefined;
  };
  assert.equal(pw(parse(`${base}password = "inline"`)), 'inline');
  assert.equal(pw(parse(`${base}password_env = "PW"`, { PW: 'from-env' })), 'from-env');
  assert.equal(pw(parse(`${base}password_file = "pw"`)), 'from-file');
  rejects(`${base}password = "a"\npassword_env = "PW"`, 'registry[1].password', /only one/);
});

test('durations, sizes and listen addresses', () => {
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('1h30m'), 5_400_000);
  assert.equal(parseDuration('168h'), 604_800_000);
  assert.equal(parseDuration('0s'), 0);
  assert.equal(parseDuration('10'), undefined);
  assert.equal(parseDuration('-1s'), undefined);
  assert.equal(parseSize('512MiB'), 512 * 1024 ** 2);
  assert.equal(parseSize('10 MB'), 10_000_000);
  assert.equal(parseSize('12parsecs'), undefined);
  assert.deepEqual(parseListen('k', ':5000'), { host: '0.0.0.0', port: 5000 });
  assert.throws(() => parseListen('k', '127.0.0.1:99999'), ConfigError);
});

test('[auth]: users from htpasswd (bcrypt only) and [[auth.user]], roles checked, secrets never echoed', () => {
  const hash = `$2y$05$${'a'.repeat(53)}`;
  writeFileSync(join(dir, 'htpasswd'), `# users\nci:${hash}\n`);
  const c = parse(`${REG}[auth]\nhtpasswd = "htpasswd"\n[[auth.user]]\nname = "bot"\npassword_env = "BOT"\nroles = ["push"]\n`, { BOT: 'b0t-secret' });
  assert.equal(c.auth?.users.get('ci')?.bcryptHash, hash);
  assert.deepEqual([...(c.auth?.users.get('ci')?.roles ?? [])], ['pull', 'push'], 'htpasswd_roles default');
  assert.equal(c.auth?.users.get('bot')?.password, 'b0t-secret');
  assert.equal(c.auth?.anonymousLocalPull, false);
  writeFileSync(join(dir, 'htpasswd-md5'), 'old:$apr1$abc$def\n');
  rejects(`${REG}[auth]\nhtpasswd = "htpasswd-md5"\n`, 'auth.htpasswd', /line 1: .*only bcrypt/);
  rejects(`${REG}[auth]\ntoken_ttl = "5m"\n`, 'auth', /has no users/);
  rejects(`${REG}[auth]\n[[auth.user]]\nname = "x"\npassword = "p"\nroles = ["root"]\n`, 'auth.user[0].roles', /"root" is not a role: use "pull", "push", "delete", "admin"/);
  rejects(`${REG}[auth]\n[[auth.user]]\nname = "x"\npassword_hash = "plain"\n`, 'auth.user[0].password_hash', /not a bcrypt hash/);
  rejects(`${REG}[auth]\n[[auth.user]]\nname = "x"\npassword = "p"\npassword_env = "P"\n`, 'auth.user[0].password_hash', /exactly one/);
  rejects(`${REG}[auth]\n[[auth.user]]\nname = "x"\npassword_env = "NOPE"\n`, 'auth.user[0].password_env', /NOPE is not set/);
  rejects(`${REG}[uploads]\nabandon_after = "soon"\n`, 'uploads.abandon_after', /not a duration/);
});

test('[server] external_url: scheme://host[:port] only, used for token realms instead of any Host header', () => {
  assert.equal(parse(`[server]\nexternal_url = "https://mirror.example.com:5000/"\n${REG}`).server.externalUrl, 'https://mirror.example.com:5000');
  assert.equal(parse(REG).server.externalUrl, undefined);
  rejects(`[server]\nexternal_url = "mirror.example.com"\n${REG}`, 'server.external_url', /not a URL/);
  rejects(`[server]\nexternal_url = "ftp://mirror.example.com"\n${REG}`, 'server.external_url', /scheme ftp: is not supported/);
  rejects(`[server]\nexternal_url = "https://mirror.example.com/v2"\n${REG}`, 'server.external_url', /no path/);
});

test('[cache] budget keys: values and defaults reach the config (each one is read by the Evictor)', () => {
  const c = parse(`${REG}[cache]\nmax_size = "50GiB"\nevict_at = "95%"\nevict_to = "70%"\nmin_free = "5GiB"\nevict_grace = "90s"\nevict_local = true\npins = ["nginx:1.27", "docker.io/library/busybox@sha256:${'a'.repeat(64)}"]\n`).cache;
  assert.deepEqual(
    { max: c.maxSizeBytes, at: c.evictAt, to: c.evictTo, minFree: c.minFreeBytes, grace: c.evictGraceMs, local: c.evictLocal },
    { max: 50 * 1024 ** 3, at: 0.95, to: 0.7, minFree: 5 * 1024 ** 3, grace: 90_000, local: true },
  );
  assert.deepEqual(c.pins.map((p) => [p.repo, p.reference]), [['docker.io/library/nginx', '1.27'], ['docker.io/library/busybox', `sha256:${'a'.repeat(64)}`]]);
  const d = parse(REG).cache;
  assert.deepEqual({ at: d.evictAt, to: d.evictTo, grace: d.evictGraceMs, local: d.evictLocal, minFree: d.minFreeBytes, max: d.maxSizeBytes, pins: d.pins }, { at: 0.9, to: 0.8, grace: 300_000, local: false, minFree: undefined, max: undefined, pins: [] });
});

test('operations keys: drain file, shutdown delay and timeout, metrics, log format; LOG_LEVEL overrides [log] level', () => {
  const c = parse(`${REG}[server]\ndrain_file = "drain"\nshutdown_delay = "5s"\nshutdown_timeout = "2m"\n[log]\nformat = "text"\nlevel = "warn"\n[metrics]\nenabled = true\n`);
  assert.equal(c.server.drainFile, join(dir, 'drain'));
  assert.equal(c.server.shutdownDelayMs, 5_000);
  assert.equal(c.server.shutdownTimeoutMs, 120_000);
  assert.deepEqual(c.log, { level: 'warn', format: 'text' });
  assert.deepEqual(c.metrics, { enabled: true, public: false });
  const d = parse(REG);
  assert.equal(d.server.drainFile, undefined);
  assert.equal(d.server.shutdownDelayMs, 0);
  assert.equal(d.server.shutdownTimeoutMs, 30_000);
  assert.deepEqual(d.log, { level: 'info', format: 'json' });
  assert.equal(parse(`${REG}[log]\nlevel = "warn"\n`, { LOG_LEVEL: 'debug' }).log.level, 'debug');
  rejects(REG, 'LOG_LEVEL (environment)', /"loud" is not one of fatal, error/, { LOG_LEVEL: 'loud' });
  rejects(`${REG}[log]\nformat = "pretty"\n`, 'log.format', /not json or text/);
  rejects(`${REG}[server]\nshutdown_timeout = "soon"\n`, 'server.shutdown_timeout', /not a duration/);
  rejects(`${REG}[server]\ndrain_file = ""\n`, 'server.drain_file', /must not be empty/);
  // Keys that would do nothing are refused.
  rejects(`${REG}[metrics]\npublic = true\n`, 'metrics.public', /no effect without \[auth\]/);
  rejects(`${REG}[metrics]\nenabled = false\npublic = true\n`, 'metrics.public', /no effect with \[metrics\] enabled = false/);
  rejects(`${REG}[metrics]\nport = 9000\n`, 'metrics.port', /unknown key/);
  const withAuth = parse(`${REG}[metrics]\npublic = true\n[auth]\n[[auth.user]]\nname = "ops"\npassword_hash = "$2y$05$abcdefghijklmnopqrstuuKq4nNcBGQ2v4Q0S3LcDcWb1Qq1dKl1a"\nroles = ["admin"]\n`);
  assert.equal(withAuth.metrics.public, true);
});

test('every problem of a file is reported at once, each naming its key, in file order', () => {
  const toml = `default_registry = "nowhere.example"\n[server]\nlisten = "nope"\nbogus = 1\n[cache]\nmax_size = "lots"\n[log]\nformat = "pretty"\n[[registry]]\nhost = "docker.io"\nca_file = "/no/such/ca.pem"\n[[namespace]]\nname = "Bad Name"\n`;
  assert.throws(() => parse(toml), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.deepEqual(e.problems.map((p) => p.keyPath), ['server.listen', 'server.bogus', 'cache.max_size', 'log.format', 'registry[0].ca_file', 'namespace[0].name', 'default_registry']);
    assert.equal(e.keyPath, 'server.listen');
    assert.match(e.message, /^7 problems:\n  - server\.listen: /);
    assert.match(e.message, /\n  - registry\[0\]\.ca_file: no such file: \/no\/such\/ca\.pem/);
    return true;
  });
  // One problem is reported as itself.
  rejects(`${REG}[server]\nbogus = 1\n`, 'server.bogus', /^server\.bogus: unknown key/);
});

test('endpoints with a path, and PEM files of the wrong kind, are refused naming the key and the fix', () => {
  rejects(`default_registry = ""\n[[registry]]\nhost = "registry.local:5000"\nendpoint = "http://127.0.0.1:5000/v2/"\n`, 'registry[0].endpoint', /has a path \(\/v2\/\): give the registry's base URL, "http:\/\/127\.0\.0\.1:5000"/);
  assert.equal(parse(`default_registry = ""\n[[registry]]\nhost = "registry.local:5000"\nendpoint = "http://127.0.0.1:5000/"\n`).registries[0]?.endpoint, 'http://127.0.0.1:5000');
  const pems = mkdtempSync(join(tmpdir(), 'regmirror-pem-'));
  const key = join(pems, 'key.pem');
  const cert = join(pems, 'cert.pem');
  writeFileSync(key, '-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n');
  writeFileSync(cert, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
  rejects(`${REG}ca_file = "${key}"\n`, 'registry[0].ca_file', /holds a private key, not a certificate/);
  rejects(`${REG}client_cert = "${cert}"\nclient_key = "${cert}"\n`, 'registry[0].client_key', /holds a certificate, not a private key/);
  rejects(`${REG}[server]\ntls_cert = "${key}"\ntls_key = "${key}"\n`, 'server.tls_cert', /holds a private key, not a certificate/);
  // A pair that is each of the right kind but unusable together names tls_key.
  rejects(`${REG}[server]\ntls_cert = "${cert}"\ntls_key = "${key}"\n`, 'server.tls_key', /does not go with tls_cert/);
});
