/**
 * `regmirror serve`: loads the config, opens the stores, starts the HTTP(S) server on the
 * configured address, and shuts down cleanly on SIGINT/SIGTERM (in-flight fills get a few seconds).
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { Config } from '../config/index.ts';
import { accessLogger, createLogger, type Logger } from '../log/index.ts';
import { ownerAlive } from '../store/index.ts';
import { Evictor, indexBlobRefs, reconcile } from '../lifecycle/index.ts';
import { ProvenanceQuery, Pusher, warmUp } from '../mirror/index.ts';
import { openRuntime } from './runtime.ts';
import { cacheRef } from './cache.ts';
import { Authenticator, answerClientError, createAdminApi, createApp, nodeFetch } from '../server/index.ts';
import { formatListen } from '../config/index.ts';

export interface RunningServer {
  port: number;
  close(): Promise<void>;
}

/** Starts the mirror; resolves once it is listening. */
export async function startServer(config: Config, log: Logger = createLogger(config.log.level)): Promise<RunningServer> {
  const rt = await openRuntime(config, log, true);
  const { meta, mirror, routing } = rt;
  // [cache] pins: the config's list replaces the previous config's (pins from the CLI stay).
  await meta.setConfigPins(config.cache.pins.map((p) => ({ repo: p.repo, reference: p.reference })));
  const query = new ProvenanceQuery(meta, rt.provenance, routing);
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
  const auth = config.auth === undefined ? undefined : new Authenticator(config.auth);
  const cacheApi = { store: rt.store, meta, log, events: rt.events, resolve: (image: string) => cacheRef(config, image), graceMs: config.cache.evictGraceMs, ...(auth === undefined ? {} : { auth }) };
  const admin = config.api.enabled ? createAdminApi(query, mirrorHost, cacheApi) : undefined;
  const uploads = await rt.uploads();
  const localNamespaces = config.namespaces.filter((n) => n.registry === undefined).map((n) => n.name);
  const pusher = new Pusher({ store: rt.store, uploads, meta, log, localNamespaces });
  // The access log: one line per answered request, from the server's request events.
  const access = accessLogger(log);
  rt.events.on('request', (e) => {
    const fields = { reqId: e.reqId, method: e.method, path: e.path, status: e.status, registry: e.registry, repo: e.repo, digest: e.digest, cache: e.cache, durationMs: e.durationMs, complete: e.complete };
    if (e.status >= 500 || !e.complete) access.warn(fields, 'request');
    else access.info(fields, 'request');
  });
  const app = createApp({
    events: rt.events,
    mirror,
    routing,
    log,
    pusher,
    baseUrl,
    ...(auth === undefined ? {} : { auth }),
    ...(admin !== undefined && config.api.listen === undefined ? { admin } : {}),
  });
  // Abandoned uploads are removed a while after their last write.
  const sweepUploads = (): void => {
    pusher.sweepUploads(config.uploads.abandonAfterMs).then(
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
  let shuttingDown = false;
  const evictor = new Evictor({ store: rt.store, meta, log, events: rt.events }, {
    evictAt: config.cache.evictAt,
    evictTo: config.cache.evictTo,
    graceMs: config.cache.evictGraceMs,
    evictLocal: config.cache.evictLocal,
    ...(config.cache.maxSizeBytes === undefined ? {} : { maxBytes: config.cache.maxSizeBytes }),
    ...(config.cache.minFreeBytes === undefined ? {} : { minFreeBytes: config.cache.minFreeBytes }),
  });
  // Reconciliation runs beside the budget (a row whose bytes are gone costs the evictor nothing);
  // the budget waits only for the blob references of an older cache to be indexed, without which
  // every blob would look unreferenced.
  void (async () => {
    const r = await reconcile(rt.store, meta, ownerAlive, () => shuttingDown);
    if (r.stopped === true) return;
    const fields = { forgotten: r.forgotten, adopted: r.adopted, ...(r.scannedAfter === undefined ? {} : { scannedAfter: r.scannedAfter }) };
    if (r.forgotten > 0 || r.adopted > 0) log.warn(fields, 'start-up reconciliation: forgot rows whose blobs were missing, added rows for blobs that had none');
    else log.info(fields, 'start-up reconciliation: blobs and rows agree');
  })().catch((e: unknown) => log.warn({ err: (e as Error).message }, 'start-up reconciliation failed'));
  void (async () => {
    const indexed = await indexBlobRefs(rt.store, meta, () => shuttingDown);
    if (indexed > 0) log.info({ manifests: indexed }, 'indexed the blob references of manifests recorded by an older version (cache lifecycle)');
    if (shuttingDown) return;
    if (evictor.enabled) {
      log.info({ maxSize: config.cache.maxSizeBytes, evictAt: config.cache.evictAt, evictTo: config.cache.evictTo, minFree: config.cache.minFreeBytes, evictGraceMs: config.cache.evictGraceMs }, 'cache budget on');
    }
    evictor.start();
  })().catch((e: unknown) => log.warn({ err: (e as Error).message }, 'could not start the cache budget'));

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
      shuttingDown = true;
      closing ??= (async () => {
        clearInterval(uploadTimer);
        await evictor.stop();
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
