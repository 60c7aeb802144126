/**
 * Who is asking, and may they: the mirror's own users (`[auth]`), for pushes into local
 * namespaces and pulls of them. Mirrored content stays anonymous.
 *
 * Registry clients speak the Docker token protocol: when a request needs a user, the answer is a
 * 401 with `WWW-Authenticate: Bearer realm="<mirror>/_regmirror/token",service="regmirror",
 * scope="repository:<name>:push"`; the client gets a token there (GET with Basic credentials, or
 * POST grant_type=password as containerd does) and repeats the request with it. Anonymous clients
 * get an anonymous token, so a Docker daemon using the mirror as a Hub mirror keeps working.
 * Basic credentials on API requests are accepted too (curl, scripts).
 *
 * Tokens are HMAC-SHA256 signed with a key made at start-up: they name the user and expire after
 * `token_ttl`; a restart invalidates them and clients fetch new ones on the next 401.
 */
import { createHmac, randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { LRUCache } from 'lru-cache';
import { RegistryError } from '../oci/index.ts';
import type { AuthConfig, AuthUser, Role } from '../config/index.ts';

export const TOKEN_PATH = '/_regmirror/token';
export const SERVICE = 'regmirror';

/** The caller: a configured user, or nobody. */
export type Identity = { user: AuthUser } | { user: undefined };

const ANONYMOUS: Identity = { user: undefined };

function b64url(b: Buffer | string): string {
  return Buffer.from(b).toString('base64url');
}

function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

export class Authenticator {
  private readonly key = randomBytes(32);
  /** sha256(user:password) → checked ok: bcrypt costs ~50-100 ms, so each credential is checked once a while. */
  private readonly verified = new LRUCache<string, true>({ max: 1000, ttl: 5 * 60_000 });

  constructor(private config: AuthConfig) {}

  /**
   * Takes a reloaded [auth] (SIGHUP): new users, roles and passwords apply to the next request;
   * passwords checked under the old config are checked again; issued tokens stay valid for users
   * that still exist (a token names its user, whose roles are looked up when it is used).
   */
  update(config: AuthConfig): void {
    this.config = config;
    this.verified.clear();
  }

  get anonymousLocalPull(): boolean {
    return this.config.anonymousLocalPull;
  }

  /** Checks a user name and password; the user, or undefined when they do not match. */
  async checkPassword(name: string, password: string): Promise<AuthUser | undefined> {
    const user = this.config.users.get(name);
    if (user === undefined || password === '') return undefined;
    const cacheKey = createHash('sha256').update(`${name}\n${password}`).digest('hex');
    if (this.verified.has(cacheKey)) return user;
    const ok = user.bcryptHash !== undefined ? await bcrypt.compare(password, user.bcryptHash) : sameSecret(password, user.password ?? '');
    if (!ok) return undefined;
    this.verified.set(cacheKey, true);
    return user;
  }

  /** Issues a token for `user` (undefined: an anonymous token). */
  issueToken(user: AuthUser | undefined, now = Date.now()): { token: string; expiresIn: number; issuedAt: string } {
    const expiresIn = Math.max(60, Math.floor(this.config.tokenTtlMs / 1000));
    const payload = b64url(JSON.stringify({ sub: user?.name ?? '', exp: Math.floor(now / 1000) + expiresIn }));
    const sig = createHmac('sha256', this.key).update(payload).digest('base64url');
    return { token: `${payload}.${sig}`, expiresIn, issuedAt: new Date(now).toISOString() };
  }

  private verifyToken(token: string, now: number): Identity | undefined {
    const dot = token.indexOf('.');
    if (dot <= 0) return undefined;
    const payload = token.slice(0, dot);
    const sig = Buffer.from(token.slice(dot + 1), 'base64url');
    const want = createHmac('sha256', this.key).update(payload).digest();
    if (sig.length !== want.length || !timingSafeEqual(sig, want)) return undefined;
    let claims: { sub?: unknown; exp?: unknown };
    try {
      claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { sub?: unknown; exp?: unknown };
    } catch {
      return undefined;
    }
    if (typeof claims.exp !== 'number' || claims.exp * 1000 <= now || typeof claims.sub !== 'string') return undefined;
    if (claims.sub === '') return ANONYMOUS;
    const user = this.config.users.get(claims.sub);
    return user === undefined ? undefined : { user };
  }

  /** Parses `Basic base64(user:password)`; undefined when the header is not Basic. */
  static basic(header: string | undefined): { name: string; password: string } | undefined {
    const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
    if (m === null) return undefined;
    const decoded = Buffer.from(m[1] ?? '', 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon < 0 ? { name: decoded, password: '' } : { name: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }

  /**
   * The identity an Authorization header proves. No header, or Basic with an empty user name (what
   * containers/image sends when it has no credentials), is anonymous. Wrong credentials or a bad /
   * expired token: undefined (the caller answers 401, and the client fetches a fresh token).
   */
  async identify(header: string | undefined, now = Date.now()): Promise<Identity | undefined> {
    if (header === undefined || header === '') return ANONYMOUS;
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (bearer !== null) return this.verifyToken(bearer[1] ?? '', now);
    const basic = Authenticator.basic(header);
    if (basic === undefined) return undefined;
    if (basic.name === '') return ANONYMOUS;
    const user = await this.checkPassword(basic.name, basic.password);
    return user === undefined ? undefined : { user };
  }
}

/**
 * Checks that an Authorization header proves a user with `role` (the mirror's API and /metrics):
 * throws UNAUTHORIZED (with a Basic challenge) without valid credentials, DENIED without the role.
 */
export async function requireRole(auth: Authenticator, header: string | undefined, role: Role, what: string): Promise<void> {
  const who = await auth.identify(header);
  if (who?.user === undefined) throw new RegistryError('UNAUTHORIZED', `${what} needs a mirror user with the "${role}" role (Basic credentials or a token)`, { headers: { 'WWW-Authenticate': 'Basic realm="regmirror"' } });
  if (!who.user.roles.has(role)) throw new RegistryError('DENIED', `user "${who.user.name}" lacks the "${role}" role (its roles: ${[...who.user.roles].join(', ') || 'none'}; see [auth] in mirror.toml)`);
}

/** The challenge clients answer by fetching a token (with credentials when they have them). */
export function challenge(realmBase: string, scope?: string): Record<string, string> {
  const s = scope === undefined ? '' : `,scope="${scope}"`;
  return { 'WWW-Authenticate': `Bearer realm="${realmBase}${TOKEN_PATH}",service="${SERVICE}"${s}` };
}

/** What a request needs: nothing (mirrored content, anonymous local pulls) or a role. */
export function authorize(identity: Identity, needed: Role | undefined, realmBase: string, scope: string): void {
  if (needed === undefined) return;
  if (identity.user === undefined) {
    throw new RegistryError('UNAUTHORIZED', `authentication required: ${needed} in ${scope.split(':')[1] ?? 'this repository'} needs a mirror user with the "${needed}" role (docker login / skopeo --creds)`, {
      headers: challenge(realmBase, scope),
    });
  }
  if (!identity.user.roles.has(needed)) {
    throw new RegistryError('DENIED', `user "${identity.user.name}" lacks the "${needed}" role for ${scope.split(':')[1] ?? 'this repository'} (its roles: ${[...identity.user.roles].join(', ') || 'none'}; see [auth] in mirror.toml)`);
  }
}
