/**
 * What an operator's tooling asks the mirror, on the main listener and on `[api] listen`:
 *   GET /livez     200 while the process serves (no checks: a liveness probe must not restart a
 *                  mirror whose disk is merely full)
 *   GET /readyz    200 when new pulls can be served: the blob store takes a write, the metadata
 *                  answers, and the mirror is not draining (SIGTERM, [server] drain_file); else
 *                  503 naming the failed check. Unauthenticated, like /livez.
 *   GET /metrics   Prometheus text format; with [auth] it needs the "admin" role unless
 *                  [metrics] public = true.
 * The checks themselves are the caller's (`Readiness`): this module never touches disk or SQL.
 */
import type { Hono, Context } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import { RegistryError, renderErrorBody } from '../oci/index.ts';
import { requireRole, type Authenticator } from './auth.ts';
import type { Metrics } from './metrics.ts';

/** One readiness answer: every check's outcome ('ok' or what is wrong). */
export interface ReadinessReport {
  ready: boolean;
  checks: Record<string, string>;
}

export interface OpsDeps {
  /** Runs the readiness checks (the caller may reuse a recent answer). */
  readiness: () => Promise<ReadinessReport>;
  metrics?: Metrics;
  /** Whether /metrics is open to anyone when [auth] is on ([metrics] public). */
  metricsPublic: boolean;
  auth?: Authenticator;
}

export const OPS_PATHS = ['/livez', '/readyz', '/metrics'] as const;

type Handler = (c: Context<{ Bindings: HttpBindings }>) => Response | Promise<Response>;

function errorResponse(err: RegistryError, head: boolean): Response {
  return new Response(head ? null : renderErrorBody(err), { status: err.status, headers: { 'Content-Type': 'application/json', ...err.headers } });
}

const NO_STORE = { 'Cache-Control': 'no-store' };

/** The three handlers by path. */
export function opsHandlers(deps: OpsDeps): Record<(typeof OPS_PATHS)[number], Handler> {
  const head = (c: Context<{ Bindings: HttpBindings }>): boolean => c.env.incoming.method === 'HEAD';
  const onlyGet = (c: Context<{ Bindings: HttpBindings }>): Response | undefined => {
    const m = c.env.incoming.method;
    return m === 'GET' || m === 'HEAD' ? undefined : errorResponse(new RegistryError('UNSUPPORTED', `${m ?? ''} is not supported here: use GET`, { headers: { Allow: 'GET, HEAD' } }), false);
  };
  return {
    '/livez': (c) => onlyGet(c) ?? new Response(head(c) ? null : 'ok\n', { status: 200, headers: { 'Content-Type': 'text/plain; charset=utf-8', ...NO_STORE } }),
    '/readyz': async (c) => {
      const refused = onlyGet(c);
      if (refused !== undefined) return refused;
      const r = await deps.readiness();
      const body = `${JSON.stringify({ status: r.ready ? 'ready' : 'not ready', checks: r.checks })}\n`;
      return new Response(head(c) ? null : body, { status: r.ready ? 200 : 503, headers: { 'Content-Type': 'application/json', ...NO_STORE } });
    },
    '/metrics': async (c) => {
      const refused = onlyGet(c);
      if (refused !== undefined) return refused;
      const metrics = deps.metrics;
      if (metrics === undefined) return errorResponse(new RegistryError('NAME_UNKNOWN', 'metrics are off: [metrics] enabled = false in mirror.toml'), head(c));
      if (deps.auth !== undefined && !deps.metricsPublic) {
        try {
          await requireRole(deps.auth, c.env.incoming.headers.authorization, 'admin', '/metrics (with [auth] on; or set [metrics] public = true)');
        } catch (e) {
          return errorResponse(e as RegistryError, head(c));
        }
      }
      const text = await metrics.render();
      return new Response(head(c) ? null : text, { status: 200, headers: { 'Content-Type': metrics.contentType, ...NO_STORE } });
    },
  };
}

/** Mounts the handlers on `app`, each wrapped by `wrap` (the main app's per-request step). */
export function mountOps<E extends { Bindings: HttpBindings }>(app: Hono<E>, deps: OpsDeps, wrap: (h: Handler) => Handler = (h) => h): void {
  const handlers = opsHandlers(deps);
  for (const path of OPS_PATHS) app.all(path, wrap(handlers[path]) as never);
}
