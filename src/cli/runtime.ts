/**
 * The composition root: the one place that builds the implementations from the config — blob
 * store, metadata (with its caching decorator), event stream, provenance counters, upstream
 * clients, the Mirror and its routing table. `serve`, `seed`, `export`, `import`, `verify` all
 * start here, so they agree on where and how content is kept; everything else sees interfaces.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Config, RegistryConfig } from '../config/index.ts';
import type { Logger } from '../log/index.ts';
import { FsBlobStore, FsUploadStore, metaDbPath, ownerToken, type BlobStore } from '../store/index.ts';
import { CachingMetaStore, SqliteMetaStore, type MetaStore } from '../meta/index.ts';
import { UpstreamClient } from '../upstream/index.ts';
import { Mirror, ProvenanceRecorder } from '../mirror/index.ts';
import { EventStream } from '../events/index.ts';
import { buildRoutingTable, type RoutingTable } from '../routing/index.ts';

export interface Runtime {
  config: Config;
  store: BlobStore;
  meta: MetaStore;
  events: EventStream;
  provenance: ProvenanceRecorder;
  mirror: Mirror;
  routing: RoutingTable;
  /**
   * Takes a reloaded configuration (SIGHUP): a registry whose settings, credentials or CA / client
   * certificate files changed gets a new upstream client (the old one finishes its transfers and
   * is closed after UPSTREAM_RETIRE_MS); new registries are added, removed ones retired; the Mirror
   * and the routing table follow. Returns the hosts added, changed and removed.
   */
  reconfigure(next: Config): { added: string[]; changed: string[]; removed: string[] };
  /** Blob uploads in progress (push API); created on first use. */
  uploads(): Promise<FsUploadStore>;
  /** Waits for running fills (bounded), flushes counters, closes upstream pools and the database. */
  close(): Promise<void>;
}

/** How long a replaced upstream client may still finish what it started (fills of big layers). */
const UPSTREAM_RETIRE_MS = 10 * 60_000;

/** What makes an upstream client: its settings and the contents of the files it reads (a rotated CA under the same name counts). */
function upstreamFingerprint(r: RegistryConfig): string {
  const file = (p: string | undefined): string => {
    if (p === undefined) return '';
    try {
      return createHash('sha256').update(readFileSync(p)).digest('hex');
    } catch (e) {
      return `unreadable:${(e as NodeJS.ErrnoException).code ?? ''}`;
    }
  };
  const h = createHash('sha256').update(JSON.stringify(r));
  for (const e of r.endpoints) h.update(file(e.caFile)).update(file(e.clientCert)).update(file(e.clientKey));
  return h.digest('hex');
}

export function routingOf(config: Config): RoutingTable {
  return buildRoutingTable(config.registries.map((r) => r.host), config.namespaces, config.defaultRegistry);
}

/**
 * The two stores of `config` for a command that only reads them (verify --local): nothing is
 * created, no temp folder, no process note.
 */
export function openStores(config: Config): { store: BlobStore; meta: MetaStore; close(): Promise<void> } {
  const store = new FsBlobStore(config.server.dataDir);
  const meta = SqliteMetaStore.open(metaDbPath(config.server.dataDir));
  return { store, meta, close: () => meta.close() };
}

/**
 * Opens the cache of `config` (creating it when new). The server (`owner`) removes temporary files
 * left by processes that have exited; each process writes into a temp folder of its own, so a seed
 * or import running beside the server keeps its files (store/owner.ts).
 */
export async function openRuntime(config: Config, log: Logger, owner: boolean): Promise<Runtime> {
  const fsStore = new FsBlobStore(config.server.dataDir, config.cache.directIo);
  const removed = await fsStore.init(owner);
  if (removed > 0) log.info({ removed }, 'removed leftover temporary files');
  if (fsStore.directIoRefused !== undefined) {
    log.info({ reason: fsStore.directIoRefused }, 'the cache filesystem refused direct I/O; blobs are written through the page cache');
  }
  // Another process's commit (import, seed, cache rm beside the server) is announced by a watch on
  // the database's folder, and the next lookup checks SQLite's change counter (PRAGMA data_version);
  // without the watch (no inotify), the counter is checked at most once a millisecond, which cost
  // 7-10 % of the CPU of a warm manifest request under load.
  const meta = new CachingMetaStore(SqliteMetaStore.open(metaDbPath(config.server.dataDir)), { checkMs: 1 });
  const processToken = ownerToken();
  await meta.processOpened(processToken, Date.now());
  const events = new EventStream((type, e) => log.warn({ event: type, err: (e as Error).message }, 'an event subscriber failed'));
  const provenance = new ProvenanceRecorder(meta, events, (e) => log.warn({ err: (e as Error).message }, 'could not record provenance counters'));
  const upstreams = new Map(config.registries.map((r) => [r.host, new UpstreamClient(r, log, undefined, events)]));
  const fingerprints = new Map(config.registries.map((r) => [r.host, upstreamFingerprint(r)]));
  const retiring = new Set<UpstreamClient>();
  const retire = (client: UpstreamClient): void => {
    retiring.add(client);
    setTimeout(() => {
      retiring.delete(client);
      void client.close().catch(() => undefined);
    }, UPSTREAM_RETIRE_MS).unref();
  };
  const mirror = new Mirror({ config, store: fsStore, meta, upstreams, log, events });
  let uploads: Promise<FsUploadStore> | undefined;
  let closing: Promise<void> | undefined;
  const runtime: Runtime = {
    config,
    store: fsStore,
    meta,
    events,
    provenance,
    mirror,
    routing: routingOf(config),
    reconfigure: (next: Config) => {
      const added: string[] = [];
      const changed: string[] = [];
      const removed: string[] = [];
      for (const r of next.registries) {
        const fp = upstreamFingerprint(r);
        const old = upstreams.get(r.host);
        if (old !== undefined && fingerprints.get(r.host) === fp) continue;
        upstreams.set(r.host, new UpstreamClient(r, log, undefined, events));
        fingerprints.set(r.host, fp);
        if (old === undefined) added.push(r.host);
        else {
          changed.push(r.host);
          retire(old);
        }
      }
      const keep = new Set(next.registries.map((r) => r.host));
      for (const [host, old] of upstreams) {
        if (keep.has(host)) continue;
        upstreams.delete(host);
        fingerprints.delete(host);
        removed.push(host);
        retire(old);
      }
      mirror.reconfigure(next);
      runtime.config = next;
      runtime.routing = routingOf(next);
      return { added, changed, removed };
    },
    uploads: () => {
      uploads ??= (async () => {
        const u = new FsUploadStore(fsStore);
        await u.init();
        return u;
      })();
      return uploads;
    },
    close: () => {
      closing ??= (async () => {
        await mirror.close();
        await provenance.close();
        await Promise.all([...upstreams.values(), ...retiring].map((u) => u.close().catch(() => undefined)));
        await fsStore.close().catch(() => undefined);
        await meta.processClosed(processToken);
        await meta.close();
      })();
      return closing;
    },
  };
  return runtime;
}
