import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RegistryError, checkPushedManifest } from '../../src/oci/index.ts';

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const DOCKER = 'application/vnd.docker.distribution.manifest.v2+json';
const desc = (mediaType: string) => ({ mediaType, digest: `sha256:${'a'.repeat(64)}`, size: 10 });
const bytes = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

function invalid(ct: string | undefined, body: unknown, message: RegExp): void {
  assert.throws(() => checkPushedManifest(ct, bytes(body)), (e: unknown) => e instanceof RegistryError && e.code === 'MANIFEST_INVALID' && message.test(e.message));
}

test('a well-formed manifest of each type is accepted with its media type', () => {
  const image = { schemaVersion: 2, mediaType: OCI_MANIFEST, config: desc('application/vnd.oci.image.config.v1+json'), layers: [desc('application/vnd.oci.image.layer.v1.tar+gzip')] };
  assert.equal(checkPushedManifest(OCI_MANIFEST, bytes(image)).mediaType, OCI_MANIFEST);
  assert.equal(checkPushedManifest(undefined, bytes({ ...image, mediaType: undefined })).mediaType, OCI_MANIFEST, 'OCI shape without mediaType');
  assert.equal(checkPushedManifest(OCI_INDEX, bytes({ schemaVersion: 2, manifests: [desc(OCI_MANIFEST)] })).mediaType, OCI_INDEX);
  assert.equal(checkPushedManifest(`${DOCKER}; charset=utf-8`, bytes({ ...image, mediaType: DOCKER })).mediaType, DOCKER);
});

test('a body that is not what its Content-Type says is MANIFEST_INVALID, naming the field', () => {
  invalid(OCI_INDEX, { hello: 1 }, /schemaVersion must be 2/);
  invalid(OCI_INDEX, { schemaVersion: 2, mediaType: OCI_MANIFEST, config: desc('x'), layers: [] }, /Content-Type is .* but the manifest's mediaType is/);
  invalid(OCI_INDEX, { schemaVersion: 2, config: desc('x'), layers: [] }, /must have a manifests array/);
  invalid(DOCKER, { schemaVersion: 2, config: desc('x'), layers: [] }, /must carry "mediaType"/);
  invalid(OCI_MANIFEST, { schemaVersion: 2, config: desc('x') }, /must have a layers array/);
  invalid(OCI_MANIFEST, { schemaVersion: 2, config: { digest: 'sha256:zz', size: 1, mediaType: 'x' }, layers: [] }, /config\.digest/);
  invalid(OCI_MANIFEST, { schemaVersion: 2, config: desc('x'), layers: [{ ...desc('x'), size: -1 }] }, /layers\[0\]\.size/);
  invalid(OCI_MANIFEST, { schemaVersion: 2, config: desc('x'), layers: [], manifests: [] }, /ambiguous/);
  invalid(OCI_INDEX, { schemaVersion: 2, manifests: [], layers: [] }, /ambiguous/);
  invalid(undefined, { schemaVersion: 1, name: 'x' }, /not a supported manifest/);
  invalid(OCI_MANIFEST, { schemaVersion: 2, config: desc('x'), layers: [], subject: { digest: 'nope' } }, /subject\.mediaType/);
  assert.throws(() => checkPushedManifest(OCI_INDEX, Buffer.from('[1,2]')), /not a JSON object/);
});
