/** Upstream failures, classified so the mirror can decide: serve stale, pass on, or fail. */

export type UpstreamErrorKind =
  | 'not_found'
  | 'unauthorized'
  | 'denied'
  | 'toomanyrequests'
  | 'unavailable'
  | 'bad_response';

/** An upstream request that did not produce what was asked. `code` is stable: `ERR_UPSTREAM_<KIND>`. */
export class UpstreamError extends Error {
  readonly code: string;
  constructor(
    readonly kind: UpstreamErrorKind,
    message: string,
    readonly status?: number,
    readonly retryAfter?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'UpstreamError';
    this.code = `ERR_UPSTREAM_${kind.toUpperCase()}`;
  }

  /** True when a cached copy should be served instead (DESIGN §2: unreachable, 5xx, 429, timeout). */
  get servesStale(): boolean {
    return this.kind === 'unavailable' || this.kind === 'toomanyrequests';
  }
}
