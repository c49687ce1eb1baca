#!/usr/bin/env bash
# The newest Docker Engine Debian has (unstable's docker.io, 28.x), run nested in a container
# of the host's engine, so that isolation is proven on it too, not only on Debian stable's.
#   start   build (once, cached) and start the nested engine; load the devbox images into it
#   stop    stop and remove it (its storage too)
#   test    start, run the isolation, walkthrough and doctor tests against it, then restart
#           it mid-stream (tests/docker/test_engine_restart.py), stop (even on failure)
# The nested engine's socket is $NESTED_SOCKET on the host. The tests' pytest runs on the host
# but inside the nested engine's network and PID namespaces: "the engine's host" of the
# isolation tests (its addresses, the PIDs `docker inspect` reports) is then the container the
# nested engine runs in, as it would be on a machine of its own.
# Env: NESTED_NAME (container name), DEVBOX_IMAGE_CACHE, DEBIAN_MIRROR, DEVBOX_REBUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."

name=${NESTED_NAME:-devbox-test-engine-$$}
case $name in devbox-test-engine-*) ;; *) echo "nested-engine: NESTED_NAME must start with devbox-test-engine-" >&2; exit 2 ;; esac
cache=${DEVBOX_IMAGE_CACHE:-/var/cache/devbox}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
image=devbox/test-engine:sid
tmp=${TMPDIR:-/tmp}
tmp=${tmp%/}
sockdir=$tmp/$name
NESTED_SOCKET=$sockdir/docker.sock
# The nested engine's data root, on a tmpfs of the host at the same path inside and out (the
# tests read containers' files there). vfs copies every layer in full (~2 GB for the images
# alone) and this disk deletes that in minutes; a tmpfs goes at once.
data_root=/var/lib/$name
eval "$(.venv/bin/python -m devbox_cli.engine.images)"  # base=, proxy=, default=
images=("$proxy" "$default")

log() { printf 'nested-engine: %s (%ss)\n' "$*" "$SECONDS"; }
nested() { DOCKER_HOST=unix://$NESTED_SOCKET docker "$@"; }

build_image() {
  local rootfs=$cache/engine-sid
  if [ "${DEVBOX_REBUILD:-0}" = 1 ] || [ ! -x "$rootfs/usr/sbin/dockerd" ] || [ ! -x "$rootfs/usr/sbin/ip" ]; then
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
    log "debootstrap sid (docker.io, iptables, iproute2) into $rootfs"
    rm -rf "$rootfs" "$rootfs.tmp" && mkdir -p "$cache"
    debootstrap --variant=minbase --include=docker.io,iptables,iproute2,ca-certificates,procps \
      sid "$rootfs.tmp" "$mirror" >"$cache/engine-sid.log" 2>&1 \
      || { tail -n 20 "$cache/engine-sid.log" >&2; exit 1; }
    mv "$rootfs.tmp" "$rootfs"
    docker image rm "$image" >/dev/null 2>&1 || true  # ours, rebuilt from the new root
  fi
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    log "importing $image"
    tar -C "$rootfs" --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
        --exclude='./var/cache/apt/archives/*.deb' -c . \
      | docker import -c 'CMD ["/bin/bash"]' - "$image" >/dev/null
  fi
}

# Runs as the nested container's command. Without --privileged, /sys is read-only and there is
# no cgroup tree: mount one v1 hierarchy per line of /proc/self/cgroup (the host's layout, as
# cgroupns=private shows it) on a tmpfs, then start dockerd on the socket the host sees. /run
# is a fresh tmpfs, as at boot: a restart of this container (tests/docker/test_engine_restart.py)
# must not find the last dockerd's pid file and state there.
# shellcheck disable=SC2016  # expanded inside the container
inner='set -eu
mount -t tmpfs -o mode=755 run /run
mount -o remount,rw /sys
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
while IFS=: read -r _ ctrls _; do
  [ -n "$ctrls" ] || continue
  dir=${ctrls#name=}; opts=$ctrls
  case $ctrls in name=*) opts=none,$ctrls ;; esac
  mkdir -p "/sys/fs/cgroup/$dir"
  mount -t cgroup -o "$opts" cgroup "/sys/fs/cgroup/$dir"
  case $dir in *,*) for c in $(echo "$dir" | tr , " "); do ln -s "$dir" "/sys/fs/cgroup/$c"; done ;; esac
done </proc/self/cgroup
exec dockerd --host "unix://$1" --data-root "$2" --storage-driver vfs \
  --exec-opt native.cgroupdriver=cgroupfs'

start() {
  local missing
  for missing in "${images[@]}"; do
    docker image inspect "$missing" >/dev/null 2>&1 || { echo "nested-engine: no image $missing here; run make images" >&2; exit 1; }
  done
  build_image
  mkdir -p "$sockdir" "$data_root"
  mountpoint -q "$data_root" || mount -t tmpfs -o mode=700 "$name" "$data_root"
  log "starting $name (socket: $NESTED_SOCKET)"
  # --privileged fails on hosts without CAP_SYS_RESOURCE: every other capability instead.
  # The temp dir and the data root are bound at their own paths: the tests bind-mount files
  # from the first into containers, and hunt for secrets in containers' files in the second.
  docker run -d --name "$name" --label devbox.test-engine=1 \
    --cap-add ALL --cap-drop SYS_RESOURCE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --security-opt systempaths=unconfined --cgroupns=private \
    -v "$tmp:$tmp" -v "$data_root:$data_root" \
    "$image" sh -c "$inner" inner "$NESTED_SOCKET" "$data_root" >/dev/null
  for _ in $(seq 120); do
    nested info >/dev/null 2>&1 && break
    [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || break
    sleep 0.5
  done
  if ! nested info >/dev/null 2>&1; then
    docker logs --tail 30 "$name" >&2
    echo "nested-engine: the nested engine did not start" >&2
    exit 1
  fi
  nested version --format 'nested-engine: engine {{.Server.Version}} (API {{.Server.APIVersion}})'
  nested info --format 'nested-engine: storage {{.Driver}}, cgroup {{.CgroupDriver}} v{{.CgroupVersion}}, {{.OperatingSystem}}'
  log "loading ${images[*]}"
  docker save "${images[@]}" | nested load -q >/dev/null
}

stop() {
  docker rm -fv "$name" >/dev/null 2>&1 || true
  if mountpoint -q "$data_root"; then umount "$data_root"; fi
  rm -rf "$sockdir" "$data_root"
}

# pytest's exit 5: the pytest args given (say -k) selected none of these tests.
selected_none() { [ "$1" = 5 ] || exit "$1"; }

run_tests() {
  trap stop EXIT
  trap 'exit 130' INT TERM  # through the EXIT trap
  start
  local pid
  pid=$(docker inspect -f '{{.State.Pid}}' "$name")
  log "isolation, walkthrough and doctor tests against the nested engine"
  # In the background, so that a TERM runs the trap at once; removing the container then ends
  # pytest too (it is in the container's PID namespace).
  nsenter -t "$pid" -n -p -- env DOCKER_HOST="unix://$NESTED_SOCKET" CI="${CI:-true}" \
    .venv/bin/pytest -q -p no:cacheprovider tests/docker/test_isolation.py \
      tests/docker/test_walkthrough.py tests/docker/test_doctor.py "$@" &
  wait $! || selected_none $?
  # The daemon restart restarts the nested engine's container, which would end a pytest in
  # its namespaces: this one runs on the host, talking to the nested engine's socket.
  log "a daemon restart mid-stream, healed (restarts the nested engine)"
  env DOCKER_HOST="unix://$NESTED_SOCKET" CI="${CI:-true}" DEVBOX_TEST_ENGINE="$name" \
    DEVBOX_TEST_OUTER_HOST="${DOCKER_HOST:-unix:///var/run/docker.sock}" \
    .venv/bin/pytest -q -p no:cacheprovider tests/docker/test_engine_restart.py "$@" &
  wait $! || selected_none $?
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  test) shift; run_tests "$@" ;;
  *) echo "usage: $0 start|stop|test [pytest args]   (NESTED_NAME=devbox-test-engine-... for start/stop)" >&2; exit 2 ;;
esac
