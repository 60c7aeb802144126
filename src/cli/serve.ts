/**
 * `regmirror serve`: loads the config, opens the stores, starts the HTTP(S) server on the
 * configured address, and shuts down cleanly on SIGINT/SIGTERM (in-flight fills get a few seconds).
 */
import { readFileSync } from 'node:fs';
import { existsSync, statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { Config } from '../config/index.ts';
import { createLogger, type Logger } from '../log/index.ts';
import { FsUploadStore, blobPath, blobsRoot, ownerAlive } from '../store/index.ts';
import type { SqliteMetaStore } from '../meta/index.ts';
import { ProvenanceQuery, Pusher, warmUp } from '../mirror/index.ts';
import { openRuntime } from './runtime.ts';
import { Authenticator, answerClientError, createAdminApi, createApp, nodeFetch } from '../server/index.ts';
import { formatListen } from '../config/index.ts';
import { parseDigest } from '../oci/index.ts';

export interface RunningServer {
  port: number;
  close(): Promise<void>;
}

/**
 * Start-up reconciliation of the files and the rows (DESIGN §5), in the background after the
 * server listens, in slices of 200 that yield to the event loop between them (synchronous stats
 * never queue work in libuv's thread pool ahead of request file reads):
 * - blob rows whose files are gone are forgotten;
 * - blob files with no row (a process killed between the rename into place and the row: issue
 *   14, defect 5) get one. A file under blobs/ was verified before it was renamed there, so it is
 *   adopted as it is; its repository links come back with the manifests that reference it.
 *   Only a process that died with the cache open can leave such files, so the files are scanned
 *   only when one did (its note is still in the metadata and it is not alive), or when this cache
 *   was never scanned; a cache whose processes all closed cleanly costs no scan.
 * Logs one line when done, with the counts.
 */
async function reconcile(meta: SqliteMetaStore, dataDir: string, log: Logger): Promise<void> {
  const digests = [...meta.blobDigests()];
  let forgotten = 0;
  for (let i = 0; i < digests.length; i += 200) {
    await new Promise((r) => setImmediate(r));
    const missing = digests.slice(i, i + 200).filter((digest) => {
      try {
        return !existsSync(blobPath(dataDir, parseDigest(digest)));
      } catch {
        return true;
      }
    });
    meta.forgetBlobs(missing);
    forgotten += missing.length;
  }
  const died = meta.openProcesses().filter((owner) => !ownerAlive(owner));
  if (died.length === 0 && meta.filesReconciled) {
    if (forgotten > 0) log.warn({ forgotten }, 'start-up reconciliation: forgot rows whose files were missing');
    else log.info({ forgotten }, 'start-up reconciliation: files and rows agree');
    return;
  }
  let adopted = 0;
  // Rows as they were at the start: one set lookup per file. A file not in it is asked about again
  // (knows), as its row may have been written since.
  const known = new Set(digests);
  for (const digest of meta.manifestDigests()) known.add(digest);
  const root = blobsRoot(dataDir);
  for (const algorithm of ['sha256', 'sha512']) {
    const prefixes = await readdir(join(root, algorithm)).catch(() => [] as string[]);
    for (const prefix of prefixes) {
      await new Promise((r) => setImmediate(r));
      const names = await readdir(join(root, algorithm, prefix)).catch(() => [] as string[]);
      const found: Array<{ digest: string; size: number }> = [];
      for (const name of names) {
        const digest = `${algorithm}:${name}`;
        if (known.has(digest)) continue;
        try {
          parseDigest(digest);
        } catch {
          continue; // not a content file
        }
        if (meta.knows(digest)) continue;
        try {
          found.push({ digest, size: statSync(join(root, algorithm, prefix, name)).size });
        } catch {
          /* removed meanwhile */
        }
      }
      meta.adoptBlobs(found, Date.now());
      adopted += found.length;
    }
  }
  meta.filesReconciled = true;
  for (const owner of died) meta.processClosed(owner);
  const fields = { forgotten, adopted, scannedAfter: died.length > 0 ? `${died.length} process(es) that died with the cache open` : 'first start of this cache' };
  if (forgotten > 0 || adopted > 0) log.warn(fields, 'start-up reconciliation: forgot rows whose files were missing, added rows for files that had none');
  else log.info(fields, 'start-up reconciliation: files and rows agree');
}

/** Starts the mirror; resolves once it is listening. */
export async function startServer(config: Config, log: Logger = createLogger(config.log.level)): Promise<RunningServer> {
  const rt = await openRuntime(config, log, true);
  const { meta, mirror, routing } = rt;
  const query = new ProvenanceQuery(meta, mirror.provenance, routing);
  const tls = config.server.tlsCert !== undefined && config.server.tlsKey !== undefined
    ? { cert: readFileSync(config.server.tlsCert), key: readFileSync(config.server.tlsKey) }
    : undefined;
  // Where clients reach the mirror (token realms, repo digests): [server] external_url, else the
  // listener's own address once bound; never the client's Host header, which anyone can set and a
  // shared cache in front of the mirror would then serve to everyone (issue 14, defect 10).
  let listenerAddress = formatListen(config.server.listen);
  const external = config.server.externalUrl === undefined ? undefined : new URL(config.server.externalUrl);
  const mirrorHost = (): string => external?.host ?? listenerAddress;
  const baseUrl = (): string => config.server.externalUrl ?? `${tls === undefined ? 'http' : 'https'}://${listenerAddress}`;
  const admin = config.api.enabled ? createAdminApi(query, mirrorHost) : undefined;
  const uploads = new FsUploadStore(rt.store);
  await uploads.init();
  const localNamespaces = config.namespaces.filter((n) => n.registry === undefined).map((n) => n.name);
  const pusher = new Pusher({ store: rt.store, uploads, meta, provenance: rt.provenance, mirror, log, localNamespaces });
  const app = createApp({
    mirror,
    routing,
    log,
    pusher,
    baseUrl,
    ...(config.auth === undefined ? {} : { auth: new Authenticator(config.auth) }),
    ...(admin !== undefined && config.api.listen === undefined ? { admin } : {}),
  });
  // Abandoned uploads are removed a while after their last write.
  const sweepUploads = (): void => {
    uploads.sweep(config.uploads.abandonAfterMs).then(
      (n) => n > 0 && log.info({ removed: n }, 'removed abandoned uploads'),
      (e: unknown) => log.warn({ err: (e as Error).message }, 'upload sweep failed'),
    );
  };
  const uploadTimer = setInterval(sweepUploads, Math.min(Math.max(config.uploads.abandonAfterMs / 4, 1_000), 10 * 60_000));
  uploadTimer.unref();
  sweepUploads();

  if (config.server.warmUp) {
    await warmUp(rt.store).then(
      (r) => log.debug(r, 'warm-up fill done'),
      (e: unknown) => log.info({ err: (e as Error).message }, 'warm-up fill failed (only the first pull is slower)'),
    );
  }
  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve(
      {
        fetch: nodeFetch(app),
        hostname: config.server.listen.host,
        port: config.server.listen.port,
        ...(tls === undefined ? {} : { createServer: createHttpsServer, serverOptions: tls }),
      },
      () => resolve(s),
    );
    s.once('error', reject);
  });
  // Requests the HTTP parser rejects get a status and an OCI error before the close.
  server.on('clientError', answerClientError);
  const addr = server.address() as AddressInfo;
  listenerAddress = formatListen({ host: addr.address, port: addr.port });
  if (config.auth !== undefined && external === undefined && /^(0\.0\.0\.0|::)$/.test(addr.address)) {
    log.warn({ listen: listenerAddress }, 'listening on every address with [auth] on but no [server] external_url: token realms name the wildcard address, which remote clients cannot reach; set external_url');
  }
  log.info(
    { listen: `${addr.address}:${addr.port}`, port: addr.port, tls: tls !== undefined, dataDir: config.server.dataDir, registries: config.registries.map((r) => r.host), defaultRegistry: config.defaultRegistry },
    'regmirror listening',
  );
  void reconcile(meta, config.server.dataDir, log).catch((e: unknown) => log.warn({ err: (e as Error).message }, 'start-up reconciliation failed'));

  // The provenance API on its own address, when configured so.
  let apiServer: ReturnType<typeof serve> | undefined;
  if (admin !== undefined && config.api.listen !== undefined) {
    const listen = config.api.listen;
    apiServer = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
      const s = serve({ fetch: nodeFetch(admin), hostname: listen.host, port: listen.port }, () => resolve(s));
      s.once('error', reject);
    });
    const a = apiServer.address() as AddressInfo;
    log.info({ listen: `${a.address}:${a.port}`, apiPort: a.port }, 'provenance API listening');
  }

  let closing: Promise<void> | undefined;
  return {
    port: addr.port,
    close: () => {
      closing ??= (async () => {
        clearInterval(uploadTimer);
        const http = server as unknown as { closeIdleConnections?: () => void; closeAllConnections?: () => void };
        await new Promise<void>((r) => {
          server.close(() => r());
          http.closeIdleConnections?.();
          // Transfers still running after the grace period are cut (clients see a failed transfer and retry).
          setTimeout(() => http.closeAllConnections?.(), 5_000).unref();
        });
        if (apiServer !== undefined) await new Promise((r) => apiServer?.close(r));
        await rt.close();
      })();
      return closing;
    },
  };
}
