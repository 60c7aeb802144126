/**
 * Credential sources for an upstream registry (DESIGN §3), resolved into one of three shapes:
 * Basic user/password, an OAuth2 refresh token (Docker `identitytoken`), or a static bearer token.
 * Docker credential helpers (`docker-credential-<name> get`, server URL on stdin) run on demand and
 * their answer is kept for a few minutes. Secrets never leave this module except in request headers.
 */
import { spawn } from 'node:child_process';
import type { Credential, CredentialConfig } from '../config/index.ts';

export type { Credential };

/** Where a credential comes from, and the config key to name in hints. */
export interface CredentialProvider {
  readonly configKey: string;
  get(): Promise<Credential | undefined>;
}

const HELPER_TTL_MS = 5 * 60_000;
const HELPER_TIMEOUT_MS = 15_000;

/** Thrown when a credential helper fails; the message never carries its output. */
export class CredentialHelperError extends Error {
  readonly code = 'ERR_CREDENTIAL_HELPER';
}

/** Runs `docker-credential-<helper> get` with `serverUrl` on stdin (docker-credential-helpers protocol). */
export function runCredentialHelper(helper: string, serverUrl: string): Promise<Credential | undefined> {
  return new Promise((resolve, reject) => {
    const child = spawn(`docker-credential-${helper}`, ['get'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.resume();
    const timer = setTimeout(() => child.kill('SIGKILL'), HELPER_TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new CredentialHelperError(`credential helper docker-credential-${helper} could not run: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const text = Buffer.concat(out).toString('utf8');
      if (code !== 0) {
        // "credentials not found in native keychain" is the protocol's way of saying none.
        if (/credentials not found/i.test(text)) return resolve(undefined);
        return reject(new CredentialHelperError(`credential helper docker-credential-${helper} exited with ${code}`));
      }
      try {
        const parsed = JSON.parse(text) as { Username?: unknown; Secret?: unknown };
        const username = typeof parsed.Username === 'string' ? parsed.Username : '';
        const secret = typeof parsed.Secret === 'string' ? parsed.Secret : '';
        if (secret === '') return resolve(undefined);
        if (username === '<token>') return resolve({ kind: 'refresh', username, refreshToken: secret });
        resolve({ kind: 'basic', username, password: secret });
      } catch {
        reject(new CredentialHelperError(`credential helper docker-credential-${helper} printed no valid JSON`));
      }
    });
    child.stdin.end(serverUrl);
  });
}

/** Builds the provider for a registry's configured credential source. */
export function credentialProvider(auth: CredentialConfig): CredentialProvider {
  switch (auth.source) {
    case 'static':
      return { configKey: auth.configKey, get: async () => auth.credential };
    case 'helper': {
      let cached: { at: number; value: Credential | undefined } | undefined;
      let running: Promise<Credential | undefined> | undefined;
      return {
        configKey: auth.configKey,
        get: async () => {
          if (cached !== undefined && Date.now() - cached.at < HELPER_TTL_MS) return cached.value;
          running ??= runCredentialHelper(auth.helper, auth.serverUrl).then(
            (value) => {
              cached = { at: Date.now(), value };
              running = undefined;
              return value;
            },
            (e: unknown) => {
              running = undefined;
              throw e;
            },
          );
          return running;
        },
      };
    }
  }
}
