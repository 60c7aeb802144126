#!/usr/bin/env bash
# Runs a command inside a fresh network namespace that has only loopback (root needed): real
# registry names (gcr.io, docker.io) are unreachable there, so a client that falls back to them
# fails at once and nothing leaves the machine. nsenter, not `ip netns exec`, which remounts /sys.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "the runtime tests (containerd, dockerd) need root: they start daemons in a network namespace" >&2
  exit 1
fi
ns="regmirror-test-$$"
ip netns add "$ns"
trap 'ip netns delete "$ns" 2>/dev/null || true' EXIT
ip netns exec "$ns" ip link set lo up
nsenter --net="/run/netns/$ns" "$@"
