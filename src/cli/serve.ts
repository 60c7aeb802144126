/**
 * `regmirror serve`: loads the config, opens the stores, starts the HTTP(S) server on the
 * configured address; drains on SIGTERM (close()): /readyz fails, the listener stays open for
 * [server] shutdown_delay, then closes, and in-flight transfers get [server] shutdown_timeout;
 * takes a reloaded config (reload(), on SIGHUP) without dropping connections, fills or caches.
 */
import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { Config } from '../config/index.ts';
import { accessLogger, createLogger, type Logger } from '../log/index.ts';
import { ownerAlive } from '../store/index.ts';
import { Evictor, indexBlobRefs, reconcile } from '../lifecycle/index.ts';
import { ProvenanceQuery, Pusher, warmUp } from '../mirror/index.ts';
import { openRuntime } from './runtime.ts';
import { cacheRef } from './cache.ts';
import { Authenticator, Metrics, answerClientError, createAdminApi, createApp, mountOps, nodeFetch, type OpsDeps, type ReadinessReport } from '../server/index.ts';
import { formatListen } from '../config/index.ts';
import { reloadPlan } from './reload.ts';
import { packageVersion } from './version.ts';

export interface RunningServer {
  port: number;
  /** The [api] listen port, when the API has its own listener. */
  apiPort?: number;
  /** Drains and stops: /readyz fails, then the listener closes after shutdown_delay, transfers get shutdown_timeout. */
  close(): Promise<void>;
  /** Applies a reloaded, validated config; resolves to what changed and what needs a restart. Throws (nothing applied) when it cannot. */
  reload(next: Config): Promise<{ changed: string[]; restartNeeded: string[] }>;
}

/** How often [server] drain_file is looked for. */
const DRAIN_FILE_CHECK_MS = 1_000;
/** A readiness answer is reused this long (probes of several kubelets and balancers cost one check). */
const READINESS_TTL_MS = 1_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The budget options of a config (the Evictor's). */
function budgetOf(config: Config): ConstructorParameters<typeof Evictor>[1] {
  return {
    evictAt: config.cache.evictAt,
    evictTo: config.cache.evictTo,
    graceMs: config.cache.evictGraceMs,
    evictLocal: config.cache.evictLocal,
    ...(config.cache.maxSizeBytes === undefined ? {} : { maxBytes: config.cache.maxSizeBytes }),
    ...(config.cache.minFreeBytes === undefined ? {} : { minFreeBytes: config.cache.minFreeBytes }),
  };
}

/** The mirror's TLS certificate and key (the config's validation checked them as a pair). */
function readTls(config: Config): { cert: Buffer; key: Buffer } | undefined {
  const { tlsCert, tlsKey } = config.server;
  if (tlsCert === undefined || tlsKey === undefined) return undefined;
  return { cert: readFileSync(tlsCert), key: readFileSync(tlsKey) };
}

/** Starts the mirror; resolves once it is listening. */
export async function startServer(config: Config, log: Logger = createLogger(config.log.level, undefined, config.log.format)): Promise<RunningServer> {
  const rt = await openRuntime(config, log, true);
  const { meta, mirror } = rt;
  /** The configuration now: replaced by reload() (its restart-only keys keep their start-up values). */
  let cfg = config;
  // [cache] pins: the config's list replaces the previous config's (pins from the CLI stay).
  await meta.setConfigPins(cfg.cache.pins.map((p) => ({ repo: p.repo, reference: p.reference })));
  const query = new ProvenanceQuery(meta, rt.provenance, () => rt.routing);
  const tls = readTls(cfg);
  // Where clients reach the mirror (token realms, repo digests): [server] external_url, else the
  // listener's own address once bound; never the client's Host header, which anyone can set and a
  // shared cache in front of the mirror would then serve to everyone (issue 14, defect 10).
  let listenerAddress = formatListen(cfg.server.listen);
  const mirrorHost = (): string => (cfg.server.externalUrl === undefined ? listenerAddress : new URL(cfg.server.externalUrl).host);
  const baseUrl = (): string => cfg.server.externalUrl ?? `${tls === undefined ? 'http' : 'https'}://${listenerAddress}`;
  const auth = cfg.auth === undefined ? undefined : new Authenticator(cfg.auth);
  const cacheApi = { store: rt.store, meta, log, events: rt.events, resolve: (image: string) => cacheRef(cfg, image), graceMs: cfg.cache.evictGraceMs, ...(auth === undefined ? {} : { auth }) };
  const admin = cfg.api.enabled ? createAdminApi(query, mirrorHost, cacheApi) : undefined;
  const uploads = await rt.uploads();
  const localNamespaces = (): string[] => cfg.namespaces.filter((n) => n.registry === undefined).map((n) => n.name);
  const pusher = new Pusher({ store: rt.store, uploads, meta, log, localNamespaces });
  // The access log: one line per answered request, from the server's request events.
  const access = accessLogger(log);
  rt.events.on('request', (e) => {
    const fields = { reqId: e.reqId, method: e.method, path: e.path, status: e.status, registry: e.registry, repo: e.repo, digest: e.digest, cache: e.cache, durationMs: Math.round(e.durationMs), complete: e.complete, ...(e.error === undefined ? {} : { err: e.error }) };
    if (e.status >= 500 || !e.complete) access.warn(fields, 'request');
    else access.info(fields, 'request');
  });
  const metrics = cfg.metrics.enabled
    ? new Metrics({ events: rt.events, fillStats: () => mirror.fillStats(), cacheObjects: () => meta.cacheObjects(), version: packageVersion() })
    : undefined;

  // ------------------------------------------------------------ readiness and draining
  let shuttingDown = false;
  /** Why /readyz fails on purpose: SIGTERM, the drain file; undefined while serving. */
  let drainedBy: string | undefined;
  let drainFilePresent = false;
  let readinessCache: { at: number; report: Promise<ReadinessReport> } | undefined;
  const checkReadiness = async (): Promise<ReadinessReport> => {
    const checks: Record<string, string> = {};
    checks.draining = drainedBy === undefined ? 'ok' : `draining: ${drainedBy}`;
    checks.storage = await rt.store.probe().then(
      () => 'ok',
      (e: unknown) => `the blob store cannot take a write (${cfg.server.dataDir}): ${(e as Error).message}`,
    );
    checks.metadata = await meta.filesReconciled().then(
      () => 'ok',
      (e: unknown) => `the metadata store does not answer: ${(e as Error).message}`,
    );
    return { ready: Object.values(checks).every((v) => v === 'ok'), checks };
  };
  const readiness = (): Promise<ReadinessReport> => {
    const now = Date.now();
    if (readinessCache === undefined || now - readinessCache.at >= READINESS_TTL_MS) readinessCache = { at: now, report: checkReadiness() };
    return readinessCache.report;
  };
  const setDrained = (by: string | undefined): void => {
    drainedBy = by;
    readinessCache = undefined;
  };
  const watchDrainFile = async (): Promise<void> => {
    const file = cfg.server.drainFile;
    const present = file === undefined ? false : await stat(file).then(() => true, () => false);
    if (present === drainFilePresent || shuttingDown) return;
    drainFilePresent = present;
    if (present) {
      log.warn({ drainFile: file }, 'drain file present: /readyz answers 503 (draining); requests are still served; remove the file to be ready again');
      setDrained(`drain file ${file ?? ''} exists`);
    } else {
      log.info({ drainFile: file }, 'drain file gone: ready again');
      setDrained(undefined);
    }
  };
  const drainTimer = setInterval(() => void watchDrainFile().catch(() => undefined), DRAIN_FILE_CHECK_MS);
  drainTimer.unref();
  await watchDrainFile();
  const ops: OpsDeps = { readiness, metricsPublic: cfg.metrics.public, ...(metrics === undefined ? {} : { metrics }), ...(auth === undefined ? {} : { auth }) };

  const app = createApp({
    events: rt.events,
    mirror,
    routing: () => rt.routing,
    log,
    pusher,
    baseUrl,
    ops,
    ...(auth === undefined ? {} : { auth }),
    ...(admin !== undefined && cfg.api.listen === undefined ? { admin } : {}),
  });
  // Abandoned uploads are removed a while after their last write.
  const sweepUploads = (): void => {
    pusher.sweepUploads(cfg.uploads.abandonAfterMs).then(
      (n) => n > 0 && log.info({ removed: n }, 'removed abandoned uploads'),
      (e: unknown) => log.warn({ err: (e as Error).message }, 'upload sweep failed'),
    );
  };
  const uploadTimer = setInterval(sweepUploads, Math.min(Math.max(cfg.uploads.abandonAfterMs / 4, 1_000), 10 * 60_000));
  uploadTimer.unref();
  sweepUploads();

  if (cfg.server.warmUp) {
    await warmUp(rt.store).then(
      (r) => log.debug(r, 'warm-up fill done'),
      (e: unknown) => log.info({ err: (e as Error).message }, 'warm-up fill failed (only the first pull is slower)'),
    );
  }
  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve(
      {
        fetch: nodeFetch(app),
        hostname: cfg.server.listen.host,
        port: cfg.server.listen.port,
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
  if (/^(0\.0\.0\.0|::)$/.test(addr.address)) {
    log.warn({ listen: listenerAddress }, `listening on every network interface (server.listen = "${formatListen(cfg.server.listen)}"): other machines can pull through this mirror; set server.listen = "127.0.0.1:${addr.port}" to keep it on this machine`);
  }
  for (const r of cfg.registries) {
    // The registry's own credential goes to every endpoint that has none of its own: say so when they are different hosts.
    const hosts = new Set(r.endpoints.filter((e) => r.auth !== undefined && e.auth === r.auth).map((e) => new URL(e.url).hostname));
    if (hosts.size > 1) {
      log.warn({ registry: r.host, endpoints: [...hosts] }, `the credential of [[registry]] ${r.host} (${r.auth?.configKey ?? ''}) is sent to each of its endpoints: ${[...hosts].join(', ')}; give an endpoint its own credential in a [[registry.endpoints]] table if it should not get this one`);
    }
  }
  if (cfg.auth !== undefined && cfg.server.externalUrl === undefined && /^(0\.0\.0\.0|::)$/.test(addr.address)) {
    log.warn({ listen: listenerAddress }, 'listening on every address with [auth] on but no [server] external_url: token realms name the wildcard address, which remote clients cannot reach; set external_url');
  }
  log.info(
    { listen: `${addr.address}:${addr.port}`, port: addr.port, tls: tls !== undefined, dataDir: cfg.server.dataDir, registries: cfg.registries.map((r) => r.host), defaultRegistry: cfg.defaultRegistry, metrics: metrics !== undefined },
    'regmirror listening',
  );
  const newEvictor = (c: Config): Evictor => new Evictor({ store: rt.store, meta, log, events: rt.events }, budgetOf(c));
  let evictor = newEvictor(cfg);
  const budgetOn = (c: Config): void => {
    if (evictor.enabled) log.info({ maxSize: c.cache.maxSizeBytes, evictAt: c.cache.evictAt, evictTo: c.cache.evictTo, minFree: c.cache.minFreeBytes, evictGraceMs: c.cache.evictGraceMs }, 'cache budget on');
  };
  let indexed = false;
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
    const n = await indexBlobRefs(rt.store, meta, () => shuttingDown);
    if (n > 0) log.info({ manifests: n }, 'indexed the blob references of manifests recorded by an older version (cache lifecycle)');
    if (shuttingDown) return;
    indexed = true;
    budgetOn(cfg);
    evictor.start();
  })().catch((e: unknown) => log.warn({ err: (e as Error).message }, 'could not start the cache budget'));

  // The provenance API on its own address, when configured so (with /livez, /readyz, /metrics).
  let apiServer: ReturnType<typeof serve> | undefined;
  if (admin !== undefined && cfg.api.listen !== undefined) {
    const listen = cfg.api.listen;
    mountOps(admin, ops);
    try {
      apiServer = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
        const s = serve({ fetch: nodeFetch(admin), hostname: listen.host, port: listen.port }, () => resolve(s));
        s.once('error', reject);
      });
    } catch (e) {
      // The main listener is up: without this, the process would go on serving after saying it cannot start.
      shuttingDown = true;
      clearInterval(drainTimer);
      clearInterval(uploadTimer);
      await evictor.stop();
      await new Promise<void>((r) => {
        server.close(() => r());
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      });
      metrics?.close();
      await rt.close();
      throw e;
    }
    const a = apiServer.address() as AddressInfo;
    log.info({ listen: `${a.address}:${a.port}`, apiPort: a.port }, 'provenance API listening');
  }

  /** Stops taking connections on `s`, lets open ones finish until `deadline`, then cuts the rest. */
  const closeListener = async (s: ReturnType<typeof serve>, deadline: number): Promise<void> => {
    const http = s as unknown as { closeIdleConnections?: () => void; closeAllConnections?: () => void };
    await new Promise<void>((r) => {
      // Keep-alive connections are closed as they go idle (between two requests); at the deadline
      // the rest are cut.
      const idle = setInterval(() => http.closeIdleConnections?.(), 250);
      const cut = setTimeout(() => http.closeAllConnections?.(), Math.max(deadline - Date.now(), 0));
      idle.unref();
      cut.unref();
      s.close(() => {
        clearInterval(idle);
        clearTimeout(cut);
        r();
      });
      http.closeIdleConnections?.();
    });
  };

  let closing: Promise<void> | undefined;
  const running: RunningServer = {
    port: addr.port,
    close: () => {
      closing ??= (async () => {
        shuttingDown = true;
        setDrained('shutting down (SIGTERM)');
        clearInterval(drainTimer);
        const { shutdownDelayMs, shutdownTimeoutMs } = cfg.server;
        if (shutdownDelayMs > 0) {
          log.info({ shutdownDelayMs }, 'draining: /readyz answers 503; requests are still served until the listener closes');
          await sleep(shutdownDelayMs);
        }
        clearInterval(uploadTimer);
        const deadline = Date.now() + shutdownTimeoutMs;
        const open = await new Promise<number>((r) => server.getConnections((_e, n) => r(n ?? 0)));
        log.info({ connections: open, shutdownTimeoutMs }, 'listener closed; waiting for in-flight transfers');
        await Promise.all([evictor.stop(), closeListener(server, deadline), apiServer === undefined ? undefined : closeListener(apiServer, deadline)]);
        metrics?.close();
        await rt.close();
      })();
      return closing;
    },
    reload: async (next: Config) => {
      const plan = reloadPlan(cfg, next);
      const effective = plan.effective;
      // Everything that can fail is read before anything is applied: a refused reload changes nothing.
      const nextTls = tls === undefined ? undefined : readTls(effective);
      await meta.setConfigPins(effective.cache.pins.map((p) => ({ repo: p.repo, reference: p.reference })));
      const upstreams = rt.reconfigure(effective);
      if (effective.auth !== undefined) auth?.update(effective.auth);
      if (nextTls !== undefined) (server as unknown as HttpsServer).setSecureContext(nextTls);
      log.level = effective.log.level;
      access.level = effective.log.level;
      ops.metricsPublic = effective.metrics.public;
      const budgetChanged = JSON.stringify(budgetOf(cfg)) !== JSON.stringify(budgetOf(effective));
      const old = cfg;
      cfg = effective;
      cacheApi.graceMs = effective.cache.evictGraceMs;
      if (budgetChanged && !shuttingDown) {
        await evictor.stop();
        evictor = newEvictor(effective);
        if (indexed) {
          budgetOn(effective);
          evictor.start();
        }
      }
      if (old.server.drainFile !== effective.server.drainFile) {
        drainFilePresent = false;
        if (drainedBy?.startsWith('drain file') === true) setDrained(undefined);
        await watchDrainFile();
      }
      const changed = [
        ...upstreams.added.map((h) => `registry ${h} added`),
        ...upstreams.changed.map((h) => `registry ${h} changed`),
        ...upstreams.removed.map((h) => `registry ${h} removed`),
        ...plan.changed,
        ...(nextTls === undefined ? [] : [`server.tls_cert / tls_key re-read`]),
      ];
      readinessCache = undefined;
      return { changed, restartNeeded: plan.restartNeeded };
    },
  };
  if (apiServer !== undefined) running.apiPort = (apiServer.address() as AddressInfo).port;
  return running;
}
