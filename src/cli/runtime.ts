/**
 * The pieces every command that touches the cache opens the same way: blob store, metadata,
 * provenance, upstream clients, the Mirror and its routing table. `serve`, `seed`, `export` and
 * `import` all start here, so they agree on where and how content is kept.
 */
import type { Config } from '../config/index.ts';
import type { Logger } from '../log/index.ts';
import { FsBlobStore, metaDbPath, ownerToken } from '../store/index.ts';
import { SqliteMetaStore, SqliteProvenanceStore } from '../meta/index.ts';
import { UpstreamClient } from '../upstream/index.ts';
import { Mirror } from '../mirror/index.ts';
import { buildRoutingTable, type RoutingTable } from '../routing/index.ts';

export interface Runtime {
  config: Config;
  store: FsBlobStore;
  meta: SqliteMetaStore;
  provenance: SqliteProvenanceStore;
  mirror: Mirror;
  routing: RoutingTable;
  /** Waits for running fills (bounded), flushes counters, closes upstream pools and the database. */
  close(): Promise<void>;
}

export function routingOf(config: Config): RoutingTable {
  return buildRoutingTable(config.registries.map((r) => r.host), config.namespaces, config.defaultRegistry);
}

/**
 * Opens the cache of `config` (creating it when new). The server (`owner`) removes temporary files
 * left by processes that have exited; each process writes into a temp folder of its own, so a seed
 * or import running beside the server keeps its files (store/owner.ts).
 */
export async function openRuntime(config: Config, log: Logger, owner: boolean): Promise<Runtime> {
  const store = new FsBlobStore(config.server.dataDir, config.cache.directIo);
  const removed = await store.init(owner);
  if (removed > 0) log.info({ removed }, 'removed leftover temporary files');
  if (store.directIoRefused !== undefined) {
    log.info({ reason: store.directIoRefused }, 'the cache filesystem refused direct I/O; blobs are written through the page cache');
  }
  const meta = new SqliteMetaStore(metaDbPath(config.server.dataDir));
  const processToken = ownerToken();
  meta.processOpened(processToken, Date.now());
  const provenance = new SqliteProvenanceStore(meta.database);
  const upstreams = new Map(config.registries.map((r) => [r.host, new UpstreamClient(r, log)]));
  const mirror = new Mirror({ config, store, meta, upstreams, provenance, log });
  let closing: Promise<void> | undefined;
  return {
    config,
    store,
    meta,
    provenance,
    mirror,
    routing: routingOf(config),
    close: () => {
      closing ??= (async () => {
        await mirror.close();
        await Promise.all([...upstreams.values()].map((u) => u.close().catch(() => undefined)));
        await store.removeOwnTemp().catch(() => undefined);
        meta.processClosed(processToken);
        meta.close();
      })();
      return closing;
    },
  };
}
