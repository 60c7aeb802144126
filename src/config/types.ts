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

export interface RegistryConfig {
  /** The name clients use (canonical: Docker Hub is always "docker.io"). */
  host: string;
  /** Base URL fetched from, no trailing slash, e.g. "https://registry-1.docker.io". */
  endpoint: string;
  tagTtlMs: number;
  offline: boolean;
  timeouts: TimeoutsConfig;
  auth?: CredentialConfig;
  /** PEM CA bundle added to the system roots. */
  caFile?: string;
  clientCert?: string;
  clientKey?: string;
  insecureSkipVerify: boolean;
}

export interface NamespaceConfig {
  name: string;
  /** Canonical registry host, or undefined for a local (push/import) namespace. */
  registry?: string;
}

export interface Config {
  /** Canonical host of the registry for paths with no host, ns or namespace; "" = none. */
  defaultRegistry: string;
  server: {
    listen: ListenAddress;
    dataDir: string;
    tlsCert?: string;
    tlsKey?: string;
  };
  cache: {
    tagTtlMs: number;
    maxSizeBytes?: number;
    offline: boolean;
    /** Bytes of manifests kept in memory in front of the disk store. */
    memoryManifestBytes: number;
  };
  log: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
  /** The read-only provenance API: off, on the main listener (listen undefined), or on its own address. */
  api: { enabled: boolean; listen?: ListenAddress };
  registries: RegistryConfig[];
  namespaces: NamespaceConfig[];
}
