#!/usr/bin/env bash
# Build every image devbox needs, with no container registry and no network in the builds:
#   devbox/base:bookworm   a Debian root made with debootstrap on the host, then `docker import`
#   devbox/proxy:VERSION   the proxy (aiohttp from wheels downloaded on the host)
#   devbox/default:VERSION the default devbox image
# Env: DEVBOX_BASE_IMAGE (use an existing base instead), DEBIAN_MIRROR, DEVBOX_REBUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
cache=${DEVBOX_IMAGE_CACHE:-/var/cache/devbox}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base=${DEVBOX_BASE_IMAGE:-devbox/base:bookworm}
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=.venv/bin/python

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

if [ -z "${DEVBOX_BASE_IMAGE:-}" ] && { [ "${DEVBOX_REBUILD:-0}" = 1 ] || ! have_image "$base"; }; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
  rootfs="$cache/rootfs"
  if [ ! -x "$rootfs/usr/bin/python3" ] || [ ! -x "$rootfs/usr/bin/curl" ]; then
    echo "images: debootstrap bookworm into $rootfs"
    rm -rf "$rootfs" && mkdir -p "$cache"
    debootstrap --variant=minbase \
      --include=python3,python3-venv,curl,ca-certificates,procps,netbase \
      bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
      || { tail -n 20 "$cache/debootstrap.log"; exit 1; }
  fi
  echo "images: importing $base"
  tar -C "$rootfs" --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
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

echo "images: building devbox/proxy:$version"
docker build -q --network none --build-arg "BASE=$base" -f proxy/Dockerfile \
  -t "devbox/proxy:$version" -t devbox/proxy:latest . >/dev/null
echo "images: building devbox/default:$version"
docker build -q --network none --build-arg "BASE=$base" -f images/default.Dockerfile \
  -t "devbox/default:$version" -t devbox/default:latest images >/dev/null
docker image ls --filter reference='devbox/*' --format '  {{.Repository}}:{{.Tag}}  {{.Size}}'
