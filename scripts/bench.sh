#!/usr/bin/env bash
# `npm run bench`: the benchmark on loopback (see test/bench/run.ts). Needs docker-registry and skopeo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-system-deps.sh hey curl
npx --no-install tsc -p tsconfig.build.json
exec node --import tsx test/bench/run.ts "$@"
