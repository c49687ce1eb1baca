#!/usr/bin/env bash
# Make sure a Docker Engine answers, and that the tools images/build.sh needs are here.
# On a machine with only the Docker client (as root, with apt), install Debian's docker.io
# and start dockerd in the background; anywhere else, say what is missing and fail.
set -euo pipefail

apt_updated=0
need() {  # need CMD PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-docker: '$1' is missing; install the '$2' package" >&2
    exit 1
  fi
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

if ! docker info >/dev/null 2>&1; then
  need dockerd docker.io
  need iptables iptables
  if [ "$(id -u)" != 0 ]; then
    echo "ensure-docker: the Docker Engine is not running; start it (e.g. sudo systemctl start docker)" >&2
    exit 1
  fi
  log=${TMPDIR:-/tmp}/devbox-dockerd.log
  echo "ensure-docker: starting dockerd (log: $log)"
  nohup dockerd >"$log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
fi
need debootstrap debootstrap
need curl curl
