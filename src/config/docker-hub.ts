/** Docker Hub's many names (DESIGN §1): one registry, canonical host "docker.io". */

export const DOCKER_HUB = 'docker.io';
export const DOCKER_HUB_ENDPOINT = 'https://registry-1.docker.io';
const DOCKER_HUB_ALIASES: ReadonlySet<string> = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

/** Lower-cases a registry host and folds Docker Hub aliases into "docker.io". */
export function canonicalRegistryHost(host: string): string {
  const h = host.toLowerCase();
  return DOCKER_HUB_ALIASES.has(h) ? DOCKER_HUB : h;
}
