/**
 * Bearer tokens cached per (realm, service, scope) until `expires_in` (at least 60 s, RFC 6749 §5.1
 * via the Docker token spec), refreshed a little before expiry; concurrent fetches of one key coalesce.
 */

interface Entry {
  token: string;
  expiresAt: number;
}

export const MIN_TOKEN_LIFETIME_S = 60;
const REFRESH_MARGIN_MS = 10_000;

export class TokenCache {
  private readonly tokens = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<string>>();

  constructor(private readonly now: () => number = Date.now) {}

  static key(realm: string, service: string, scope: string): string {
    return `${realm}\n${service}\n${scope}`;
  }

  /** A token still valid (outside the refresh margin), or undefined. */
  get(key: string): string | undefined {
    const e = this.tokens.get(key);
    if (e === undefined) return undefined;
    if (e.expiresAt - REFRESH_MARGIN_MS <= this.now()) {
      this.tokens.delete(key);
      return undefined;
    }
    return e.token;
  }

  set(key: string, token: string, expiresInS: number | undefined): void {
    const lifetime = Math.max(expiresInS ?? MIN_TOKEN_LIFETIME_S, MIN_TOKEN_LIFETIME_S);
    this.tokens.set(key, { token, expiresAt: this.now() + lifetime * 1000 });
    if (this.tokens.size > 10_000) {
      const first = this.tokens.keys().next();
      if (first.done !== true) this.tokens.delete(first.value);
    }
  }

  /** Returns the cached token or runs `fetcher` once for all concurrent callers of this key. */
  async getOrFetch(key: string, fetcher: () => Promise<{ token: string; expiresIn?: number }>): Promise<string> {
    const cached = this.get(key);
    if (cached !== undefined) return cached;
    const running = this.inflight.get(key);
    if (running !== undefined) return running;
    const p = (async () => {
      try {
        const r = await fetcher();
        this.set(key, r.token, r.expiresIn);
        return r.token;
      } finally {
        this.inflight.delete(key);
      }
    })();
    this.inflight.set(key, p);
    return p;
  }

  invalidate(key: string): void {
    this.tokens.delete(key);
  }
}
