/**
 * OCI Distribution error codes and the one table that maps them to HTTP statuses.
 * Spec: OCI distribution-spec §"Error Codes"; statuses follow distribution/distribution errcode.
 */

/** The error codes regmirror emits; stable strings clients match on. */
export type OciErrorCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'TAG_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'RANGE_INVALID'
  | 'UNAVAILABLE'
  | 'UNKNOWN';

/**
 * The one table: every error the mirror answers with, by kind, with its OCI code and HTTP status.
 * A kind named after an OCI code has the status distribution/distribution's errcode gives it. The
 * other kinds reuse an OCI code with another status, each for the reason noted beside it; nothing
 * outside this table chooses a status.
 */
export const ERRORS = {
  BLOB_UNKNOWN: { code: 'BLOB_UNKNOWN', status: 404 },
  BLOB_UPLOAD_INVALID: { code: 'BLOB_UPLOAD_INVALID', status: 400 },
  BLOB_UPLOAD_UNKNOWN: { code: 'BLOB_UPLOAD_UNKNOWN', status: 404 },
  DIGEST_INVALID: { code: 'DIGEST_INVALID', status: 400 },
  MANIFEST_BLOB_UNKNOWN: { code: 'MANIFEST_BLOB_UNKNOWN', status: 404 },
  MANIFEST_INVALID: { code: 'MANIFEST_INVALID', status: 400 },
  MANIFEST_UNKNOWN: { code: 'MANIFEST_UNKNOWN', status: 404 },
  NAME_INVALID: { code: 'NAME_INVALID', status: 400 },
  NAME_UNKNOWN: { code: 'NAME_UNKNOWN', status: 404 },
  SIZE_INVALID: { code: 'SIZE_INVALID', status: 400 },
  TAG_INVALID: { code: 'TAG_INVALID', status: 400 },
  UNAUTHORIZED: { code: 'UNAUTHORIZED', status: 401 },
  DENIED: { code: 'DENIED', status: 403 },
  /** A method the endpoint does not take. */
  UNSUPPORTED: { code: 'UNSUPPORTED', status: 405 },
  TOOMANYREQUESTS: { code: 'TOOMANYREQUESTS', status: 429 },
  RANGE_INVALID: { code: 'RANGE_INVALID', status: 416 },
  /** The mirror itself cannot serve now (its storage or metadata failed). */
  UNAVAILABLE: { code: 'UNAVAILABLE', status: 503 },
  UNKNOWN: { code: 'UNKNOWN', status: 500 },

  /** The upstream failed or sent something unusable: the mirror is a gateway (RFC 9110 §15.6.3, 502). */
  UPSTREAM_FAILED: { code: 'UNAVAILABLE', status: 502 },
  /** The mirror's own disk cannot take the content (RFC 4918 §11.5, 507 Insufficient Storage). */
  CACHE_FULL: { code: 'UNAVAILABLE', status: 507 },
  /** A request body larger than the mirror takes (RFC 9110 §15.5.14, 413). */
  TOO_LARGE: { code: 'SIZE_INVALID', status: 413 },
  /** A parameter or request the mirror does not accept, whatever the method (400). */
  BAD_REQUEST: { code: 'UNSUPPORTED', status: 400 },
  /**
   * An endpoint this mirror does not implement: 404, as distribution-spec "Listing Referrers"
   * demands of a registry without the referrers API (clients then fall back to the tag schema).
   */
  ENDPOINT_UNSUPPORTED: { code: 'UNSUPPORTED', status: 404 },
  /** distribution-spec "Pushing a blob in chunks": a chunk out of order is 416, with the Range accepted so far. */
  UPLOAD_OUT_OF_ORDER: { code: 'BLOB_UPLOAD_INVALID', status: 416 },
  /** HTTP requests Node's parser rejects (server/client-error.ts), RFC 9110 §15.5 / RFC 6585 §5. */
  HTTP_HEADERS_TOO_LARGE: { code: 'SIZE_INVALID', status: 431 },
  HTTP_METHOD_UNKNOWN: { code: 'UNSUPPORTED', status: 501 },
  HTTP_TIMEOUT: { code: 'UNKNOWN', status: 408 },
  HTTP_MALFORMED: { code: 'UNKNOWN', status: 400 },
} as const satisfies Record<string, { code: OciErrorCode; status: number }>;

/** A row of the table. */
export type ErrorKind = keyof typeof ERRORS;

/**
 * An error that is reported to the client as an OCI error envelope. Its `kind` is a row of ERRORS,
 * which gives the OCI code and the status; `headers` are added to the response (e.g. Retry-After).
 */
export class RegistryError extends Error {
  readonly kind: ErrorKind;
  readonly code: OciErrorCode;
  readonly status: number;
  readonly detail: unknown;
  readonly headers: Record<string, string>;

  constructor(kind: ErrorKind, message: string, opts: { detail?: unknown; headers?: Record<string, string>; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RegistryError';
    this.kind = kind;
    this.code = ERRORS[kind].code;
    this.status = ERRORS[kind].status;
    this.detail = opts.detail;
    this.headers = opts.headers ?? {};
  }
}

/** Renders the OCI error envelope `{"errors":[{code,message,detail}]}` as a JSON string. */
export function renderErrorBody(err: RegistryError): string {
  const entry: { code: string; message: string; detail?: unknown } = { code: err.code, message: err.message };
  if (err.detail !== undefined) entry.detail = err.detail;
  return JSON.stringify({ errors: [entry] });
}

/** Shortens client-supplied text for an error message: at most `max` characters, "..." when cut. */
export function clip(s: string, max = 80): string {
  return s.length > max ? `${s.slice(0, max - 3)}...` : s;
}
