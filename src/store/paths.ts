/**
 * The one place that builds paths on disk. Layout under the data directory:
 *
 *   <data_dir>/
 *     blobs/
 *       sha256/<first 2 hex>/<64 hex>      committed content (blobs and manifests alike)
 *       sha512/<first 2 hex>/<128 hex>
 *     tmp/p<pid>-<start>/<random>.partial   fills in progress (same filesystem, for rename), one folder
 *                                           per live process (owner.ts): <start> is the process's
 *                                           start time, so a reused pid is not taken for its owner
 *     quarantine/<alg>-<hex>-<ms>           corrupt content moved aside by `cache verify --repair`
 *     meta.db (+ -wal, -shm)                SQLite metadata
 *
 * Only validated digests reach these functions (oci.parseDigest), so no path ever leaves data_dir.
 */
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Digest } from '../oci/index.ts';

export function blobsRoot(dataDir: string): string {
  return join(dataDir, 'blobs');
}

export function blobPath(dataDir: string, d: Digest): string {
  return join(dataDir, 'blobs', d.algorithm, d.hex.slice(0, 2), d.hex);
}

export function tmpDir(dataDir: string): string {
  return join(dataDir, 'tmp');
}

/** The temp folder of the process whose owner token (ownerToken()) is `owner`. */
export function processTmpDir(dataDir: string, owner: string): string {
  return join(dataDir, 'tmp', owner);
}

export function newTempPath(dir: string): string {
  return join(dir, `${randomBytes(12).toString('hex')}.partial`);
}

export function quarantinePath(dataDir: string, d: Digest, now: number): string {
  return join(dataDir, 'quarantine', `${d.algorithm}-${d.hex}-${now}`);
}

export function metaDbPath(dataDir: string): string {
  return join(dataDir, 'meta.db');
}
