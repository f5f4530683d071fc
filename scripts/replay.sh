#!/usr/bin/env bash
# replay.sh SCENARIO [krane log replay flags…]: replays a recorded (or hand-written) log into a
# fresh docker-compose stack and checks its outcome.
#
# Brings up the compose stack under a project name of its own on a free loopback port (with
# its own token and host id), waits for its API, runs `krane log replay SCENARIO` against it
# (default: --speed max), prints the replay's verdict and tears everything down again: the
# compose project with its volumes, and the gateway containers its worker started. Exits with
# the replay's code: 0 when the stack's gateways match the recorded outcome, 1 when not.
#
# Scenarios under tests/scenarios/multi-host/ (or any, with KRANE_REPLAY_HOSTS=3) replay on three
# hosts: two extra engines started by scripts/engines.sh (indices $KRANE_REPLAY_ENGINE_INDEX
# and the next, default 41 and 42; root needed) with a worker each (docker-compose.hosts.yml),
# beside the compose worker on this machine's engine; the engines are destroyed after.
#
# The images come from scripts/build-images.sh; the krane CLI is $KRANE_CLI, else built here.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/krane-target}"

scenario="${1:?usage: scripts/replay.sh SCENARIO [krane log replay flags]}"
shift
[[ -f "$scenario" ]] || { echo "error: no scenario file $scenario" >&2; exit 2; }
flags=("$@")
[[ ${#flags[@]} -gt 0 ]] || flags=(--speed max)

if [[ -z "${KRANE_CLI:-}" ]]; then
  cargo build --quiet --manifest-path "$ROOT/Cargo.toml" -p krane-cli
  KRANE_CLI="$CARGO_TARGET_DIR/debug/krane"
fi

name="krane-replay-$(basename "$scenario" .jsonl | tr -c 'a-z0-9\n' '-')-$$"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
token="replay-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
export KRANE_API_PORT="$port" KRANE_HOST_ID="$name" KRANE_AUTH_TOKEN="$token"
hosts="${KRANE_REPLAY_HOSTS:-1}"
[[ "$scenario" != */multi-host/* ]] || hosts="${KRANE_REPLAY_HOSTS:-3}"
files=()
engines=()
if [[ "$hosts" == 3 ]]; then
  index="${KRANE_REPLAY_ENGINE_INDEX:-41}"
  engines=("replay$index" "replay$((index + 1))")
  files=(-f "$ROOT/docker-compose.yml" -f "$ROOT/docker-compose.hosts.yml")
elif [[ "$hosts" != 1 ]]; then
  echo "error: KRANE_REPLAY_HOSTS is 1 or 3, not $hosts" >&2
  exit 2
fi
compose() { bash "$ROOT/scripts/compose.sh" "${files[@]}" -p "$name" "$@"; }

teardown() {
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  for engine in "${engines[@]}"; do
    bash "$ROOT/scripts/engines.sh" destroy "$engine" >/dev/null 2>&1 || true
  done
  # The worker's gateway containers are not part of the project: they carry its host id.
  local left
  left="$(docker ps -aq --filter "label=krane.host.id=$name")"
  [[ -z "$left" ]] || docker rm -f $left >/dev/null
}
trap teardown EXIT

# value KEY OUTPUT: the value of KEY=… in engines.sh's output.
value() { sed -n "s/^$1=//p" <<<"$2" | tail -n 1; }
suffix=(B C)
for i in "${!engines[@]}"; do
  engine="${engines[$i]}"
  echo "==> starting engine $engine (index $((index + i)))" >&2
  bash "$ROOT/scripts/engines.sh" destroy "$engine" >/dev/null 2>&1 || true
  started="$(bash "$ROOT/scripts/engines.sh" start "$engine" "$((index + i))")"
  bash "$ROOT/scripts/engines.sh" load "$engine" krane-test-gateway:dev krane-test-gateway:healthy >/dev/null
  socket="$(value DOCKER_HOST "$started")"
  export "KRANE_ENGINE_${suffix[$i]}_SOCKET=${socket#unix://}"
  export "KRANE_ENGINE_${suffix[$i]}_ADDRESS=$(value ADVERTISE "$started")"
done

echo "==> $scenario: a fresh stack ($name, $hosts host(s), API on 127.0.0.1:$port)" >&2
compose up -d >/dev/null 2>&1 || { compose up -d; exit 1; }

krane() { "$KRANE_CLI" --api "http://127.0.0.1:$port" --token "$token" "$@"; }
for attempt in $(seq 1 60); do
  krane gateway list --namespace replay-probe >/dev/null 2>&1 && break
  [[ $attempt -lt 60 ]] || { echo "error: the stack's API did not answer in 60 s" >&2; compose logs >&2; exit 1; }
  sleep 1
done

set +e
krane log replay "$scenario" "${flags[@]}"
code=$?
set -e
[[ $code -eq 0 ]] || compose logs --tail 50 worker >&2
exit "$code"
