#!/usr/bin/env bash
# `npm test`: type-check and build, then every unit and integration test in one node:test run
# (integration tests start a real docker-registry, regmirror processes and skopeo on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-system-deps.sh
npx --no-install tsc -p tsconfig.json --noEmit      # type-check sources and tests
npx --no-install tsc -p tsconfig.build.json          # the build the mirror processes run (dist/)
exec node --import tsx --test --test-concurrency=1 --test-timeout=900000 --test-reporter=spec \
  test/unit/*.test.ts test/integration/*.test.ts
