/**
 * Loads mirror.toml (DESIGN §8): parse with @iarna/toml, validate every key, resolve secrets.
 * Every problem is a ConfigError naming the key path (`registry[1].ca_file: no such file`);
 * values of secret keys are never echoed.
 */
import { createSecureContext } from 'node:tls';
import { readFileSync, existsSync, statSync, accessSync, constants } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import TOML from '@iarna/toml';
import { parseDuration, parseSize } from './units.ts';
import { canonicalRegistryHost, DOCKER_HUB, DOCKER_HUB_ENDPOINT } from './docker-hub.ts';
import { ROLES, type AuthConfig, type AuthUser, type Role } from './types.ts';
import type { Config, CredentialConfig, ListenAddress, LogLevel, NamespaceConfig, RegistryConfig, RetryConfig, TimeoutsConfig, UpstreamEndpoint } from './types.ts';
import { readDockerConfig } from './docker-config.ts';
import { buildRoutingTable, referenceOf, routeImage } from '../routing/route.ts';

/**
 * A configuration problem; `keyPath` names the offending key. A file with several problems gives
 * one ConfigError listing them all (`problems`, in file order; `keyPath` is the first's).
 */
export class ConfigError extends Error {
  readonly keyPath: string;
  readonly problems: readonly ConfigError[];
  constructor(keyPath: string, reason: string, problems?: readonly ConfigError[]) {
    super(keyPath === '' || problems !== undefined ? reason : `${keyPath}: ${reason}`);
    this.name = 'ConfigError';
    this.keyPath = keyPath;
    this.problems = problems ?? [this];
  }

  /** One error for `problems`: the problem itself when there is one, else a list of them. */
  static all(problems: readonly ConfigError[]): ConfigError {
    const [first] = problems;
    if (first === undefined) throw new Error('ConfigError.all needs a problem');
    if (problems.length === 1) return first;
    return new ConfigError(first.keyPath, `${problems.length} problems:\n${problems.map((p) => `  - ${p.message}`).join('\n')}`, problems);
  }
}

/** Path of the embedded default configuration shipped with regmirror. */
export const DEFAULT_CONFIG_PATH = resolve(dirname(fileURLToPath(import.meta.url)), '../../config/default.toml');

type Table = Record<string, unknown>;

/** Reads typed values out of one TOML table, tracking the key path and unknown keys. */
class TableReader {
  private readonly seen = new Set<string>();
  constructor(
    private readonly table: Table,
    readonly path: string,
    private readonly baseDir: string,
  ) {}

  key(name: string): string {
    return this.path === '' ? name : `${this.path}.${name}`;
  }

  has(name: string): boolean {
    return this.table[name] !== undefined;
  }

  private raw(name: string): unknown {
    this.seen.add(name);
    return this.table[name];
  }

  string(name: string): string | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw new ConfigError(this.key(name), `expected a string, got ${describe(v)}`);
    return v;
  }

  bool(name: string): boolean | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') throw new ConfigError(this.key(name), `expected true or false, got ${describe(v)}`);
    return v;
  }

  duration(name: string): number | undefined {
    const v = this.string(name);
    if (v === undefined) return undefined;
    const ms = parseDuration(v);
    if (ms === undefined) throw new ConfigError(this.key(name), `"${v}" is not a duration: use e.g. "500ms", "30s", "10m", "1h30m"`);
    return ms;
  }

  size(name: string): number | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
    const bytes = typeof v === 'string' ? parseSize(v) : undefined;
    if (bytes === undefined) throw new ConfigError(this.key(name), `${describe(v)} is not a size: use e.g. "512MiB", "50GiB"`);
    return bytes;
  }

  /** A whole number within [min, max]. */
  integer(name: string, min: number, max: number): number | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new ConfigError(this.key(name), `expected a whole number from ${min} to ${max}, got ${describe(v)}`);
    return v;
  }

  /** An array of strings, or an array of tables (`[[<table>.<name>]]`); never the two mixed. */
  stringsOrTables(name: string): string[] | TableReader[] | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
    if (Array.isArray(v) && v.length > 0 && v.every(isTable)) return this.tables(name);
    throw new ConfigError(this.key(name), `expected an array of URLs (["https://a", "https://b"]) or of tables ([[${this.key(name).replace(/\[\d+\]/g, '')}]] with url = ...), got ${describe(v)}`);
  }

  /** An array of strings. */
  strings(name: string): string[] | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new ConfigError(this.key(name), `expected an array of strings, got ${describe(v)}`);
    return v as string[];
  }

  /** A path relative to the config file's folder, optionally required to exist as a file. */
  file(name: string, mustExist: boolean): string | undefined {
    const v = this.string(name);
    if (v === undefined) return undefined;
    if (v === '') throw new ConfigError(this.key(name), 'must not be empty');
    const p = resolve(this.baseDir, v);
    if (mustExist && (!existsSync(p) || !statSync(p).isFile())) throw new ConfigError(this.key(name), `no such file: ${p}`);
    return p;
  }

  table_(name: string): TableReader | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (!isTable(v)) throw new ConfigError(this.key(name), `expected a table [${this.key(name)}], got ${describe(v)}`);
    return new TableReader(v, this.key(name), this.baseDir);
  }

  tables(name: string): TableReader[] {
    const v = this.raw(name);
    if (v === undefined) return [];
    if (!Array.isArray(v) || !v.every(isTable)) {
      throw new ConfigError(this.key(name), `expected an array of tables [[${name}]], got ${describe(v)}`);
    }
    return v.map((t, i) => new TableReader(t as Table, `${this.key(name)}[${i}]`, this.baseDir));
  }

  /** Throws on the keys that were never read (all of them, in one ConfigError): unknown keys stop start-up. */
  done(): void {
    const unknown: ConfigError[] = [];
    for (const k of Object.keys(this.table)) {
      if (this.seen.has(k)) continue;
      const near = [...this.seen].find((known) => editDistance(known, k) <= 2);
      const hint = near === undefined ? '' : `; did you mean "${near}"?`;
      unknown.push(new ConfigError(this.key(k), `unknown key${hint} (see mirror.toml.example for the keys regmirror understands)`));
    }
    if (unknown.length > 0) throw ConfigError.all(unknown);
  }
}

/** Levenshtein distance, for "did you mean" hints on misspelt keys. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

function isTable(v: unknown): v is Table {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (isTable(v)) return 'a table';
  if (typeof v === 'string') return `"${v.length > 40 ? `${v.slice(0, 37)}...` : v}"`;
  return `${typeof v} ${String(v)}`;
}

/** Parses "host:port", "[v6]:port". */
export function parseListen(keyPath: string, s: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]*)):(\d{1,5})$/.exec(s);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || !(port >= 0 && port <= 65535)) {
    throw new ConfigError(keyPath, `"${s}" is not host:port (e.g. "127.0.0.1:5000" or "[::1]:5000")`);
  }
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '0.0.0.0' : host, port };
}

/** "host:port", with brackets around an IPv6 host. */
export function formatListen(l: ListenAddress): string {
  return l.host.includes(':') ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`;
}

const REGISTRY_HOST = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d{1,5})?$/;

/** An endpoint URL checked: http(s), no credentials, query, fragment or path; returned as its origin. */
function endpointUrl(key: string, raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(key, `"${raw}" is not a URL (e.g. "https://gcr.io")`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new ConfigError(key, `scheme ${url.protocol} is not supported: use https:// (or http:// for a plain-HTTP registry)`);
  }
  if (url.username !== '' || url.password !== '') {
    throw new ConfigError(key, 'must not carry credentials: use username / password_env / password_file');
  }
  if (url.search !== '' || url.hash !== '') throw new ConfigError(key, 'must not have a query or fragment');
  if (url.pathname !== '/' && url.pathname !== '') {
    throw new ConfigError(key, `"${raw}" has a path (${url.pathname}): give the registry's base URL, "${url.origin}"; the mirror adds /v2/... itself`);
  }
  return url.origin;
}

/** A registry's or endpoint's credential and trust keys. */
function readTrust(r: TableReader, host: string, env: NodeJS.ProcessEnv): Omit<UpstreamEndpoint, 'url' | 'insecureSkipVerify'> & { insecureSkipVerify?: boolean } {
  const out: Omit<UpstreamEndpoint, 'url' | 'insecureSkipVerify'> & { insecureSkipVerify?: boolean } = {};
  const auth = readCredentials(r, host, env);
  const caFile = pemFile(r, 'ca_file', 'certificate');
  const clientCert = pemFile(r, 'client_cert', 'certificate');
  const clientKey = pemFile(r, 'client_key', 'key');
  if ((clientCert === undefined) !== (clientKey === undefined)) {
    throw new ConfigError(r.key(clientCert === undefined ? 'client_cert' : 'client_key'), 'client_cert and client_key go together');
  }
  const insecureSkipVerify = r.bool('insecure_skip_verify');
  if (auth !== undefined) out.auth = auth;
  if (caFile !== undefined) out.caFile = caFile;
  if (clientCert !== undefined && clientKey !== undefined) {
    out.clientCert = clientCert;
    out.clientKey = clientKey;
  }
  if (insecureSkipVerify !== undefined) out.insecureSkipVerify = insecureSkipVerify;
  return out;
}

/**
 * `endpoint = "..."` (one) or `endpoints = ["https://a", "https://b"]`, or `[[registry.endpoints]]`
 * tables with `url` and their own credential and trust keys; an endpoint without them uses the
 * registry's (`base`).
 */
function readEndpoints(r: TableReader, host: string, base: UpstreamEndpoint, env: NodeJS.ProcessEnv): UpstreamEndpoint[] {
  const one = r.string('endpoint');
  const many = r.stringsOrTables('endpoints');
  if (one !== undefined && many !== undefined) throw new ConfigError(r.key('endpoints'), 'give endpoint (one URL) or endpoints (a list), not both');
  if (many === undefined) {
    const raw = one ?? (host === DOCKER_HUB ? DOCKER_HUB_ENDPOINT : `https://${host}`);
    return [{ ...base, url: endpointUrl(r.key('endpoint'), raw) }];
  }
  if (many.length === 0) throw new ConfigError(r.key('endpoints'), 'must list at least one URL (or leave it out for the registry\'s own, https://<host>)');
  const out = many.map((e, i): UpstreamEndpoint => {
    if (typeof e === 'string') return { ...base, url: endpointUrl(`${r.key('endpoints')}[${i}]`, e) };
    const raw = e.string('url');
    if (raw === undefined) throw new ConfigError(e.key('url'), 'is required (the endpoint\'s base URL, e.g. "https://mirror.gcr.io")');
    const url = endpointUrl(e.key('url'), raw);
    const own = readTrust(e, host, env);
    e.done();
    // A credential or trust key of its own replaces the registry's (a credential whatever its kind).
    return { ...base, ...own, url };
  });
  const seen = new Set<string>();
  out.forEach((e, i) => {
    if (seen.has(e.url)) throw new ConfigError(`${r.key('endpoints')}[${i}]`, `${e.url} is listed twice`);
    seen.add(e.url);
  });
  return out;
}

function readRetry(r: TableReader | undefined, base: RetryConfig): RetryConfig {
  if (r === undefined) return base;
  return fields<RetryConfig>({
    retries: () => r.integer('retries', 0, 10) ?? base.retries,
    retryBudgetMs: () => r.duration('retry_budget') ?? base.retryBudgetMs,
    resumeAttempts: () => r.integer('resume_attempts', 0, 100) ?? base.resumeAttempts,
  });
}

/**
 * `[server] external_url`: the mirror's own address as clients reach it (behind a load balancer or
 * on a wildcard listener), used for token realms and repo digests instead of any Host header.
 */
function readExternalUrl(r: TableReader | undefined): string | undefined {
  const raw = r?.string('external_url');
  if (r === undefined || raw === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(r.key('external_url'), `"${raw}" is not a URL (e.g. "https://mirror.example.com:5000")`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ConfigError(r.key('external_url'), `scheme ${url.protocol} is not supported: use https:// or http://`);
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '' || (url.pathname !== '/' && url.pathname !== '')) {
    throw new ConfigError(r.key('external_url'), 'must be scheme://host[:port] only: no path, credentials, query or fragment');
  }
  return url.origin;
}

/**
 * Reads each field of a settings group, every one even when another failed (so a bad value is not
 * followed by its neighbours reported as unknown keys), then throws all the problems in one error.
 */
function fields<T extends object>(readers: { [K in keyof T]: () => T[K] }): T {
  const problems: ConfigError[] = [];
  const out: Partial<T> = {};
  for (const k of Object.keys(readers) as Array<keyof T>) {
    try {
      out[k] = readers[k]();
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      problems.push(...e.problems);
    }
  }
  if (problems.length > 0) throw ConfigError.all(problems);
  return out as T;
}

function readTimeouts(r: TableReader | undefined, base: TimeoutsConfig): TimeoutsConfig {
  if (r === undefined) return base;
  return fields<TimeoutsConfig>({
    connectMs: () => r.duration('connect_timeout') ?? base.connectMs,
    headersMs: () => r.duration('header_timeout') ?? base.headersMs,
    bodyIdleMs: () => r.duration('body_timeout') ?? base.bodyIdleMs,
    revalidateMs: () => r.duration('revalidate_timeout') ?? base.revalidateMs,
  });
}

/**
 * A PEM file that must hold certificates (`ca_file`, `client_cert`, `tls_cert`) or a private key
 * (`client_key`, `tls_key`): a key given as a certificate (or the reverse) is refused naming the key,
 * instead of failing later inside TLS with an OpenSSL code.
 */
function pemFile(r: TableReader, name: string, kind: 'certificate' | 'key'): string | undefined {
  const path = r.file(name, true);
  if (path === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(path, 'latin1');
  } catch (e) {
    throw new ConfigError(r.key(name), `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  const hasCert = text.includes('-----BEGIN CERTIFICATE-----');
  const hasKey = /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text);
  if (kind === 'certificate' && !hasCert) {
    throw new ConfigError(r.key(name), hasKey ? `${path} holds a private key, not a certificate (a PEM "BEGIN CERTIFICATE" block)` : `${path} holds no PEM certificate ("-----BEGIN CERTIFICATE-----")`);
  }
  if (kind === 'certificate' && hasKey) throw new ConfigError(r.key(name), `${path} holds a private key beside the certificate: give the certificate alone (keys go in their own file)`);
  if (kind === 'key' && !hasKey) throw new ConfigError(r.key(name), hasCert ? `${path} holds a certificate, not a private key` : `${path} holds no PEM private key ("-----BEGIN ... PRIVATE KEY-----")`);
  return path;
}

function readRegistry(r: TableReader, defaults: { tagTtlMs: number; timeouts: TimeoutsConfig; retry: RetryConfig; offline: boolean }, env: NodeJS.ProcessEnv): RegistryConfig {
  const rawHost = r.string('host');
  if (rawHost === undefined) throw new ConfigError(r.key('host'), 'is required (the registry name clients use, e.g. "gcr.io")');
  if (!REGISTRY_HOST.test(rawHost)) throw new ConfigError(r.key('host'), `"${rawHost}" is not a registry host name (e.g. "gcr.io", "registry.local:5000")`);
  const host = canonicalRegistryHost(rawHost);
  const tagTtlMs = r.duration('tag_ttl') ?? defaults.tagTtlMs;
  const offline = r.bool('offline') ?? defaults.offline;
  const timeouts = readTimeouts(r, defaults.timeouts);
  const retry = readRetry(r, defaults.retry);
  const trust = readTrust(r, host, env);
  const shared: UpstreamEndpoint = { url: '', ...trust, insecureSkipVerify: trust.insecureSkipVerify ?? false };
  const endpoints = readEndpoints(r, host, shared, env);
  r.done();
  const reg: RegistryConfig = { host, endpoint: endpoints[0]?.url ?? '', endpoints, tagTtlMs, offline, timeouts, retry };
  if (trust.auth !== undefined) reg.auth = trust.auth;
  return reg;
}

/** True when `name` is an executable file in a PATH folder. */
function onPath(name: string, env: NodeJS.ProcessEnv): boolean {
  for (const dir of (env.PATH ?? process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      /* keep looking */
    }
  }
  return false;
}

/**
 * Reads the one credential source of a [[registry]]: username + password / password_env /
 * password_file; docker_config; gcr_key_file; token. Secrets are read now so a bad source stops
 * start-up; messages name keys and files, never values.
 */
function readCredentials(r: TableReader, host: string, env: NodeJS.ProcessEnv): CredentialConfig | undefined {
  const username = r.string('username');
  const password = r.string('password');
  const passwordEnv = r.string('password_env');
  const passwordFile = r.file('password_file', true);
  const dockerConfig = r.file('docker_config', true);
  const gcrKeyFile = r.file('gcr_key_file', true);
  const token = r.string('token');
  const givenPasswords = [password, passwordEnv, passwordFile].filter((v) => v !== undefined).length;
  if (givenPasswords > 1) throw new ConfigError(r.key('password'), 'set only one of password, password_env, password_file');
  const sources = [username !== undefined || givenPasswords > 0 ? 'username' : undefined, dockerConfig === undefined ? undefined : 'docker_config', gcrKeyFile === undefined ? undefined : 'gcr_key_file', token === undefined ? undefined : 'token'].filter((v) => v !== undefined);
  if (sources.length > 1) throw new ConfigError(r.key(sources[1] ?? 'token'), `only one credential source per registry: found ${sources.join(' and ')}`);

  if (token !== undefined) {
    if (token === '') throw new ConfigError(r.key('token'), 'must not be empty');
    return { source: 'static', configKey: 'token', credential: { kind: 'bearer', token } };
  }
  if (gcrKeyFile !== undefined) {
    const json = readFileSync(gcrKeyFile, 'utf8').trim();
    try {
      const v: unknown = JSON.parse(json);
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    } catch {
      throw new ConfigError(r.key('gcr_key_file'), `${gcrKeyFile} is not a JSON service-account key`);
    }
    return { source: 'static', configKey: 'gcr_key_file', credential: { kind: 'basic', username: '_json_key', password: json } };
  }
  if (dockerConfig !== undefined) {
    let cred: CredentialConfig;
    try {
      cred = readDockerConfig(dockerConfig, host, 'docker_config');
    } catch (e) {
      throw new ConfigError(r.key('docker_config'), (e as Error).message);
    }
    if (cred.source === 'helper' && !onPath(`docker-credential-${cred.helper}`, env)) {
      throw new ConfigError(r.key('docker_config'), `credential helper docker-credential-${cred.helper} (named in ${dockerConfig}) is not on PATH`);
    }
    return cred;
  }
  if (givenPasswords === 1 && username === undefined) throw new ConfigError(r.key('username'), 'is required when a password is set');
  if (username === undefined) return undefined;
  if (givenPasswords === 0) throw new ConfigError(r.key('password'), 'username is set but none of password, password_env, password_file is');
  let secret = password;
  if (passwordEnv !== undefined) {
    secret = env[passwordEnv];
    if (secret === undefined || secret === '') throw new ConfigError(r.key('password_env'), `environment variable ${passwordEnv} is not set`);
  }
  if (passwordFile !== undefined) secret = readFileSync(passwordFile, 'utf8').replace(/\r?\n$/, '');
  const configKey = passwordEnv !== undefined ? 'password_env' : passwordFile !== undefined ? 'password_file' : 'password';
  return { source: 'static', configKey, credential: { kind: 'basic', username, password: secret ?? '' } };
}

function readRoles(r: TableReader, name: string, fallback: readonly Role[]): Set<Role> {
  const raw = r.strings(name);
  if (raw === undefined) return new Set(fallback);
  for (const role of raw) {
    if (!(ROLES as readonly string[]).includes(role)) throw new ConfigError(r.key(name), `"${role}" is not a role: use ${ROLES.map((x) => `"${x}"`).join(', ')}`);
  }
  return new Set(raw as Role[]);
}

const BCRYPT = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;

/** Reads an htpasswd file: bcrypt entries only (htpasswd -B), as Distribution accepts. */
function readHtpasswd(r: TableReader, file: string, roles: ReadonlySet<Role>, users: Map<string, AuthUser>): void {
  readFileSync(file, 'utf8').split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const name = line.slice(0, colon);
    const hash = line.slice(colon + 1).trim();
    if (colon <= 0 || !BCRYPT.test(hash)) {
      throw new ConfigError(r.key('htpasswd'), `${file} line ${i + 1}: not a "user:bcrypt-hash" entry; only bcrypt is accepted (create entries with htpasswd -B)`);
    }
    users.set(name, { name, bcryptHash: hash, roles });
  });
}

/** `[auth]`: users from an htpasswd file and [[auth.user]] tables; secrets resolved now. */
function readAuth(a: TableReader, env: NodeJS.ProcessEnv): AuthConfig {
  const users = new Map<string, AuthUser>();
  const htpasswd = a.file('htpasswd', true);
  const htRoles = readRoles(a, 'htpasswd_roles', ['pull', 'push']);
  if (htpasswd !== undefined) readHtpasswd(a, htpasswd, htRoles, users);
  a.tables('user').forEach((u) => {
    const name = u.string('name');
    if (name === undefined || !/^[A-Za-z0-9._@-]{1,64}$/.test(name)) throw new ConfigError(u.key('name'), 'is required: 1 to 64 letters, digits and . _ @ -');
    if (users.has(name)) throw new ConfigError(u.key('name'), `user "${name}" is defined twice`);
    const hash = u.string('password_hash');
    const password = u.string('password');
    const passwordEnv = u.string('password_env');
    const passwordFile = u.file('password_file', true);
    const given = [hash, password, passwordEnv, passwordFile].filter((v) => v !== undefined).length;
    if (given !== 1) throw new ConfigError(u.key('password_hash'), 'set exactly one of password_hash (bcrypt), password_env, password_file, password');
    const roles = readRoles(u, 'roles', ['pull']);
    u.done();
    const user: AuthUser = { name, roles };
    if (hash !== undefined) {
      if (!BCRYPT.test(hash)) throw new ConfigError(u.key('password_hash'), 'is not a bcrypt hash ($2y$..., from htpasswd -nB or any bcrypt tool)');
      user.bcryptHash = hash;
    } else if (passwordEnv !== undefined) {
      const v = env[passwordEnv];
      if (v === undefined || v === '') throw new ConfigError(u.key('password_env'), `environment variable ${passwordEnv} is not set`);
      user.password = v;
    } else if (passwordFile !== undefined) {
      user.password = readFileSync(passwordFile, 'utf8').replace(/\r?\n$/, '');
    } else {
      user.password = password ?? '';
    }
    if (user.password === '') throw new ConfigError(u.key('password'), 'must not be empty');
    users.set(name, user);
  });
  const tokenTtlMs = a.duration('token_ttl') ?? 5 * 60_000;
  const anonymousLocalPull = a.bool('anonymous_local_pull') ?? false;
  a.done();
  if (users.size === 0) throw new ConfigError(a.path, 'has no users: give it htpasswd = "FILE" or [[auth.user]] tables, or remove [auth]');
  return { users, tokenTtlMs, anonymousLocalPull };
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** A log level given outside the file (`--log-level`, `LOG_LEVEL`), checked; `source` names it in the error. */
export function parseLogLevel(value: string, source: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(value)) throw new ConfigError(source, `"${value}" is not one of ${LOG_LEVELS.join(', ')}`);
  return value as LogLevel;
}

/**
 * Validates a parsed TOML document into a Config.
 * `baseDir` resolves relative paths; `env` supplies password_env values.
 * Throws ConfigError naming the first bad key.
 */
export function validateConfig(doc: Table, baseDir: string, env: NodeJS.ProcessEnv = process.env): Config {
  // Every problem is collected (a value that fails is replaced by its default so the rest can be
  // checked) and all are reported at once, each naming its key.
  const problems: ConfigError[] = [];
  const ok = <T>(fn: () => T, fallback: T): T => {
    try {
      return fn();
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      problems.push(...e.problems);
      return fallback;
    }
  };
  const problem = (keyPath: string, reason: string): void => {
    problems.push(new ConfigError(keyPath, reason));
  };
  const root = new TableReader(doc, '', baseDir);
  const defaultRegistryRaw = ok(() => root.string('default_registry'), undefined) ?? DOCKER_HUB;

  const server = ok(() => root.table_('server'), undefined);
  const listen = ok(() => parseListen(server?.key('listen') ?? 'server.listen', server?.string('listen') ?? '127.0.0.1:5000'), { host: '127.0.0.1', port: 5000 });
  const dataDir = resolve(baseDir, ok(() => server?.string('data_dir'), undefined) ?? './data');
  const tlsCert = ok(() => (server === undefined ? undefined : pemFile(server, 'tls_cert', 'certificate')), undefined);
  const tlsKey = ok(() => (server === undefined ? undefined : pemFile(server, 'tls_key', 'key')), undefined);
  if (server !== undefined && tlsCert !== undefined && tlsKey !== undefined) {
    ok(() => {
      try {
        createSecureContext({ cert: readFileSync(tlsCert), key: readFileSync(tlsKey) });
      } catch (e) {
        throw new ConfigError(server.key('tls_key'), `does not go with tls_cert ${tlsCert}, or one of them is unusable: ${(e as Error).message}`);
      }
    }, undefined);
  }
  if (server !== undefined && server.has('tls_cert') !== server.has('tls_key')) {
    problem(server.key(server.has('tls_cert') ? 'tls_key' : 'tls_cert'), 'tls_cert and tls_key go together');
  }
  const warmUp = ok(() => server?.bool('warm_up'), undefined) ?? true;
  const externalUrl = ok(() => readExternalUrl(server), undefined);
  const drainFile = ok(() => server?.string('drain_file'), undefined);
  if (drainFile === '') problem(server?.key('drain_file') ?? 'server.drain_file', 'must not be empty (leave it out for no drain file)');
  const shutdownDelayMs = ok(() => server?.duration('shutdown_delay'), undefined) ?? 0;
  const shutdownTimeoutMs = ok(() => server?.duration('shutdown_timeout'), undefined) ?? 30_000;
  ok(() => server?.done(), undefined);

  const cache = ok(() => root.table_('cache'), undefined);
  const tagTtlMs = ok(() => cache?.duration('tag_ttl'), undefined) ?? 10 * 60_000;
  const maxSizeBytes = ok(() => cache?.size('max_size'), undefined);
  const offline = ok(() => cache?.bool('offline'), undefined) ?? false;
  const memoryManifestBytes = ok(() => cache?.size('memory_manifest_bytes'), undefined) ?? 64 * 1024 * 1024;
  const directIo = ok(() => cache?.bool('direct_io'), undefined) ?? true;
  const budget = ok(() => readBudget(cache, maxSizeBytes), { evictAt: 0.9, evictTo: 0.8, evictGraceMs: 5 * 60_000, evictLocal: false });
  const pinsRaw = ok(() => cache?.strings('pins'), undefined) ?? [];
  const pinsKey = cache?.key('pins') ?? 'cache.pins';
  ok(() => cache?.done(), undefined);

  const upstream = ok(() => root.table_('upstream'), undefined);
  const timeouts = ok(() => readTimeouts(upstream, { connectMs: 10_000, headersMs: 30_000, bodyIdleMs: 60_000, revalidateMs: 2_000 }), { connectMs: 10_000, headersMs: 30_000, bodyIdleMs: 60_000, revalidateMs: 2_000 });
  const retryDefaults: RetryConfig = { retries: 2, retryBudgetMs: 10_000, resumeAttempts: 5 };
  const retry = ok(() => readRetry(upstream, retryDefaults), retryDefaults);
  ok(() => upstream?.done(), undefined);

  const log = ok(() => root.table_('log'), undefined);
  // LOG_LEVEL in the environment wins over the file (a container's or unit's override).
  const fileLevel = ok(() => log?.string('level'), undefined);
  const level = ok(() => (env.LOG_LEVEL !== undefined && env.LOG_LEVEL !== '' ? parseLogLevel(env.LOG_LEVEL, 'LOG_LEVEL (environment)') : parseLogLevel(fileLevel ?? 'info', log?.key('level') ?? 'log.level')), 'info' as LogLevel);
  const logFormatRaw = ok(() => log?.string('format'), undefined) ?? 'json';
  if (logFormatRaw !== 'json' && logFormatRaw !== 'text') problem(log?.key('format') ?? 'log.format', `"${logFormatRaw}" is not json or text`);
  const logFormat = logFormatRaw === 'text' ? 'text' : 'json';
  ok(() => log?.done(), undefined);

  const metricsTable = ok(() => root.table_('metrics'), undefined);
  const metrics = { enabled: ok(() => metricsTable?.bool('enabled'), undefined) ?? true, public: ok(() => metricsTable?.bool('public'), undefined) ?? false };
  if (!metrics.enabled && metricsTable?.has('public') === true) problem(metricsTable.key('public'), 'has no effect with [metrics] enabled = false: remove one of the two');
  ok(() => metricsTable?.done(), undefined);

  const apiTable = ok(() => root.table_('api'), undefined);
  const apiEnabled = ok(() => apiTable?.bool('enabled'), undefined) ?? true;
  const apiListenRaw = ok(() => apiTable?.string('listen'), undefined);
  const apiListen = apiListenRaw === undefined || apiListenRaw === '' ? undefined : ok(() => parseListen(apiTable?.key('listen') ?? 'api.listen', apiListenRaw), undefined);
  ok(() => apiTable?.done(), undefined);

  const authTable = ok(() => root.table_('auth'), undefined);
  const auth = authTable === undefined ? undefined : ok(() => readAuth(authTable, env), undefined);
  if (authTable === undefined && metricsTable?.has('public') === true && metrics.enabled) {
    problem(metricsTable.key('public'), 'has no effect without [auth]: /metrics is open to anyone when the mirror has no users (remove the key, or add [auth])');
  }
  const uploadsTable = ok(() => root.table_('uploads'), undefined);
  const abandonAfterMs = ok(() => uploadsTable?.duration('abandon_after'), undefined) ?? 24 * 3600_000;
  ok(() => uploadsTable?.done(), undefined);

  const registries = ok(() => root.tables('registry'), []).flatMap((r) => {
    const reg = ok(() => readRegistry(r, { tagTtlMs, timeouts, retry, offline }, env), undefined);
    return reg === undefined ? [] : [reg];
  });
  const hosts = new Set<string>();
  registries.forEach((reg, i) => {
    if (hosts.has(reg.host)) problem(`registry[${i}].host`, `"${reg.host}" is configured twice`);
    hosts.add(reg.host);
  });
  // Hosts of [[registry]] tables that failed still count, so their namespaces are not reported too.
  for (const r of ok(() => root.tables('registry'), [])) {
    const host = ok(() => r.string('host'), undefined);
    if (host !== undefined) hosts.add(ok(() => canonicalRegistryHost(host), host));
  }

  const namespaces: NamespaceConfig[] = ok(() => root.tables('namespace'), []).flatMap((n) => {
    const ns = ok((): NamespaceConfig => {
      const name = n.string('name');
      if (name === undefined) throw new ConfigError(n.key('name'), 'is required');
      if (!/^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/.test(name) || name === 'v2' || name.startsWith('_')) {
        throw new ConfigError(n.key('name'), `"${name}" is not a valid namespace: one path component of lower-case letters, digits and . _ - (not "v2")`);
      }
      const regRaw = n.string('registry');
      n.done();
      const out: NamespaceConfig = { name };
      if (regRaw !== undefined) {
        const registry = canonicalRegistryHost(regRaw);
        if (!hosts.has(registry)) throw new ConfigError(n.key('registry'), `"${regRaw}" is not a configured [[registry]] host (${[...hosts].join(', ') || 'none'})`);
        out.registry = registry;
      }
      return out;
    }, undefined);
    return ns === undefined ? [] : [ns];
  });
  const nsNames = new Set<string>();
  namespaces.forEach((ns, i) => {
    if (nsNames.has(ns.name)) problem(`namespace[${i}].name`, `"${ns.name}" is configured twice`);
    nsNames.add(ns.name);
  });

  const defaultRegistry = defaultRegistryRaw === '' ? '' : ok(() => canonicalRegistryHost(defaultRegistryRaw), defaultRegistryRaw);
  if (defaultRegistry !== '' && !hosts.has(defaultRegistry)) {
    problem(
      'default_registry',
      `"${defaultRegistryRaw}" is not a configured [[registry]] host (${[...hosts].join(', ') || 'none'}): add a [[registry]] for it, or set default_registry = "" to refuse paths without a registry`,
    );
  }
  ok(() => root.done(), undefined);

  // Pins name images as clients pull them; resolved with the routing these tables define.
  const table = buildRoutingTable(registries.map((r) => r.host), namespaces, problems.length === 0 ? defaultRegistry : '');
  const pins = problems.length > 0 ? [] : pinsRaw.flatMap((image, i) => {
    try {
      const r = routeImage(image, table);
      return [{ image, repo: r.route.localRepo, reference: referenceOf(r) }];
    } catch (e) {
      problem(`${pinsKey}[${i}]`, `"${image}": ${(e as Error).message} (pins name images as they are pulled, e.g. "gcr.io/distroless/static:nonroot")`);
      return [];
    }
  });
  if (problems.length > 0) throw ConfigError.all(problems);

  const config: Config = {
    defaultRegistry,
    server: { listen, dataDir, warmUp, shutdownDelayMs, shutdownTimeoutMs, ...(drainFile === undefined ? {} : { drainFile: resolve(baseDir, drainFile) }) },
    cache: { tagTtlMs, offline, memoryManifestBytes, directIo, ...budget, pins },
    log: { level, format: logFormat },
    metrics,
    api: apiListen === undefined ? { enabled: apiEnabled } : { enabled: apiEnabled, listen: apiListen },
    registries,
    namespaces,
    uploads: { abandonAfterMs },
  };
  if (auth !== undefined) config.auth = auth;
  if (tlsCert !== undefined && tlsKey !== undefined) {
    config.server.tlsCert = tlsCert;
    config.server.tlsKey = tlsKey;
  }
  if (maxSizeBytes !== undefined) config.cache.maxSizeBytes = maxSizeBytes;
  if (externalUrl !== undefined) config.server.externalUrl = externalUrl;
  return config;
}

/** A percentage of max_size: "90%" (or a whole number 1-100). */
function percent(r: TableReader, name: string): number | undefined {
  if (!r.has(name)) return undefined;
  const raw = r.string(name) ?? '';
  const m = /^(\d{1,3}(?:\.\d+)?)\s*%$/.exec(raw.trim());
  const v = m === null ? NaN : Number(m[1]);
  if (!(v > 0 && v <= 100)) throw new ConfigError(r.key(name), `"${raw}" is not a percentage of max_size: use e.g. "90%"`);
  return v / 100;
}

/** The byte budget keys of [cache] (DESIGN §11). evict_at / evict_to without max_size would do nothing: refused. */
function readBudget(cache: TableReader | undefined, maxSizeBytes: number | undefined): Pick<Config['cache'], 'evictAt' | 'evictTo' | 'minFreeBytes' | 'evictGraceMs' | 'evictLocal'> {
  const evictAt = cache === undefined ? undefined : percent(cache, 'evict_at');
  const evictTo = cache === undefined ? undefined : percent(cache, 'evict_to');
  if (maxSizeBytes === undefined) {
    for (const [k, v] of [['evict_at', evictAt], ['evict_to', evictTo]] as const) {
      if (v !== undefined) throw new ConfigError(cache?.key(k) ?? `cache.${k}`, 'is a share of max_size: set [cache] max_size too (e.g. max_size = "50GiB")');
    }
  }
  if (maxSizeBytes === 0) throw new ConfigError(cache?.key('max_size') ?? 'cache.max_size', 'must be more than 0 (leave it out for no byte budget)');
  const at = evictAt ?? 0.9;
  const to = evictTo ?? Math.min(0.8, at);
  if (to > at) throw new ConfigError(cache?.key('evict_to') ?? 'cache.evict_to', `must not be above evict_at (${Math.round(at * 100)}%): eviction starts at evict_at and stops at evict_to`);
  const minFreeBytes = cache?.size('min_free');
  const evictGraceMs = cache?.duration('evict_grace') ?? 5 * 60_000;
  const evictLocal = cache?.bool('evict_local') ?? false;
  return { evictAt: at, evictTo: to, evictGraceMs, evictLocal, ...(minFreeBytes === undefined || minFreeBytes === 0 ? {} : { minFreeBytes }) };
}

/** Parses TOML text; syntax errors become ConfigError with the line and column. */
export function parseConfigText(text: string, baseDir: string, env: NodeJS.ProcessEnv = process.env): Config {
  let doc: Table;
  try {
    doc = TOML.parse(text) as Table;
  } catch (e) {
    const err = e as { line?: number; col?: number; message?: string };
    const where = err.line !== undefined ? `line ${err.line + 1}, column ${(err.col ?? 0) + 1}: ` : '';
    throw new ConfigError('', `TOML syntax error: ${where}${(err.message ?? String(e)).split('\n')[0]}`);
  }
  return validateConfig(doc, baseDir, env);
}

/**
 * Loads the configuration from `file`, or the embedded default when `file` is undefined.
 * Relative paths in the file resolve against the file's folder; in the embedded default, against
 * the working directory (so `./data` is under the folder regmirror was started in).
 */
export function loadConfig(file: string | undefined, env: NodeJS.ProcessEnv = process.env): Config {
  if (file === undefined) return parseConfigText(readFileSync(DEFAULT_CONFIG_PATH, 'utf8'), process.cwd(), env);
  const path = resolve(file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError('', `cannot read config file ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  return parseConfigText(text, dirname(path), env);
}
