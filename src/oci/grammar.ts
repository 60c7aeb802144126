/**
 * The OCI distribution-spec grammar for repository names and tags (§"Pulling manifests").
 */
import { RegistryError, clip } from './errors.ts';

/** `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*` */
const NAME_COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
/** `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}` */
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** Distribution caps the full name at 255 characters. */
export const MAX_NAME_LENGTH = 255;

/** True when `name` is a valid repository name. */
export function isValidRepoName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) return false;
  for (const component of name.split('/')) {
    if (!NAME_COMPONENT.test(component)) return false;
  }
  return true;
}

/** Throws NAME_INVALID naming the rule when `name` is not a valid repository name. */
export function assertRepoName(name: string): void {
  if (!isValidRepoName(name)) {
    throw new RegistryError(
      'NAME_INVALID',
      `invalid repository name "${clip(name)}": use lower-case letters, digits and . _ - separators between path components, at most ${MAX_NAME_LENGTH} characters`,
    );
  }
}

/** True when `tag` is a valid tag. */
export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

/** Throws TAG_INVALID when `tag` is not a valid tag. */
export function assertTag(tag: string): void {
  if (!isValidTag(tag)) {
    throw new RegistryError('TAG_INVALID', `invalid tag "${clip(tag)}": tags are 1-128 characters of [A-Za-z0-9_.-], not starting with . or -`);
  }
}
