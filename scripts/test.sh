#!/usr/bin/env bash
# `npm test`: type-check and build, then every unit and integration test in one node:test run
# (integration tests start a real docker-registry, regmirror processes and skopeo on 127.0.0.1),
# then the runtime tests (containerd + ctr, dockerd, skopeo with generated client configuration)
# inside a network namespace with only loopback, where the real gcr.io / Docker Hub are unreachable.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-system-deps.sh
npx --no-install tsc -p tsconfig.json --noEmit      # type-check sources and tests
npx --no-install tsc -p tsconfig.build.json          # the build the mirror processes run (dist/)
node --import tsx --test --test-concurrency=1 --test-timeout=900000 --test-reporter=spec \
  test/unit/*.test.ts test/contract/*.test.ts test/integration/*.test.ts
# The container image the runtime tests run under containerd, built while Debian's and npm's
# registries are reachable (scripts/build-image.sh: mmdebstrap + buildah, no internet needed).
image_dir=$(mktemp -d /tmp/regmirror-test-image.XXXXXX)
trap 'rm -rf "$image_dir"' EXIT
bash scripts/build-image.sh "oci-archive:$image_dir/regmirror-image.tar"
export REGMIRROR_TEST_IMAGE="$image_dir/regmirror-image.tar"
bash scripts/in-netns.sh node --import tsx --test --test-concurrency=1 --test-timeout=900000 --test-reporter=spec \
  test/runtime/*.test.ts
