#!/usr/bin/env bash
# Build every image devbox needs: `devbox images build` (devbox_cli/services/image_build.py),
# the one build path, run with this checkout's Python. Here, with no registry, the base is a
# Debian root made with debootstrap (cached in $DEVBOX_IMAGE_CACHE, default /var/cache/devbox);
# where the engine can pull, debian:bookworm-slim. Arguments go to `devbox images build`.
# Env: DEBIAN_MIRROR, DEVBOX_IMAGE_CACHE, DEVBOX_REBUILD=1 (as --rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=.venv/bin/python
args=()
[ "${DEVBOX_REBUILD:-0}" = 1 ] && args+=(--rebuild)
exec "$python" -m devbox_cli images build "${args[@]}" "$@"
