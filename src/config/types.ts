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

export interface RegistryCredentials {
  username: string;
  /** Resolved at start-up from password / password_env / password_file. Never logged. */
  password: string;
}

export interface RegistryConfig {
  /** The name clients use (canonical: Docker Hub is always "docker.io"). */
  host: string;
  /** Base URL fetched from, no trailing slash, e.g. "https://registry-1.docker.io". */
  endpoint: string;
  tagTtlMs: number;
  offline: boolean;
  timeouts: TimeoutsConfig;
  credentials?: RegistryCredentials;
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
  registries: RegistryConfig[];
  namespaces: NamespaceConfig[];
}
