/**
 * Deterministic fixture images: real tar+gzip layers of pseudo-random bytes (AES-CTR stream, so
 * the same seed always yields the same digests), image configs with correct diff_ids, Docker
 * schema-2 and OCI manifests, and OCI indexes. Pushed with the registry API itself.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';

export const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** `size` deterministic pseudo-random bytes for `seed`. */
export function randomBytesFor(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(`key:${seed}`).digest().subarray(0, 16);
  const iv = createHash('sha256').update(`iv:${seed}`).digest().subarray(0, 16);
  const c = createCipheriv('aes-128-ctr', key, iv);
  return Buffer.concat([c.update(Buffer.alloc(size)), c.final()]);
}

function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148);
  h.write('0', 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return h;
}

/** A one-file tar archive. */
export function tarOf(name: string, content: Buffer): Buffer {
  const pad = (512 - (content.length % 512)) % 512;
  return Buffer.concat([tarHeader(name, content.length), content, Buffer.alloc(pad), Buffer.alloc(1024)]);
}

export interface Blob {
  digest: string;
  size: number;
  bytes: Buffer;
  mediaType: string;
}

export interface Layer extends Blob {
  diffId: string;
}

/** A gzip'd tar layer holding one file of `size` pseudo-random bytes. */
export function makeLayer(seed: string, size: number, mediaType: string): Layer {
  const tar = tarOf(`data-${seed.replace(/[^a-z0-9]/gi, '_')}.bin`, randomBytesFor(seed, size));
  const bytes = gzipSync(tar, { level: 1 });
  return { digest: sha256(bytes), size: bytes.length, bytes, mediaType, diffId: sha256(tar) };
}

export function makeConfig(layers: Layer[], arch: string, mediaType: string): Blob {
  const bytes = Buffer.from(
    JSON.stringify({
      architecture: arch,
      os: 'linux',
      config: { Cmd: ['/data.bin'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map(() => ({ created_by: 'regmirror test fixture' })),
    }),
  );
  return { digest: sha256(bytes), size: bytes.length, bytes, mediaType };
}

export interface Image {
  manifest: Blob;
  config: Blob;
  layers: Layer[];
  arch: string;
}

const descriptor = (b: Blob) => ({ mediaType: b.mediaType, digest: b.digest, size: b.size });

export const MT = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
} as const;

/** An image; `format` docker = schema 2, oci = OCI manifest. Layer sizes in bytes. */
export function makeImage(seed: string, layerSizes: number[], format: 'docker' | 'oci', arch = 'amd64'): Image {
  const layerMt = format === 'docker' ? MT.dockerLayer : MT.ociLayer;
  const layers = layerSizes.map((s, i) => makeLayer(`${seed}/layer${i}`, s, layerMt));
  const config = makeConfig(layers, arch, format === 'docker' ? MT.dockerConfig : MT.ociConfig);
  const mediaType = format === 'docker' ? MT.dockerManifest : MT.ociManifest;
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, config: descriptor(config), layers: layers.map(descriptor) }, null, 3));
  return { manifest: { digest: sha256(bytes), size: bytes.length, bytes, mediaType }, config, layers, arch };
}

export interface IndexImage {
  index: Blob;
  images: Image[];
}

/** An OCI index over one image per architecture. */
export function makeIndex(seed: string, archs: string[], layerSize: number): IndexImage {
  const images = archs.map((a) => makeImage(`${seed}/${a}`, [layerSize], 'oci', a));
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.ociIndex,
      manifests: images.map((im) => ({ ...descriptor(im.manifest), platform: { architecture: im.arch, os: 'linux' } })),
    }),
  );
  return { index: { digest: sha256(bytes), size: bytes.length, bytes, mediaType: MT.ociIndex }, images };
}

/** Monolithic blob upload (OCI distribution-spec: POST then PUT ?digest=). Skips blobs already there. */
export async function pushBlob(registryUrl: string, repo: string, blob: { digest: string; bytes: Buffer }, headers: Record<string, string> = {}): Promise<void> {
  const head = await fetch(`${registryUrl}/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD', headers });
  if (head.status === 200) return;
  const start = await fetch(`${registryUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers });
  if (start.status !== 202) throw new Error(`upload start for ${repo}: ${start.status} ${await start.text()}`);
  const loc = new URL(start.headers.get('location') ?? '', registryUrl);
  loc.searchParams.set('digest', blob.digest);
  const put = await fetch(loc, { method: 'PUT', body: blob.bytes, headers: { ...headers, 'content-type': 'application/octet-stream' } });
  if (put.status !== 201) throw new Error(`upload of ${blob.digest} to ${repo}: ${put.status} ${await put.text()}`);
}

export async function pushManifest(registryUrl: string, repo: string, reference: string, m: Blob, headers: Record<string, string> = {}): Promise<void> {
  const r = await fetch(`${registryUrl}/v2/${repo}/manifests/${reference}`, { method: 'PUT', body: m.bytes, headers: { ...headers, 'content-type': m.mediaType } });
  if (r.status !== 201) throw new Error(`manifest push ${repo}:${reference}: ${r.status} ${await r.text()}`);
}

export async function pushImage(registryUrl: string, repo: string, tag: string, im: Image, headers: Record<string, string> = {}): Promise<void> {
  for (const b of [im.config, ...im.layers]) await pushBlob(registryUrl, repo, b, headers);
  await pushManifest(registryUrl, repo, tag, im.manifest, headers);
}

export async function pushIndex(registryUrl: string, repo: string, tag: string, ix: IndexImage): Promise<void> {
  for (const im of ix.images) await pushImage(registryUrl, repo, im.manifest.digest, im);
  await pushManifest(registryUrl, repo, tag, ix.index);
}
