/**
 * What a reloaded configuration (SIGHUP) changes. Most keys apply to the running server; a few
 * shape what was built at start-up (the listeners, the data folder, the stores, whether there are
 * users or metrics at all) and keep their start-up values until a restart: the plan names them, so
 * the one log line of the reload says so instead of silently ignoring them.
 */
import type { Config } from '../config/index.ts';

export interface ReloadPlan {
  /** `next` with the restart-only keys at their running values: what the server runs on from now. */
  effective: Config;
  /** Sections or keys whose new values apply now (registries are reported by the runtime). */
  changed: string[];
  /** Keys whose new values wait for a restart. */
  restartNeeded: string[];
}

/** JSON with Maps and Sets as arrays (auth users), for comparing two values. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (x instanceof Map ? [...x.entries()] : x instanceof Set ? [...x] : x));
}

const same = (a: unknown, b: unknown): boolean => canonical(a) === canonical(b);

export function reloadPlan(old: Config, next: Config): ReloadPlan {
  const restartNeeded: string[] = [];
  /** Keeps the running value of a restart-only key, noting it when the new one differs. */
  const keep = <T>(key: string, running: T, wanted: T): T => {
    if (!same(running, wanted)) restartNeeded.push(key);
    return running;
  };
  const tlsOn = (c: Config): boolean => c.server.tlsCert !== undefined;
  const server = {
    ...next.server,
    listen: keep('server.listen', old.server.listen, next.server.listen),
    dataDir: keep('server.data_dir', old.server.dataDir, next.server.dataDir),
    warmUp: keep('server.warm_up', old.server.warmUp, next.server.warmUp),
  };
  if (tlsOn(old) !== tlsOn(next)) {
    restartNeeded.push(tlsOn(old) ? 'server.tls_cert / tls_key (removed: TLS stays on)' : 'server.tls_cert / tls_key (added: TLS stays off)');
    delete server.tlsCert;
    delete server.tlsKey;
    if (old.server.tlsCert !== undefined && old.server.tlsKey !== undefined) {
      server.tlsCert = old.server.tlsCert;
      server.tlsKey = old.server.tlsKey;
    }
  }
  const effective: Config = {
    ...next,
    server,
    cache: {
      ...next.cache,
      directIo: keep('cache.direct_io', old.cache.directIo, next.cache.directIo),
      memoryManifestBytes: keep('cache.memory_manifest_bytes', old.cache.memoryManifestBytes, next.cache.memoryManifestBytes),
    },
    log: { ...next.log, format: keep('log.format', old.log.format, next.log.format) },
    metrics: { ...next.metrics, enabled: keep('metrics.enabled', old.metrics.enabled, next.metrics.enabled) },
    api: keep('[api] enabled / listen', old.api, next.api),
  };
  delete effective.auth;
  if ((old.auth === undefined) !== (next.auth === undefined)) {
    restartNeeded.push(old.auth === undefined ? '[auth] (added: the mirror stays without users)' : '[auth] (removed: its users stay)');
    if (old.auth !== undefined) effective.auth = old.auth;
  } else if (next.auth !== undefined) effective.auth = next.auth;

  const changed: string[] = [];
  const note = (key: string, a: unknown, b: unknown): void => {
    if (!same(a, b)) changed.push(key);
  };
  note('default_registry', old.defaultRegistry, effective.defaultRegistry);
  note('[[namespace]]', old.namespaces, effective.namespaces);
  note('[auth] users', old.auth, effective.auth);
  note('log.level', old.log.level, effective.log.level);
  note('metrics.public', old.metrics.public, effective.metrics.public);
  note('server.external_url', old.server.externalUrl, effective.server.externalUrl);
  note('server.drain_file', old.server.drainFile, effective.server.drainFile);
  note('server.shutdown_delay / shutdown_timeout', [old.server.shutdownDelayMs, old.server.shutdownTimeoutMs], [effective.server.shutdownDelayMs, effective.server.shutdownTimeoutMs]);
  note('cache.tag_ttl / offline', [old.cache.tagTtlMs, old.cache.offline], [effective.cache.tagTtlMs, effective.cache.offline]);
  const budget = (c: Config): unknown[] => [c.cache.maxSizeBytes, c.cache.evictAt, c.cache.evictTo, c.cache.minFreeBytes, c.cache.evictGraceMs, c.cache.evictLocal];
  note('cache budget (max_size, evict_at, evict_to, min_free, evict_grace, evict_local)', budget(old), budget(effective));
  note('cache.pins', old.cache.pins, effective.cache.pins);
  note('uploads.abandon_after', old.uploads, effective.uploads);
  return { effective, changed, restartNeeded };
}
