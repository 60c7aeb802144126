/**
 * Domain errors of the stores: what a caller can act on, with the facts it needs, and no HTTP.
 * server/errors.ts maps them to OCI errors through the one table (oci/errors.ts).
 */

/** An upload a client's request refers to cannot take it. */
export class UploadError extends Error {
  constructor(
    /** unknown: no such upload for the repository; out_of_order: a chunk not at the end; digest_mismatch: the bytes hash otherwise. */
    readonly reason: 'unknown' | 'out_of_order' | 'digest_mismatch',
    message: string,
    /** out_of_order: the bytes the upload holds (resume there); digest_mismatch: expected and actual digests. */
    readonly facts: { size?: number; expected?: string; actual?: string } = {},
  ) {
    super(message);
    this.name = 'UploadError';
  }
}
