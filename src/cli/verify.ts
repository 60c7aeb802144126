/**
 * `regmirror verify IMAGE`: resolves the reference through the mirror and directly at the upstream
 * (with the same credentials config) and compares the repo digests — the GDC guide's "compare repo
 * digests" check, automated. `--local` instead re-hashes the cached manifest and every cached blob
 * it references (index children too) and names any corrupt one.
 * Exit: 0 match / intact, 1 mismatch / corruption, 3 one side could not be resolved.
 */
import { request } from 'undici';
import { formatListen, type Config } from '../config/index.ts';
import { createLogger } from '../log/index.ts';
import { MANIFEST_ACCEPT, digestOf } from '../oci/index.ts';
import { openStores, routingOf } from './runtime.ts';
import { verifyStored, type LocalCheck } from '../lifecycle/index.ts';
import { parseImageRef, type ImageRef } from '../mirror/index.ts';
import { UpstreamClient } from '../upstream/index.ts';
import { referenceOf } from '../routing/index.ts';

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

async function viaMirror(mirrorUrl: string, ref: ImageRef): Promise<Side> {
  const url = `${mirrorUrl}/v2/${ref.registry}/${ref.repository}/manifests/${referenceOf(ref)}`;
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
    const head = await client.headManifest(ref.repository, referenceOf(ref));
    let digest = head.digest;
    if (digest === undefined || !digest.startsWith('sha256:')) digest = digestOf((await client.getManifest(ref.repository, referenceOf(ref))).body);
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

/** Re-hashes a cached image: its manifest (index children too) and every cached blob they reference. */
export async function verifyLocal(config: Config, image: string): Promise<{ image: string; digest?: string; checks: LocalCheck[]; ok: boolean; detail?: string }> {
  const ref = parseImageRef(image, routingOf(config));
  const { store, meta, close } = openStores(config);
  try {
    const repo = `${ref.registry}/${ref.repository}`;
    const top = ref.digest ?? (await meta.getTag(repo, ref.tag ?? 'latest'))?.digest;
    if (top === undefined) return { image, checks: [], ok: false, detail: `${image} is not in the cache at ${config.server.dataDir}` };
    return { image, digest: top, ...(await verifyStored(store, meta, top)) };
  } finally {
    await close();
  }
}
