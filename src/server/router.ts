/**
 * hono's PatternRouter with a literal pre-check. PatternRouter compiles one regular expression per
 * route and, to collect every matching handler, runs all of them on every request: with the admin
 * routes, the token and ping routes, uploads, manifests, blobs, tags and referrers that is about
 * fourteen expressions, several with a backtracking `:name{.+}`, per manifest GET. Here each route
 * also keeps the literal segments of its path (`/v2`, `/manifests`, `/_regmirror`...); a route whose
 * literals are not all in the path cannot match, so its expression is not run. Matching is
 * PatternRouter's own (one PatternRouter per route), so the semantics are hono's.
 */
import { PatternRouter } from 'hono/router/pattern-router';
import type { Result, Router } from 'hono/router';

interface Entry<T> {
  method: string;
  literals: string[];
  router: PatternRouter<T>;
}

export class LiteralCheckedRouter<T> implements Router<T> {
  readonly name = 'LiteralCheckedRouter';
  private readonly routes: Entry<T>[] = [];

  add(method: string, path: string, handler: T): void {
    const router = new PatternRouter<T>();
    router.add(method, path, handler);
    // `/v2/:name{.+}/manifests/:reference` → ['/v2', '/manifests']; a `*` or a parameter is no literal.
    const literals = path.split('/').filter((s) => s !== '' && !s.startsWith(':') && !s.includes('*') && !s.includes('?')).map((s) => `/${s}`);
    this.routes.push({ method, literals, router });
  }

  match(method: string, path: string): Result<T> {
    let handlers: [T, Record<string, string>][] | undefined;
    for (const r of this.routes) {
      if (r.method !== method && r.method !== 'ALL') continue;
      if (!hasAll(path, r.literals)) continue;
      const [found] = r.router.match(method, path) as [[T, Record<string, string>][]];
      if (found.length === 0) continue;
      handlers ??= [];
      handlers.push(...found);
    }
    return [handlers ?? []] as Result<T>;
  }
}

function hasAll(path: string, literals: string[]): boolean {
  for (const l of literals) if (!path.includes(l)) return false;
  return true;
}
