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
exec bash scripts/in-netns.sh node --import tsx --test --test-concurrency=1 --test-timeout=900000 --test-reporter=spec \
  test/runtime/*.test.ts
