/**
 * What the client is told when the upstream (or the cache) fails: one mapping from UpstreamError
 * kinds, verification and storage failures to RegistryErrors whose messages say what to fix. The
 * statuses come from the one table (oci/errors.ts) except where noted next to the code.
 */
import { RegistryError } from '../oci/index.ts';
import { BlobVerifyError } from '../store/index.ts';
import { UpstreamError, type UpstreamClient } from '../upstream/index.ts';
import type { Route } from '../routing/index.ts';
import type { Logger } from '../log/index.ts';

/** A failure of the mirror's own storage, for the client, without leaking paths. */
export function storageUnavailable(cause: unknown): RegistryError {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  return new RegistryError('UNAVAILABLE', `the mirror could not read or write its cache${typeof code === 'string' && /^E[A-Z]+$/.test(code) ? ` (${code})` : ''}; see the mirror log`, { cause });
}

export type UnknownCode = 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' | 'NAME_UNKNOWN';

export class UpstreamErrors {
  constructor(
    private readonly upstreams: ReadonlyMap<string, UpstreamClient>,
    private readonly log: Logger,
  ) {}

  /** Content that is neither cached nor fetchable (offline registry or a local namespace). */
  offlineUnknown(code: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN', route: Route, what: string): RegistryError {
    const where = route.registry === undefined ? `local namespace "${route.namespace ?? ''}"` : `${route.registry} (the mirror is offline for it)`;
    return new RegistryError(code, `${what} of ${route.upstreamRepo} is not in the cache and cannot be fetched: ${where}`);
  }

  /**
   * Maps an upstream, verification or storage failure to the error the client sees: failures of
   * the upstream itself are UPSTREAM_FAILED (502: the mirror is a gateway), the mirror's own are
   * UNAVAILABLE (503).
   */
  toClient(e: unknown, route: Route, unknown: UnknownCode, what: string): RegistryError {
    if (e instanceof RegistryError) return e;
    const reg = route.registry ?? 'local';
    if (e instanceof BlobVerifyError) {
      return new RegistryError('UPSTREAM_FAILED', `${reg} sent content that failed verification (${e.message}); nothing was cached, retry`);
    }
    if (!(e instanceof UpstreamError)) {
      this.log.error({ err: e, registry: reg }, 'unexpected error');
      return new RegistryError('UNKNOWN', 'internal error; see the mirror log');
    }
    const detail = { registry: reg, repository: route.upstreamRepo };
    switch (e.kind) {
      case 'not_found':
        return new RegistryError(unknown, `${what} not found in ${route.upstreamRepo} at ${reg}`, { detail });
      case 'unauthorized': {
        const key = this.upstreams.get(reg)?.registry.auth?.configKey;
        return new RegistryError(
          'UNAUTHORIZED',
          key === undefined
            ? `${reg} requires credentials for ${route.upstreamRepo}; give its [[registry]] a credential: username + password_env (or password / password_file), docker_config, gcr_key_file or token`
            : `${reg} rejected the mirror's credentials (${key} of its [[registry]]) for ${route.upstreamRepo}; check them`,
          { detail },
        );
      }
      case 'denied': {
        const key = this.upstreams.get(reg)?.registry.auth?.configKey ?? 'none configured';
        return new RegistryError('DENIED', `${reg} denied the mirror access to ${route.upstreamRepo} (credential: ${key}); check that account's permissions`, { detail });
      }
      case 'toomanyrequests':
        return new RegistryError('TOOMANYREQUESTS', `${reg} is rate limiting the mirror; retry later`, {
          detail,
          ...(e.retryAfter === undefined ? {} : { headers: { 'Retry-After': e.retryAfter } }),
        });
      case 'unavailable':
        return new RegistryError('UPSTREAM_FAILED', `${reg} is unreachable or failing (${e.message}) and ${what} is not cached`, { detail });
      default:
        return new RegistryError('UPSTREAM_FAILED', `${reg} sent an unusable answer for ${what}: ${e.message}`, { detail });
    }
  }
}
