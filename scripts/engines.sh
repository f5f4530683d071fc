#!/usr/bin/env bash
# engines.sh: extra, separate Docker engines ("hosts") for krane's multi-host tests. Each engine
# is its own dockerd in its own network namespace, next to (never instead of) the machine's
# engine, so tests can run several krane workers on several hosts, take one host's engine down
# (an outage) and bring it back. Used by tests/src/engines.rs; usable by hand too.
#
#   engines.sh start NAME INDEX   create (or resume) engine NAME; idempotent
#   engines.sh stop NAME          SIGTERM its dockerd and wait (an outage); netns and data stay
#   engines.sh destroy NAME       remove its containers, stop it, delete netns, veth and data
#   engines.sh load NAME IMAGE... copy images from the machine's engine (docker save | load)
#   engines.sh status NAME        print its state; exit 0 running, 3 stopped, 4 absent
#
# NAME: 1-10 characters [a-z0-9], starting with a letter (interface names are kr-NAME-o and
# kr-NAME-i, at most 15 characters). INDEX: 1-254, unique among the engines alive on the
# machine; it picks the addresses:
#   10.200.INDEX.1/30  root-namespace end of the veth pair (kr-NAME-o)
#   10.200.INDEX.2/30  the engine's end (kr-NAME-i): the advertise host of its published ports
#   10.210.INDEX.1/24  the engine's docker0 (--bip), visible only inside its namespace
# Files: /run/krane-engines/NAME.sock (API socket), NAME.pid, NAME.log (dockerd's output, kept
# after destroy), NAME.json (its config, so /etc/docker/daemon.json is not read), NAME-exec
# (exec-root); /var/lib/krane-engines/NAME (data-root). Containers run under the cgroup parent
# /krane-NAME.
#
# dockerd is started with `nsenter --net` (not `ip netns exec`, whose private /sys remount hides
# the cgroup mounts). A second dockerd must never run in the root network namespace: it would
# take over the bridge and iptables chains of the machine's engine. Without a system containerd
# (/run/containerd/containerd.sock) each dockerd runs its own containerd under its exec-root;
# with one, the per-engine containerd namespaces keep the engines apart. The engine's dockerd
# manages iptables and net.ipv4.ip_forward inside its own namespace only; nothing in the root
# namespace (iptables, sysctls) is changed. Ports published on 0.0.0.0 are reachable from the
# root namespace at 10.200.INDEX.2; nothing is routed beyond the veth pair.
#
# Environment: KRANE_ENGINE_START_TIMEOUT (seconds, default 30), KRANE_ENGINE_STOP_TIMEOUT
# (seconds before SIGKILL, default 60), KRANE_ENGINE_SHUTDOWN_TIMEOUT (dockerd's
# --shutdown-timeout for its containers, default 5).
set -euo pipefail

STATE_DIR=/run/krane-engines
DATA_DIR=/var/lib/krane-engines
START_TIMEOUT="${KRANE_ENGINE_START_TIMEOUT:-30}"
STOP_TIMEOUT="${KRANE_ENGINE_STOP_TIMEOUT:-60}"
SHUTDOWN_TIMEOUT="${KRANE_ENGINE_SHUTDOWN_TIMEOUT:-5}"

usage() {
  sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

die() {
  echo "error: $*" >&2
  exit 1
}

say() { # progress, on stderr; stdout carries only results
  echo "engine ${NAME:-?}: $*" >&2
}

set_name() { # $1: engine name; sets NAME and every path derived from it
  [[ "$1" =~ ^[a-z][a-z0-9]{0,9}$ ]] ||
    die "engine name '$1' must be 1-10 characters [a-z0-9] starting with a letter"
  NAME="$1"
  NETNS="/run/netns/$NAME"
  OUTER="kr-$NAME-o"
  INNER="kr-$NAME-i"
  SOCK="$STATE_DIR/$NAME.sock"
  PIDFILE="$STATE_DIR/$NAME.pid"
  LOG="$STATE_DIR/$NAME.log"
  CONFIG="$STATE_DIR/$NAME.json"
  EXEC_ROOT="$STATE_DIR/$NAME-exec"
  DATA_ROOT="$DATA_DIR/$NAME"
  CGROUP_PARENT="/krane-$NAME"
  DOCKER_HOST_URL="unix://$SOCK"
}

check_index() { # $1: index
  if ! [[ "$1" =~ ^[1-9][0-9]{0,2}$ ]] || (($1 > 254)); then
    die "engine index '$1' must be a number from 1 to 254"
  fi
}

require_root() {
  [[ $EUID -eq 0 ]] || die "engines.sh needs root (network namespaces, dockerd)"
  local tool
  for tool in ip nsenter setsid dockerd docker; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
  done
}

engine() { # the engine's docker CLI
  docker -H "$DOCKER_HOST_URL" "$@"
}

dockerd_pid() { # prints the pid of this engine's dockerd if it runs
  local pid
  [[ -f "$PIDFILE" ]] || return 1
  pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
  # Same pid, but is it ours (and not a recycled pid of another engine's dockerd)?
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--pidfile $PIDFILE " || return 1
  echo "$pid"
}

running() { # $1: pid; true while that process exists and is not a zombie
  local state
  state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [[ -n "$state" && "$state" != Z ]]
}

answers() {
  engine info >/dev/null 2>&1
}

current_index() { # prints the index this engine's veth was created with
  local addr
  addr="$(ip -o -4 addr show dev "$OUTER" 2>/dev/null | awk '{print $4}' | head -n 1)"
  [[ "$addr" =~ ^10\.200\.([0-9]+)\.1/30$ ]] || return 1
  echo "${BASH_REMATCH[1]}"
}

index_holder() { # $1: index; prints the root-namespace interface already using 10.200.INDEX.x
  ip -o -4 addr show | awk -v prefix="10.200.$1." 'index($4, prefix) == 1 {print $2; exit}'
}

cgroup_dirs() { # this engine's cgroup parent in every mounted hierarchy
  local dir
  for dir in /sys/fs/cgroup/"${CGROUP_PARENT#/}" /sys/fs/cgroup/*/"${CGROUP_PARENT#/}"; do
    [[ -d "$dir" ]] && echo "$dir"
  done
  return 0
}

kill_leftovers() { # SIGKILLs whatever still runs in the engine's namespace or cgroups
  local pids="" dir
  if [[ -e "$NETNS" ]]; then
    pids="$(ip netns pids "$NAME" 2>/dev/null || true)"
  fi
  while read -r dir; do
    [[ -n "$dir" ]] || continue
    pids="$pids $(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null || true)"
  done < <(cgroup_dirs)
  pids="$(echo "$pids" | tr ' ' '\n' | grep -E '^[0-9]+$' | sort -u | tr '\n' ' ' || true)"
  if [[ -n "${pids// /}" ]]; then
    say "killing leftover processes: $pids"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.5
  fi
}

unmount_leftovers() { # mounts dockerd left under its data-root or exec-root (after a SIGKILL)
  local mnt mounts
  mounts="$(awk -v data="$DATA_ROOT" -v execroot="$EXEC_ROOT" '
    $5 == data || index($5, data "/") == 1 || $5 == execroot || index($5, execroot "/") == 1 {
      print length($5), $5
    }' /proc/self/mountinfo | sort -rn | cut -d' ' -f2-)"
  while read -r mnt; do
    [[ -n "$mnt" ]] || continue
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || say "cannot unmount $mnt"
  done <<<"$mounts"
}

cmd_start() { # NAME INDEX
  [[ $# -eq 2 ]] || usage
  set_name "$1"
  check_index "$2"
  local index="$2" existing holder
  require_root
  mkdir -p "$STATE_DIR" "$DATA_DIR"

  if existing="$(current_index)" && [[ "$existing" != "$index" ]]; then
    die "engine $NAME exists with index $existing, not $index; destroy it first"
  fi
  holder="$(index_holder "$index")"
  if [[ -n "$holder" && "$holder" != "$OUTER" ]]; then
    die "index $index (10.200.$index.0/30) is already used by interface $holder" \
      "(an engine kr-<name>-o is destroyed with: engines.sh destroy <name>)"
  fi

  if [[ ! -e "$NETNS" ]]; then
    say "creating network namespace $NAME"
    ip netns add "$NAME"
  fi
  ip -n "$NAME" link set lo up
  if ! ip link show "$OUTER" >/dev/null 2>&1; then
    say "creating veth $OUTER (10.200.$index.1) <-> $INNER (10.200.$index.2)"
    ip link add "$OUTER" type veth peer name "$INNER" netns "$NAME"
  fi
  ip addr replace "10.200.$index.1/30" dev "$OUTER"
  ip link set "$OUTER" up
  ip -n "$NAME" addr replace "10.200.$index.2/30" dev "$INNER"
  ip -n "$NAME" link set "$INNER" up

  local pid started=$SECONDS
  if pid="$(dockerd_pid)"; then
    say "dockerd already running (pid $pid)"
  else
    rm -f "$PIDFILE"
    mkdir -p "$EXEC_ROOT" "$DATA_ROOT"
    echo '{}' >"$CONFIG"
    echo "=== $(date -u +%FT%TZ) engines.sh start $NAME $index" >>"$LOG"
    say "starting dockerd (log $LOG)"
    # setsid + redirected stdio: dockerd outlives this script and holds none of its pipes.
    setsid nsenter --net="$NETNS" dockerd \
      --config-file "$CONFIG" \
      --host "$DOCKER_HOST_URL" \
      --data-root "$DATA_ROOT" \
      --exec-root "$EXEC_ROOT" \
      --pidfile "$PIDFILE" \
      --containerd-namespace "krane-$NAME" \
      --containerd-plugins-namespace "krane-$NAME-plugins" \
      --bip "10.210.$index.1/24" \
      --cgroup-parent "$CGROUP_PARENT" \
      --shutdown-timeout "$SHUTDOWN_TIMEOUT" \
      </dev/null >>"$LOG" 2>&1 &
    pid=$!
  fi

  local waited=0
  until answers; do
    if ! running "$pid"; then
      tail -n 20 "$LOG" >&2 || true
      die "dockerd of engine $NAME exited during start (log $LOG)"
    fi
    if ((waited >= START_TIMEOUT * 5)); then
      tail -n 20 "$LOG" >&2 || true
      die "engine $NAME did not answer within ${START_TIMEOUT}s (log $LOG)"
    fi
    if ((waited > 0 && waited % 5 == 0)); then
      say "waiting for dockerd to answer ($((waited / 5))s)"
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  say "ready after about $((SECONDS - started))s"
  echo "DOCKER_HOST=$DOCKER_HOST_URL"
  echo "ADVERTISE=10.200.$index.2"
}

cmd_stop() { # NAME
  [[ $# -eq 1 ]] || usage
  set_name "$1"
  require_root
  local pid
  if ! pid="$(dockerd_pid)"; then
    say "dockerd is not running"
    return 0
  fi
  say "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  local waited=0
  while running "$pid"; do
    if ((waited >= STOP_TIMEOUT * 10)); then
      say "dockerd did not exit within ${STOP_TIMEOUT}s of SIGTERM; killing the engine"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      kill_leftovers
      break
    fi
    if ((waited > 0 && waited % 50 == 0)); then
      say "waiting for dockerd to exit ($((waited / 10))s)"
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  say "stopped after about $((waited / 10))s"
}

cmd_destroy() { # NAME
  [[ $# -eq 1 ]] || usage
  set_name "$1"
  require_root
  if dockerd_pid >/dev/null && answers; then
    local ids
    ids="$(engine ps -aq)"
    if [[ -n "$ids" ]]; then
      say "removing $(echo "$ids" | wc -l) container(s)"
      # shellcheck disable=SC2086
      engine rm -f -v $ids >/dev/null || say "could not remove every container"
    fi
  fi
  cmd_stop "$NAME"
  kill_leftovers
  unmount_leftovers
  local dir
  while read -r dir; do
    [[ -n "$dir" ]] || continue
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || say "cannot remove cgroup $dir"
  done < <(cgroup_dirs)
  if ip link show "$OUTER" >/dev/null 2>&1; then
    ip link del "$OUTER"
  fi
  if [[ -e "$NETNS" ]]; then
    ip netns del "$NAME"
  fi
  rm -rf --one-file-system "$DATA_ROOT" "$EXEC_ROOT"
  rm -f "$SOCK" "$PIDFILE" "$CONFIG"
  local left=()
  [[ -e "$NETNS" ]] && left+=("netns $NETNS")
  ip link show "$OUTER" >/dev/null 2>&1 && left+=("interface $OUTER")
  [[ -e "$DATA_ROOT" ]] && left+=("$DATA_ROOT")
  [[ -e "$EXEC_ROOT" ]] && left+=("$EXEC_ROOT")
  [[ -e "$SOCK" ]] && left+=("$SOCK")
  ((${#left[@]} == 0)) || die "engine $NAME: left behind after destroy: ${left[*]}"
  say "destroyed"
}

cmd_load() { # NAME IMAGE...
  [[ $# -ge 2 ]] || usage
  set_name "$1"
  shift
  require_root
  if ! dockerd_pid >/dev/null || ! answers; then
    die "engine $NAME is not running"
  fi
  say "loading $*"
  docker save "$@" | engine load >&2
}

cmd_status() { # NAME
  [[ $# -eq 1 ]] || usage
  set_name "$1"
  local pid index
  echo "engine=$NAME"
  index="$(current_index || true)"
  if [[ ! -e "$NETNS" && ! -d "$DATA_ROOT" ]]; then
    echo "state=absent"
    return 4
  fi
  echo "netns=$([[ -e "$NETNS" ]] && echo present || echo absent)"
  echo "index=${index:-none}"
  if pid="$(dockerd_pid)" && answers; then
    echo "state=running"
    echo "pid=$pid"
    echo "containers=$(engine ps -aq | wc -l) ($(engine ps -q | wc -l) running)"
    echo "DOCKER_HOST=$DOCKER_HOST_URL"
    [[ -n "$index" ]] && echo "ADVERTISE=10.200.$index.2"
    return 0
  fi
  echo "state=stopped${pid:+ (pid $pid does not answer)}"
  return 3
}

[[ $# -ge 1 ]] || usage
command="$1"
shift
case "$command" in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  destroy) cmd_destroy "$@" ;;
  load) cmd_load "$@" ;;
  status) cmd_status "$@" ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
