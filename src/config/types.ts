/** The validated configuration regmirror runs on (DESIGN §8). Durations in ms, sizes in bytes. */

export interface ListenAddress {
  host: string;
  port: number;
}

export interface TimeoutsConfig {
  /** TCP + TLS connect. */
  connectMs: number;
  /** Until the upstream's response headers arrive. */
  headersMs: number;
  /** Longest silence between two body chunks. */
  bodyIdleMs: number;
  /**
   * How long an expired tag's revalidation may take while a cached copy exists: past it the copy is
   * served as stale at once and the revalidation goes on in the background.
   */
  revalidateMs: number;
}

/** How hard the mirror tries an upstream before a request fails (issue 19 items 2 and 3). */
export interface RetryConfig {
  /**
   * Extra rounds over the registry's endpoints after every endpoint failed with no answer, a 5xx
   * or a 429; with exponential backoff and full jitter between rounds (Retry-After honoured).
   */
  retries: number;
  /** No further round starts when it would begin this long after the first attempt. */
  retryBudgetMs: number;
  /** How often one blob download that was cut may be resumed with `Range: bytes=N-` (0: never). */
  resumeAttempts: number;
}

/** A credential in one of the three shapes registries accept. Never logged. */
export type Credential =
  | { kind: 'basic'; username: string; password: string }
  | { kind: 'refresh'; username: string; refreshToken: string }
  | { kind: 'bearer'; token: string };

/**
 * Where a registry's credential comes from, resolved at start-up: a fixed credential (password
 * keys, config.json `auths`, gcr_key_file, token) or a Docker credential helper run on demand.
 * `configKey` names the key to point users at in error hints.
 */
export type CredentialConfig =
  | { source: 'static'; configKey: string; credential: Credential }
  | { source: 'helper'; configKey: string; helper: string; serverUrl: string };

/**
 * One base URL of a registry (`endpoint`, or each of `endpoints`), with the credential and trust
 * used there: its own where its table gives them, else the registry's.
 */
export interface UpstreamEndpoint {
  /** Base URL, no trailing slash, e.g. "https://mirror.gcr.io". */
  url: string;
  auth?: CredentialConfig;
  caFile?: string;
  clientCert?: string;
  clientKey?: string;
  insecureSkipVerify: boolean;
}

export interface RegistryConfig {
  /** The name clients use (canonical: Docker Hub is always "docker.io"). */
  host: string;
  /** The first endpoint's base URL (what provenance and messages name when one is meant). */
  endpoint: string;
  /** Tried in order: the next on no answer, a 5xx or a 429 (at least one). */
  endpoints: UpstreamEndpoint[];
  tagTtlMs: number;
  offline: boolean;
  timeouts: TimeoutsConfig;
  retry: RetryConfig;
  /** The registry-level credential (each endpoint carries the one it uses; this names the key in hints). */
  auth?: CredentialConfig;
}

export interface NamespaceConfig {
  name: string;
  /** Canonical registry host, or undefined for a local (push/import) namespace. */
  registry?: string;
}

/** What a user of the mirror's own API may do (DESIGN §8, issue 6): local namespaces only. */
export type Role = 'pull' | 'push' | 'delete' | 'admin';
export const ROLES: readonly Role[] = ['pull', 'push', 'delete', 'admin'];

/** A user of the mirror: a bcrypt hash (htpasswd, password_hash) or a secret read at start-up. Never logged. */
export interface AuthUser {
  name: string;
  bcryptHash?: string;
  password?: string;
  roles: ReadonlySet<Role>;
}

/** `[auth]`: who may push into / pull from local namespaces. Mirrored content stays anonymous. */
export interface AuthConfig {
  users: ReadonlyMap<string, AuthUser>;
  /** Lifetime of the bearer tokens the mirror's token endpoint issues. */
  tokenTtlMs: number;
  /** Local namespaces readable without credentials. */
  anonymousLocalPull: boolean;
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  /** Canonical host of the registry for paths with no host, ns or namespace; "" = none. */
  defaultRegistry: string;
  server: {
    listen: ListenAddress;
    dataDir: string;
    tlsCert?: string;
    tlsKey?: string;
    /** Run one synthetic loopback fill before listening, so the first real pull runs optimized code. */
    warmUp: boolean;
    /** `scheme://host[:port]` clients reach the mirror at (token realms, repo digests); default: the listener's address. */
    externalUrl?: string;
    /** While this file exists, /readyz answers 503 (draining) and the mirror goes on serving. */
    drainFile?: string;
    /** After SIGTERM: how long /readyz fails while requests are still taken (load balancers notice). */
    shutdownDelayMs: number;
    /** After that: how long in-flight transfers may take to finish before they are cut. */
    shutdownTimeoutMs: number;
  };
  cache: {
    tagTtlMs: number;
    maxSizeBytes?: number;
    offline: boolean;
    /** Bytes of manifests kept in memory in front of the disk store. */
    memoryManifestBytes: number;
    /** Write blobs with O_DIRECT where the filesystem takes it (no page-cache copy). */
    directIo: boolean;
    /** Eviction starts above this share of maxSizeBytes (evict_at, default 90 %)... */
    evictAt: number;
    /** ...and stops at this one (evict_to, default 80 %). */
    evictTo: number;
    /** Free space the cache's filesystem keeps (min_free); eviction runs while less is free. */
    minFreeBytes?: number;
    /** New content is not evicted for this long (evict_grace, default 5 min). */
    evictGraceMs: number;
    /** Whether the budget may evict local namespaces' content (evict_local, default false). */
    evictLocal: boolean;
    /** Images the budget keeps ([cache] pins), resolved to repository + tag or digest. */
    pins: Array<{ image: string; repo: string; reference: string }>;
  };
  log: { level: LogLevel; format: 'json' | 'text' };
  /** `/metrics`: served at all, and open to anyone when [auth] is on. */
  metrics: { enabled: boolean; public: boolean };
  /** The read-only provenance API: off, on the main listener (listen undefined), or on its own address. */
  api: { enabled: boolean; listen?: ListenAddress };
  registries: RegistryConfig[];
  namespaces: NamespaceConfig[];
  /** Undefined: no users; pushes are refused and local namespaces are anonymous-read. */
  auth?: AuthConfig;
  /** Push uploads: how long an unfinished upload is kept after its last write. */
  uploads: { abandonAfterMs: number };
}
