/**
 * Content digests: `algorithm:encoded` (OCI image-spec descriptor.md §Digests).
 * regmirror accepts sha256 and sha512, each in its canonical lower-case hex form.
 */
import { createHash, type Hash } from 'node:crypto';
import { RegistryError, clip } from './errors.ts';

/** A validated digest split into its parts. */
export interface Digest {
  readonly algorithm: 'sha256' | 'sha512';
  readonly hex: string;
  /** `algorithm:hex`, the canonical string. */
  readonly value: string;
}

const HEX_LENGTH = { sha256: 64, sha512: 128 } as const;
const GENERIC_DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/**
 * Parses and validates a digest string.
 * Throws RegistryError DIGEST_INVALID (with a reason a person can act on) when it is malformed,
 * uses an unsupported algorithm, or is not the canonical lower-case hex of the right length.
 */
export function parseDigest(input: string): Digest {
  if (!GENERIC_DIGEST.test(input)) {
    throw new RegistryError('DIGEST_INVALID', `invalid digest "${clip(input)}": expected algorithm:hex, e.g. sha256:<64 hex>`);
  }
  const colon = input.indexOf(':');
  const algorithm = input.slice(0, colon);
  const hex = input.slice(colon + 1);
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new RegistryError('BAD_REQUEST', `digest algorithm "${clip(algorithm)}" is not supported: use sha256 or sha512`);
  }
  const want = HEX_LENGTH[algorithm];
  if (hex.length !== want || !/^[0-9a-f]+$/.test(hex)) {
    throw new RegistryError('DIGEST_INVALID', `invalid ${algorithm} digest: expected ${want} lower-case hex characters`);
  }
  return { algorithm, hex, value: input };
}

/** True when `input` is a reference that looks like a digest (contains ':'), as opposed to a tag. */
export function looksLikeDigest(reference: string): boolean {
  return reference.includes(':');
}

/** Returns a fresh hasher for a digest algorithm. */
export function newHasher(algorithm: Digest['algorithm']): Hash {
  return createHash(algorithm);
}

/** Digest of a byte buffer in the given algorithm (default sha256), as `algorithm:hex`. */
export function digestOf(bytes: Uint8Array, algorithm: Digest['algorithm'] = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}
