/**
 * `regmirror verify IMAGE`: resolves the reference through the mirror and directly at the upstream
 * (with the same credentials config) and compares the repo digests — the GDC guide's "compare repo
 * digests" check, automated. `--local` instead re-hashes the cached manifest and every cached blob
 * it references (index children too) and names any corrupt one.
 * Exit: 0 match / intact, 1 mismatch / corruption, 3 one side could not be resolved.
 */
import { createReadStream } from 'node:fs';
import { request } from 'undici';
import { formatListen, type Config } from '../config/index.ts';
import { createLogger } from '../log/index.ts';
import { MANIFEST_ACCEPT, digestOf, isIndexType, newHasher, parseDigest, parseManifestJson, referencedDigests } from '../oci/index.ts';
import { routingOf } from './runtime.ts';
import { parseImageRef, type ImageRef } from '../mirror/index.ts';
import { UpstreamClient } from '../upstream/index.ts';
import { FsBlobStore, blobPath, metaDbPath } from '../store/index.ts';
import { SqliteMetaStore } from '../meta/index.ts';

export interface Side {
  ok: boolean;
  repoDigest?: string;
  digest?: string;
  detail: string;
}


/** The URL the mirror of `config` answers on (a wildcard listen address is reached on loopback). */
export function defaultMirrorUrl(config: Config): string {
  const { host, port } = config.server.listen;
  const reachable = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `${config.server.tlsCert === undefined ? 'http' : 'https'}://${formatListen({ host: reachable, port })}`;
}

const refOf = (ref: ImageRef): string => ref.digest ?? ref.tag ?? 'latest';

async function viaMirror(mirrorUrl: string, ref: ImageRef): Promise<Side> {
  const url = `${mirrorUrl}/v2/${ref.registry}/${ref.repository}/manifests/${refOf(ref)}`;
  try {
    const res = await request(url, { method: 'GET', headers: { accept: MANIFEST_ACCEPT }, headersTimeout: 60_000, bodyTimeout: 60_000 });
    const body = Buffer.from(await res.body.arrayBuffer());
    if (res.statusCode !== 200) {
      let message = `HTTP ${res.statusCode}`;
      try {
        message = (JSON.parse(body.toString('utf8')) as { errors: Array<{ message: string }> }).errors[0]?.message ?? message;
      } catch {
        /* not an OCI error body */
      }
      return { ok: false, detail: `mirror ${mirrorUrl}: ${message}` };
    }
    const digest = digestOf(body);
    const header = res.headers['docker-content-digest'];
    if (typeof header === 'string' && header !== digest) return { ok: false, detail: `mirror sent Docker-Content-Digest ${header} but the bytes hash to ${digest}` };
    const cache = res.headers['x-regmirror-cache'];
    return { ok: true, digest, repoDigest: `${ref.registry}/${ref.repository}@${digest}`, detail: `via ${mirrorUrl}, cache ${typeof cache === 'string' ? cache : 'unknown'}` };
  } catch (e) {
    return { ok: false, detail: `mirror ${mirrorUrl} unreachable: ${(e as Error).message}` };
  }
}

async function atUpstream(config: Config, ref: ImageRef): Promise<Side> {
  const reg = config.registries.find((r) => r.host === ref.registry);
  if (reg === undefined) return { ok: false, detail: `registry ${ref.registry} is not configured` };
  const client = new UpstreamClient(reg, createLogger('silent'));
  try {
    const head = await client.headManifest(ref.repository, refOf(ref));
    let digest = head.digest;
    if (digest === undefined || !digest.startsWith('sha256:')) digest = digestOf((await client.getManifest(ref.repository, refOf(ref))).body);
    return { ok: true, digest, repoDigest: `${ref.registry}/${ref.repository}@${digest}`, detail: reg.endpoint };
  } catch (e) {
    return { ok: false, detail: `upstream ${reg.endpoint}: ${(e as Error).message}` };
  } finally {
    await client.close();
  }
}

export interface VerifyResult {
  image: string;
  result: 'MATCH' | 'MISMATCH' | 'ERROR';
  mirror: Side;
  upstream: Side;
  note?: string;
}

/** Compares the repo digest through the mirror with the one at the upstream. */
export async function verifyRemote(config: Config, image: string, mirrorUrl: string): Promise<VerifyResult> {
  const ref = parseImageRef(image, routingOf(config));
  const [mirror, upstream] = await Promise.all([viaMirror(mirrorUrl, ref), atUpstream(config, ref)]);
  if (!mirror.ok || !upstream.ok) return { image, result: 'ERROR', mirror, upstream };
  if (mirror.digest === upstream.digest) return { image, result: 'MATCH', mirror, upstream };
  const ttl = config.registries.find((r) => r.host === ref.registry)?.tagTtlMs ?? config.cache.tagTtlMs;
  const note =
    ref.tag !== undefined && ref.digest === undefined
      ? `the tag moved at the upstream; the mirror trusts its cached answer for tag_ttl (${Math.round(ttl / 1000)} s) and follows the upstream after it revalidates`
      : 'the mirror and the upstream serve different bytes for the same reference';
  return { image, result: 'MISMATCH', mirror, upstream, note };
}

export interface LocalCheck {
  digest: string;
  kind: 'manifest' | 'blob';
  state: 'ok' | 'corrupt' | 'missing';
  detail?: string;
}

async function hashFile(path: string, algorithm: 'sha256' | 'sha512'): Promise<string> {
  const h = newHasher(algorithm);
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  return `${algorithm}:${h.digest('hex')}`;
}

/** Re-hashes a cached image: its manifest (index children too) and every cached blob they reference. */
export async function verifyLocal(config: Config, image: string): Promise<{ image: string; digest?: string; checks: LocalCheck[]; ok: boolean; detail?: string }> {
  const ref = parseImageRef(image, routingOf(config));
  const meta = new SqliteMetaStore(metaDbPath(config.server.dataDir));
  const store = new FsBlobStore(config.server.dataDir);
  try {
    const repo = `${ref.registry}/${ref.repository}`;
    const top = ref.digest ?? meta.getTag(repo, ref.tag ?? 'latest')?.digest;
    if (top === undefined) return { image, checks: [], ok: false, detail: `${image} is not in the cache at ${config.server.dataDir}` };
    const checks: LocalCheck[] = [];
    const seen = new Set<string>();
    const check = async (digest: string, kind: 'manifest' | 'blob'): Promise<Buffer | undefined> => {
      if (seen.has(digest)) return undefined;
      seen.add(digest);
      const d = parseDigest(digest);
      const path = blobPath(config.server.dataDir, d);
      if ((await store.stat(d)) === undefined) {
        checks.push({ digest, kind, state: 'missing', detail: 'not cached' });
        return undefined;
      }
      const actual = await hashFile(path, d.algorithm);
      if (actual !== digest) {
        checks.push({ digest, kind, state: 'corrupt', detail: `${path} hashes to ${actual}` });
        return undefined;
      }
      checks.push({ digest, kind, state: 'ok' });
      return kind === 'manifest' ? store.read(d) : undefined;
    };
    const walk = async (digest: string): Promise<void> => {
      const bytes = await check(digest, 'manifest');
      if (bytes === undefined) return;
      const refs = referencedDigests(bytes);
      const mt = parseManifestJson(bytes)?.mediaType;
      if ((typeof mt === 'string' && isIndexType(mt)) || refs.manifests.length > 0) {
        for (const child of refs.manifests) if (meta.getManifest(child) !== undefined) await walk(child);
      }
      for (const b of refs.blobs) await check(b, 'blob');
    };
    await walk(top);
    return { image, digest: top, checks, ok: checks[0]?.state === 'ok' && checks.every((c) => c.state !== 'corrupt') };
  } finally {
    meta.close();
  }
}
