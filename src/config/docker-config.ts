/**
 * Reads credentials for one registry out of a Docker `config.json` (pullCredentialConfigPath),
 * the way Docker does: `credHelpers.<host>` first, then `credsStore`, then `auths.<host>`
 * (`auth` = base64 user:pass, or `username`/`password`, or `identitytoken` as an OAuth2 refresh
 * token). Keys of `auths` match on host alone: scheme and path are ignored, and Docker Hub's
 * `https://index.docker.io/v1/` is docker.io.
 */
import { readFileSync } from 'node:fs';
import { canonicalRegistryHost, DOCKER_HUB } from './docker-hub.ts';
import type { CredentialConfig } from './types.ts';

/** The server URL Docker hands credential helpers for a registry. */
export function helperServerUrl(host: string): string {
  return host === DOCKER_HUB ? 'https://index.docker.io/v1/' : host;
}

/** Host part of an `auths` key: "https://index.docker.io/v1/" → "docker.io", "gcr.io/x" → "gcr.io". */
export function authsKeyHost(key: string): string {
  const noScheme = key.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  return canonicalRegistryHost(noScheme.split('/')[0] ?? '');
}

type Json = Record<string, unknown>;

/**
 * Resolves `host`'s credentials from the config.json at `path`. Throws Error with a reason that names
 * neither secrets nor file contents; the caller prefixes the key path.
 */
export function readDockerConfig(path: string, host: string, configKey: string): CredentialConfig {
  let doc: Json;
  try {
    const v: unknown = JSON.parse(readFileSync(path, 'utf8'));
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    doc = v as Json;
  } catch (e) {
    throw new Error(`${path} is not a readable Docker config.json (${(e as NodeJS.ErrnoException).code ?? 'invalid JSON'})`);
  }
  const helpers = (doc.credHelpers ?? {}) as Json;
  for (const [k, v] of Object.entries(helpers)) {
    if (authsKeyHost(k) === host && typeof v === 'string' && v !== '') return { source: 'helper', helper: v, serverUrl: helperServerUrl(host), configKey };
  }
  if (typeof doc.credsStore === 'string' && doc.credsStore !== '') {
    return { source: 'helper', helper: doc.credsStore, serverUrl: helperServerUrl(host), configKey };
  }
  const auths = (doc.auths ?? {}) as Json;
  for (const [k, v] of Object.entries(auths)) {
    if (authsKeyHost(k) !== host || typeof v !== 'object' || v === null) continue;
    const e = v as Json;
    let username = typeof e.username === 'string' ? e.username : '';
    let password = typeof e.password === 'string' ? e.password : '';
    if (typeof e.auth === 'string' && e.auth !== '') {
      const decoded = Buffer.from(e.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) throw new Error(`auths["${k}"].auth in ${path} is not base64 of user:password`);
      username = decoded.slice(0, colon);
      password = decoded.slice(colon + 1);
    }
    if (typeof e.identitytoken === 'string' && e.identitytoken !== '') {
      return { source: 'static', configKey, credential: { kind: 'refresh', username, refreshToken: e.identitytoken } };
    }
    if (username !== '' || password !== '') return { source: 'static', configKey, credential: { kind: 'basic', username, password } };
  }
  throw new Error(`${path} has no credentials for "${host}" (looked in credHelpers, credsStore and auths)`);
}
