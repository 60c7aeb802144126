#!/usr/bin/env bash
# Builds the regmirror container image on a machine without internet, from what Debian's package
# mirror and the npm registry give: a Debian 12 root filesystem made by mmdebstrap (essential
# packages + libstdc++6, ca-certificates), this machine's Node.js binary (Debian 12's nodejs is 18,
# below what regmirror needs), regmirror's own production install (dist/ as built here, npm ci
# --omit=dev), assembled by buildah into an OCI image equivalent to packaging/container/Dockerfile:
# non-root (uid 1000), a /var/lib/regmirror volume, /etc/regmirror/mirror.toml, port 5000, serve.
#
#   bash scripts/build-image.sh [DEST]     DEST: a buildah/skopeo destination, default
#                                          oci-archive:regmirror-image.tar (also docker://host/repo:tag)
# Needs root, mmdebstrap and buildah (apt-get install mmdebstrap buildah; installed when missing as root).
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)
dest="${1:-oci-archive:${root_dir}/regmirror-image.tar}"
version=$(node -p 'require("./package.json").version')
bash scripts/ensure-system-deps.sh mmdebstrap buildah
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
work=$(mktemp -d /tmp/regmirror-image.XXXXXX)
ctr=""
cleanup() {
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== Debian root filesystem (mmdebstrap, bookworm)" >&2
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mmdebstrap --quiet --variant=essential --include=libstdc++6,ca-certificates,tzdata \
  --dpkgopt='path-exclude=/usr/share/{doc,man,locale}/*' bookworm "$work/rootfs.tar" "${mirror:-http://deb.debian.org/debian}"

echo "== regmirror production install" >&2
node scripts/build-if-stale.mjs
app="$work/app"
mkdir -p "$app"
cp -r bin dist config package.json package-lock.json LICENSE README.md mirror.toml.example "$app/"
find "$app/dist" -name '*.map' -delete
# The dependencies without devDependencies, scripts skipped: better-sqlite3's addon is the one
# built here for this very Node.js binary (no download, no compiler in the image).
(cd "$app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
rm -rf "$app/node_modules/better-sqlite3/build" "$app/node_modules/typescript"
cp -r node_modules/better-sqlite3/build "$app/node_modules/better-sqlite3/build"

echo "== image (buildah)" >&2
ctr=$(buildah from --quiet scratch)
mnt=$(buildah mount "$ctr")
tar -C "$mnt" -xf "$work/rootfs.tar"
install -D -m 0755 "$(command -v node)" "$mnt/usr/local/bin/node"
mkdir -p "$mnt/opt" "$mnt/etc/regmirror" "$mnt/var/lib/regmirror"
cp -r "$app" "$mnt/opt/regmirror"
cp packaging/container/mirror.toml "$mnt/etc/regmirror/mirror.toml"
echo 'regmirror:x:1000:1000:regmirror:/var/lib/regmirror:/usr/sbin/nologin' >> "$mnt/etc/passwd"
echo 'regmirror:x:1000:' >> "$mnt/etc/group"
chown 1000:1000 "$mnt/var/lib/regmirror"
buildah umount "$ctr" >/dev/null
buildah config \
  --user 1000:1000 \
  --workingdir /var/lib/regmirror \
  --env REGMIRROR_CONFIG=/etc/regmirror/mirror.toml \
  --port 5000 \
  --volume /var/lib/regmirror \
  --stop-signal SIGTERM \
  --label org.opencontainers.image.title=regmirror \
  --label "org.opencontainers.image.version=$version" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --entrypoint '["/usr/local/bin/node", "--max-semi-space-size=4", "/opt/regmirror/bin/regmirror.js"]' \
  --cmd serve \
  "$ctr"
buildah commit --quiet --format oci --rm "$ctr" "localhost/regmirror:$version" >/dev/null
ctr=""
buildah push --quiet "localhost/regmirror:$version" "$dest"
buildah rmi "localhost/regmirror:$version" >/dev/null 2>&1 || true
echo "regmirror:$version -> $dest" >&2
