/**
 * What the client is told when a handler fails: every error goes through the one table
 * (oci/errors.ts). RegistryErrors pass as they are; the stores' domain errors become their rows
 * here; a failure of the mirror's own storage or metadata is UNAVAILABLE (logged); anything else
 * is UNKNOWN (logged with its stack), never a crash.
 */
import { RegistryError } from '../oci/index.ts';
import { UploadError, isStorageError } from '../store/index.ts';
import { isMetaStoreFailure } from '../meta/index.ts';
import type { Logger } from '../log/index.ts';
import { storageUnavailable } from '../mirror/index.ts';

export function toRegistryError(e: unknown, log: Logger, reqId: string | undefined): RegistryError {
  if (e instanceof RegistryError) return e;
  if (e instanceof UploadError) {
    switch (e.reason) {
      case 'unknown':
        return new RegistryError('BLOB_UPLOAD_UNKNOWN', e.message);
      case 'out_of_order':
        // distribution-spec "Pushing a blob in chunks": the Range the upload holds, to resume from.
        return new RegistryError('UPLOAD_OUT_OF_ORDER', e.message, { headers: { Range: `0-${Math.max((e.facts.size ?? 0) - 1, 0)}` } });
      case 'digest_mismatch':
        return new RegistryError('DIGEST_INVALID', e.message, { detail: { expected: e.facts.expected, actual: e.facts.actual } });
    }
  }
  if (isMetaStoreFailure(e) || isStorageError(e)) {
    log.error({ reqId, err: e }, 'the cache storage or metadata failed');
    return storageUnavailable(e);
  }
  log.error({ reqId, err: e }, 'unhandled error');
  return new RegistryError('UNKNOWN', 'internal error; see the mirror log');
}
