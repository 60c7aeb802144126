/**
 * `regmirror serve`: loads the config, opens the stores, starts the HTTP(S) server on the
 * configured address, and shuts down cleanly on SIGINT/SIGTERM (in-flight fills get a few seconds).
 */
import { readFileSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { Config } from '../config/index.ts';
import { createLogger, type Logger } from '../log/index.ts';
import { FsUploadStore, blobPath } from '../store/index.ts';
import type { SqliteMetaStore } from '../meta/index.ts';
import { ProvenanceQuery, Pusher, warmUp } from '../mirror/index.ts';
import { openRuntime } from './runtime.ts';
import { Authenticator, createAdminApi, createApp, nodeFetch } from '../server/index.ts';
import { formatListen } from '../config/index.ts';
import { parseDigest } from '../oci/index.ts';

export interface RunningServer {
  port: number;
  close(): Promise<void>;
}

/**
 * Forgets blob rows whose files are gone. Runs in the background after start-up in slices of 200
 * rows (a fraction of a millisecond each: synchronous stats, one transaction for the slice's
 * deletes), yielding to the event loop between slices. Synchronous stats never queue work in
 * libuv's thread pool ahead of request file reads.
 */
async function sweepMissing(meta: SqliteMetaStore, dataDir: string, log: Logger): Promise<void> {
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
  if (forgotten > 0) log.warn({ forgotten }, 'forgot blob rows whose files were missing');
}

/** Starts the mirror; resolves once it is listening. */
export async function startServer(config: Config, log: Logger = createLogger(config.log.level)): Promise<RunningServer> {
  const rt = await openRuntime(config, log, true);
  const { meta, mirror, routing } = rt;
  const query = new ProvenanceQuery(meta, mirror.provenance, routing);
  const mirrorHost = (hostHeader: string | undefined): string =>
    hostHeader !== undefined && /^[A-Za-z0-9.-]+(?::\d{1,5})?$|^\[[0-9a-fA-F:.]+\](?::\d{1,5})?$/.test(hostHeader) ? hostHeader : formatListen(config.server.listen);
  const admin = config.api.enabled ? createAdminApi(query, mirrorHost) : undefined;
  const tls = config.server.tlsCert !== undefined && config.server.tlsKey !== undefined
    ? { cert: readFileSync(config.server.tlsCert), key: readFileSync(config.server.tlsKey) }
    : undefined;
  const uploads = new FsUploadStore(rt.store);
  await uploads.init();
  const localNamespaces = config.namespaces.filter((n) => n.registry === undefined).map((n) => n.name);
  const pusher = new Pusher({ store: rt.store, uploads, meta, provenance: rt.provenance, mirror, log, localNamespaces });
  const app = createApp({
    mirror,
    routing,
    log,
    pusher,
    baseUrl: (host) => `${tls === undefined ? 'http' : 'https'}://${mirrorHost(host)}`,
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
  // A TLS ClientHello on the plain port (skopeo probing) or other garbage: close quietly.
  server.on('clientError', (_err, socket) => {
    if (!socket.destroyed) socket.destroy();
  });
  const addr = server.address() as AddressInfo;
  log.info(
    { listen: `${addr.address}:${addr.port}`, port: addr.port, tls: tls !== undefined, dataDir: config.server.dataDir, registries: config.registries.map((r) => r.host), defaultRegistry: config.defaultRegistry },
    'regmirror listening',
  );
  void sweepMissing(meta, config.server.dataDir, log).catch((e: unknown) => log.warn({ err: (e as Error).message }, 'start-up sweep failed'));

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
