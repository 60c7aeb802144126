/**
 * Request → route value (DESIGN §1). Pure: no I/O, no framework objects.
 *
 * Rules, in order:
 *  1. strip a configured namespace prefix `/v2/<namespace>/...`, tolerating the doubled
 *     `/v2/<namespace>/v2/...` that containerd sends for a namespace endpoint without override_path;
 *     a local namespace (no registry) routes to local content whatever else the request says;
 *  2. `?ns=<host>` names the registry (as containerd sends it);
 *  3. a first path segment that looks like a host (has `.` or `:`, or is `localhost`) names it;
 *  4. else the namespace's registry, else the default registry.
 * Docker Hub gets `library/` for one-segment names. Unconfigured registries are refused: the mirror
 * is never an open proxy.
 */
import { RegistryError, assertRepoName, assertTag, clip as clipTo, looksLikeDigest, parseDigest } from '../oci/index.ts';
import { canonicalRegistryHost, DOCKER_HUB } from '../config/docker-hub.ts';

export type RouteKind = 'manifest' | 'blob' | 'tags' | 'referrers' | 'upload';
export type RouteVia = 'ns' | 'namespace' | 'host' | 'default' | 'local';

export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: string };

/** Where a /v2 request goes. */
export interface Route {
  kind: RouteKind;
  /** Canonical registry host; undefined for a local (push/import) namespace. */
  registry: string | undefined;
  /** Repository name as the upstream knows it (Docker Hub: with `library/`). */
  upstreamRepo: string;
  /** Cache key of the repository: `<registry>/<repo>`, or `_local/<namespace>/<repo>`. */
  localRepo: string;
  /** Tag or digest for manifests, digest for blobs and referrers, absent for tags and uploads. */
  reference?: Reference;
  /** Rest of the path after `/blobs/uploads/` for upload routes. */
  uploadPath?: string;
  via: RouteVia;
  /** The namespace that matched, if any. */
  namespace?: string;
  /** Set when `ns` routed the request: the value for the `OCI-Namespace` response header. */
  ociNamespace?: string;
}

/** What routing needs to know of the configuration. */
export interface RoutingTable {
  registries: ReadonlySet<string>;
  /** namespace name → canonical registry host, or undefined for a local namespace. */
  namespaces: ReadonlyMap<string, string | undefined>;
  /** Canonical default registry, or '' for none. */
  defaultRegistry: string;
}

/** Builds the routing table from config values. */
export function buildRoutingTable(
  registries: Iterable<string>,
  namespaces: Iterable<{ name: string; registry?: string }>,
  defaultRegistry: string,
): RoutingTable {
  return {
    registries: new Set(registries),
    namespaces: new Map([...namespaces].map((n) => [n.name, n.registry])),
    defaultRegistry,
  };
}

const HOST_GRAMMAR = /^[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::\d{1,5})?$/;

/** True when a path segment looks like a registry host rather than a repository component. */
export function looksLikeHost(segment: string): boolean {
  return segment === 'localhost' || segment.includes('.') || segment.includes(':');
}

interface Split {
  name: string;
  kind: RouteKind;
  ref?: string;
  uploadPath?: string;
}

/** Splits `/v2/<name>/<endpoint>` into name, kind and raw reference; undefined when it is not /v2 API. */
function splitPath(rest: string): Split | undefined {
  let m = /^(.+?)\/blobs\/uploads(?:\/(.*))?$/.exec(rest);
  if (m !== null) return { name: m[1] ?? '', kind: 'upload', uploadPath: m[2] ?? '' };
  m = /^(.+)\/manifests\/([^/]+)$/.exec(rest);
  if (m !== null) return { name: m[1] ?? '', kind: 'manifest', ref: m[2] ?? '' };
  m = /^(.+)\/blobs\/([^/]+)$/.exec(rest);
  if (m !== null) return { name: m[1] ?? '', kind: 'blob', ref: m[2] ?? '' };
  m = /^(.+)\/tags\/list$/.exec(rest);
  if (m !== null) return { name: m[1] ?? '', kind: 'tags' };
  m = /^(.+)\/referrers\/([^/]+)$/.exec(rest);
  if (m !== null) return { name: m[1] ?? '', kind: 'referrers', ref: m[2] ?? '' };
  return undefined;
}

function notMirrored(host: string, table: RoutingTable): RegistryError {
  const known = [...table.registries].sort().join(', ') || 'none';
  return new RegistryError('DENIED', `registry "${host}" is not mirrored here (configured: ${known}); add a [[registry]] for it to mirror.toml`, {
    detail: { registry: host },
  });
}

/**
 * The canonical host of a registry a client named (an `ns` value, a path segment, an image
 * reference). Throws NAME_INVALID for a malformed host, DENIED for one that is not configured:
 * the mirror is never an open proxy.
 */
export function configuredRegistry(host: string, table: RoutingTable, label: string): string {
  if (!HOST_GRAMMAR.test(host)) throw new RegistryError('NAME_INVALID', `invalid ${label} "${clip(host)}": expected a registry host such as gcr.io`);
  const registry = canonicalRegistryHost(host);
  if (!table.registries.has(registry)) throw notMirrored(registry, table);
  return registry;
}

/** The repository name as its registry knows it: Docker Hub gives one-segment names `library/`. */
export function upstreamRepoName(registry: string | undefined, segments: readonly string[]): string {
  const repo = segments.join('/');
  return registry === DOCKER_HUB && segments.length === 1 ? `library/${repo}` : repo;
}

function parseReference(kind: RouteKind, raw: string | undefined): Reference | undefined {
  if (raw === undefined) return undefined;
  if (kind === 'manifest' && !looksLikeDigest(raw)) {
    assertTag(raw);
    return { kind: 'tag', tag: raw };
  }
  return { kind: 'digest', digest: parseDigest(raw).value };
}

/** True for `/v2` and `/v2/`, the API version check. */
export function isBasePath(path: string): boolean {
  return path === '/v2' || path === '/v2/';
}

/**
 * Routes a /v2 API path (not the base path) with its `ns` query value.
 * Throws RegistryError: NAME_INVALID / TAG_INVALID / DIGEST_INVALID for malformed input,
 * DENIED for a registry that is not configured, NAME_UNKNOWN for a path that is not an API endpoint.
 */
export function routeRequest(path: string, ns: string | undefined, table: RoutingTable): Route {
  if (!path.startsWith('/v2/')) throw new RegistryError('NAME_UNKNOWN', `not a registry API path: ${clip(path)}`);
  if (path.includes('%') || path.includes('\\')) {
    throw new RegistryError('NAME_INVALID', 'repository names and references may not contain percent-encoded or backslash characters');
  }
  const split = splitPath(path.slice(4));
  if (split === undefined) {
    throw new RegistryError('NAME_UNKNOWN', `unknown registry API endpoint: ${clip(path)} (expected /v2/<name>/manifests/<reference>, /blobs/<digest> or /tags/list)`);
  }
  let segments = split.name.split('/');
  let via: RouteVia = 'default';
  let namespace: string | undefined;
  let registry: string | undefined;
  let local = false;

  const first = segments[0] ?? '';
  if (table.namespaces.has(first) && segments.length > 1) {
    namespace = first;
    segments = segments.slice(1);
    if (segments[0] === 'v2' && segments.length > 1) segments = segments.slice(1);
    registry = table.namespaces.get(first);
    via = 'namespace';
    local = registry === undefined;
  }

  let ociNamespace: string | undefined;
  if (local) {
    via = 'local';
  } else if (ns !== undefined && ns !== '') {
    registry = configuredRegistry(ns, table, 'ns parameter');
    via = 'ns';
    ociNamespace = registry;
  } else if (looksLikeHost(segments[0] ?? '') && segments.length > 1) {
    registry = configuredRegistry(segments[0] ?? '', table, 'registry host in path');
    segments = segments.slice(1);
    via = 'host';
  } else if (registry === undefined) {
    if (table.defaultRegistry === '') {
      throw new RegistryError('NAME_UNKNOWN', `no registry named in "${clip(split.name)}" and no default_registry configured: use a host-prefixed path such as /v2/gcr.io/<repo>/...`);
    }
    registry = table.defaultRegistry;
  }

  assertRepoName(segments.join('/'));
  const repo = upstreamRepoName(registry, segments);
  const route: Route = {
    kind: split.kind,
    registry: local ? undefined : registry,
    upstreamRepo: repo,
    localRepo: local ? `_local/${namespace}/${repo}` : `${registry}/${repo}`,
    via,
  };
  const reference = parseReference(split.kind, split.ref);
  if (reference !== undefined) route.reference = reference;
  if (split.uploadPath !== undefined) route.uploadPath = split.uploadPath;
  if (namespace !== undefined) route.namespace = namespace;
  if (ociNamespace !== undefined) route.ociNamespace = ociNamespace;
  return route;
}

function clip(s: string): string {
  return clipTo(s, 100);
}

/** An image reference routed like a pull of it through the mirror. */
export interface ImageRoute {
  /** The manifest route for the reference (a digest when one is given, else the tag). */
  route: Route;
  tag?: string;
  digest?: string;
}

/**
 * Routes an image reference as it is written for a pull through the mirror, without the mirror's
 * own host: `gcr.io/foo/bar:1.0`, `nginx` (default registry), `<namespace>/app@sha256:...` (a
 * configured namespace, local or mirrored). The same rules as for `/v2/<name>/manifests/<ref>`.
 * Throws RegistryError (NAME_INVALID, TAG_INVALID, DIGEST_INVALID, DENIED, NAME_UNKNOWN).
 */
export function routeImage(image: string, table: RoutingTable): ImageRoute {
  let name = image.trim();
  let digest: string | undefined;
  const at = name.indexOf('@');
  if (at >= 0) {
    digest = parseDigest(name.slice(at + 1)).value;
    name = name.slice(0, at);
  }
  let tag: string | undefined;
  const slash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  if (colon > slash) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
    assertTag(tag);
  }
  if (tag === undefined && digest === undefined) tag = 'latest';
  if (name === '' || name.startsWith('/') || name.includes('//')) throw new RegistryError('NAME_INVALID', `"${clip(image)}" is not an image reference`);
  const route = routeRequest(`/v2/${name}/manifests/${digest ?? tag ?? 'latest'}`, undefined, table);
  const out: ImageRoute = { route };
  if (tag !== undefined) out.tag = tag;
  if (digest !== undefined) out.digest = digest;
  return out;
}

/** The one reference an image route names: its digest when it has one, else its tag. */
export function referenceOf(r: { tag?: string; digest?: string }): string {
  return r.digest ?? r.tag ?? 'latest';
}

/** The route of another object (a blob or a manifest by digest) in the same repository. */
export function siblingRoute(route: Route, kind: 'manifest' | 'blob', digest: string): Route {
  const { uploadPath: _u, ...rest } = route;
  return { ...rest, kind, reference: { kind: 'digest', digest } };
}
