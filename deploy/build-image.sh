#!/usr/bin/env bash
# Build deploy/Dockerfile without a Docker engine: buildah, vfs storage (no overlay mount, no daemon).
#
#   deploy/build-image.sh [TAG]                                       # default TAG: localhost/lodestream:dev
#   BASE_IMAGE=python:3.11-slim-bookworm deploy/build-image.sh       # the official base, from an image registry
#
# Without BASE_IMAGE the base is made here once from Debian's packages (debootstrap bookworm with python3 and
# its venv module: needs root) and kept as localhost/lodestream-base:bookworm. It trusts this host's CA
# bundle, so pip works behind a TLS-inspecting proxy the host trusts. Missing tools are installed with
# apt-get when running as root. Run the image with podman (see deploy/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-localhost/lodestream:dev}
storage=(--storage-driver "${STORAGE_DRIVER:-vfs}")
base=${BASE_IMAGE:-localhost/lodestream-base:bookworm}

need=()
for tool in buildah podman runc; do command -v "$tool" >/dev/null || need+=("$tool"); done
[ -n "${BASE_IMAGE:-}" ] || command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "build-image.sh: missing ${need[*]} (apt-get install them)" >&2; exit 2; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
# crun refuses hosts with cgroup v1 or hybrid hierarchies; runc runs on both.
runtime=${RUNTIME:-$(command -v runc || command -v crun)}

if [ -z "${BASE_IMAGE:-}" ] && ! podman "${storage[@]}" image exists "$base"; then
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs.log"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    tar -C "$rootfs" --numeric-owner -c . \
        | podman "${storage[@]}" import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' - "$base" >/dev/null
fi

# --format docker keeps HEALTHCHECK (the OCI image format has no field for it).
buildah "${storage[@]}" bud --runtime "$runtime" --format docker --layers --network host \
    -f deploy/Dockerfile --ignorefile deploy/Dockerfile.dockerignore \
    --build-arg BASE_IMAGE="$base" -t "$tag" .
