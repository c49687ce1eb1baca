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

# crun, a second OCI runtime, registered in the engine so that `devbox create --runtime` is
# tested (tests/docker/test_limits.py). Runtimes are reloadable: a running dockerd picks a new
# one up from daemon.json on SIGHUP, so this never restarts an engine others are using.
daemon_json=/etc/docker/daemon.json
has_crun() { docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"crun"'; }
register_crun() {  # add crun to daemon.json's "runtimes" (other settings kept)
  need crun crun
  mkdir -p "$(dirname "$daemon_json")"
  python3 - "$daemon_json" "$(command -v crun)" <<'PY'
import json, os, sys
path, crun = sys.argv[1], sys.argv[2]
config = json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else {}
if config.get("runtimes", {}).get("crun", {}).get("path") != crun:
    config.setdefault("runtimes", {})["crun"] = {"path": crun}
    with open(path + ".tmp", "w") as f:
        json.dump(config, f, indent=2)
    os.replace(path + ".tmp", path)
PY
}

# crun refuses a hybrid cgroup layout (v1 hierarchies plus /sys/fs/cgroup/unified) while a
# controller is left on the v2 side ("drop all controllers from cgroupv2"); some VMs leave
# hugetlb there. Bind each such controller to a v1 hierarchy of its own, as systemd's hybrid
# layout does. Nothing uses them on the v2 side (its subtree_control is empty).
hybrid_cgroups() {
  local unified=/sys/fs/cgroup/unified c
  [ "$(id -u)" = 0 ] && [ -f "$unified/cgroup.controllers" ] || return 0
  [ -z "$(cat "$unified/cgroup.subtree_control")" ] || return 0
  for c in $(cat "$unified/cgroup.controllers"); do
    mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" \
      && echo "ensure-docker: mounted the $c cgroup controller (v1) for crun"
  done
}
hybrid_cgroups

if ! docker info >/dev/null 2>&1; then
  need dockerd docker.io
  need iptables iptables
  if [ "$(id -u)" != 0 ]; then
    echo "ensure-docker: the Docker Engine is not running; start it (e.g. sudo systemctl start docker)" >&2
    exit 1
  fi
  register_crun
  log=${TMPDIR:-/tmp}/devbox-dockerd.log
  echo "ensure-docker: starting dockerd (log: $log)"
  nohup dockerd >"$log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
fi
if ! has_crun; then
  pid=$(cat /var/run/docker.pid 2>/dev/null || true)  # the engine on the default socket
  if [ "$(id -u)" != 0 ] || [ -z "$pid" ]; then
    echo "ensure-docker: no crun runtime in this engine (not root, or dockerd not local); the crun test skips (fails under CI=true)" >&2
  else
    register_crun
    kill -HUP "$pid"
    for _ in $(seq 50); do has_crun && break; sleep 0.2; done
    has_crun || { echo "ensure-docker: dockerd did not load crun from $daemon_json" >&2; exit 1; }
    echo "ensure-docker: registered the crun runtime"
  fi
fi
need debootstrap debootstrap
need curl curl
