#!/usr/bin/env bash
# Build every image devbox needs, with no container registry and no network in the builds:
#   devbox/base:bookworm-H    a Debian root made with debootstrap on the host, then `docker import`
#   devbox/proxy:VERSION-H    the proxy (aiohttp from wheels downloaded on the host)
#   devbox/default:VERSION-H  the default devbox image
# H is a digest of each image's build inputs (devbox_cli/engine/images.py, which names them).
# Env: DEVBOX_BASE_IMAGE (use an existing base instead), DEBIAN_MIRROR, DEVBOX_REBUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=.venv/bin/python
eval "$("$python" -m devbox_cli.engine.images)"  # base=, proxy=, default=
assets=devbox_cli/images
cache=${DEVBOX_IMAGE_CACHE:-/var/cache/devbox}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=$(paste -sd, "$assets/base-packages.txt")
base=${DEVBOX_BASE_IMAGE:-$base}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

if [ -z "${DEVBOX_BASE_IMAGE:-}" ] && { [ "${DEVBOX_REBUILD:-0}" = 1 ] || ! have_image "$base"; }; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
  # One root per package list (the tag's digest), made whole or not at all.
  rootfs="$cache/rootfs-${base##*:}"
  if [ ! -f "$rootfs/.complete" ]; then
    echo "images: debootstrap bookworm ($packages) into $rootfs"
    rm -rf "$rootfs" && mkdir -p "$cache"
    debootstrap --variant=minbase --include="$packages" \
      bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
      || { tail -n 20 "$cache/debootstrap.log"; exit 1; }
    touch "$rootfs/.complete"
  fi
  echo "images: importing $base"
  tar -C "$rootfs" --exclude=./.complete --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
      --exclude='./var/cache/apt/archives/*.deb' -c . \
    | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$base" >/dev/null
fi

wheels=images/.cache/wheels
# The wheel cache is keyed on the requirements, so a changed pin downloads anew.
reqs_sum=$(sha256sum proxy/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$wheels/.complete" 2>/dev/null)" != "$reqs_sum" ] || [ "${DEVBOX_REBUILD:-0}" = 1 ]; then
  echo "images: downloading proxy wheels"
  rm -rf "$wheels" && mkdir -p "$wheels"
  "$python" -m pip download -q --only-binary=:all: --python-version 3.11 \
    --platform "manylinux_2_28_$(uname -m)" --platform "manylinux2014_$(uname -m)" \
    --platform "manylinux_2_17_$(uname -m)" -d "$wheels" -r proxy/requirements.txt
  echo "$reqs_sum" >"$wheels/.complete"
fi

# A tag names its inputs, so an image already there is current (DEVBOX_REBUILD=1 redoes it).
if [ "${DEVBOX_REBUILD:-0}" = 1 ] || ! have_image "$proxy"; then
  echo "images: building $proxy"
  docker build -q --network none --build-arg "BASE=$base" -f proxy/Dockerfile \
    -t "$proxy" -t devbox/proxy:latest . >/dev/null
fi
if [ "${DEVBOX_REBUILD:-0}" = 1 ] || ! have_image "$default"; then
  echo "images: building $default"
  docker build -q --network none --build-arg "BASE=$base" -f "$assets/default.Dockerfile" \
    -t "$default" -t devbox/default:latest "$assets" >/dev/null
fi
docker image ls --filter reference='devbox/*' --format '  {{.Repository}}:{{.Tag}}  {{.Size}}'
