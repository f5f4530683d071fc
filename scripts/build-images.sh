#!/usr/bin/env bash
# build-images.sh: builds krane's static binaries and its FROM-scratch Docker images
# (nothing is pulled). Usage: scripts/build-images.sh [nats] [api] [worker] [test-gateway]
# No argument builds all four. Images: krane-<name>:dev; test-gateway also gets the
# tags :slow, :exits, :refuses and :healthy (stages of docker/Dockerfile.test-gateway,
# all from the same binary). Each image is built from a small staging directory
# holding only its binary (and config), not the repo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="x86_64-unknown-linux-gnu"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/krane-target}"
# Explicit --target keeps proc-macros and build scripts dynamic; only the
# final binaries get the static C runtime.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
if [[ -n "${RUSTFLAGS:-}" ]]; then
  echo "warning: ignoring RUSTFLAGS (it would override the static-linking flags)" >&2
  unset RUSTFLAGS
fi

images=("$@")
[[ ${#images[@]} -gt 0 ]] || images=(nats api worker test-gateway)
packages=()
for img in "${images[@]}"; do
  case "$img" in
    nats) ;;
    api | worker | test-gateway) packages+=("-p" "krane-$img") ;;
    *) echo "error: unknown image '$img' (expected nats, api, worker, test-gateway)" >&2; exit 2 ;;
  esac
done

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT

assert_static() { # $1: binary
  local info
  info="$(file -L "$1" 2>/dev/null || true)"
  if [[ "$info" == *"statically linked"* || "$info" == *"static-pie linked"* ]]; then
    return 0
  fi
  if [[ -z "$info" ]] && ldd "$1" 2>&1 | grep -qE 'not a dynamic executable|statically linked'; then
    return 0
  fi
  echo "error: $1 is not statically linked (a FROM scratch image cannot run it):" >&2
  echo "  ${info:-$(ldd "$1" 2>&1)}" >&2
  exit 1
}

# Tags of an image; for test-gateway each is also the Dockerfile stage it is built from.
image_tags() { # $1: image name
  case "$1" in
    test-gateway) echo "dev slow exits refuses healthy" ;;
    *) echo "dev" ;;
  esac
}

build_image() { # $1: image name; files already staged in $STAGE/$1
  local ctx="$STAGE/$1" tag out
  local -a target
  cp "$ROOT/docker/Dockerfile.$1" "$ctx/Dockerfile"
  for tag in $(image_tags "$1"); do
    target=()
    if [[ "$1" == test-gateway ]]; then target=(--target "$tag"); fi
    echo "==> building image krane-$1:$tag"
    if ! out="$(docker build "${target[@]}" --tag "krane-$1:$tag" "$ctx" 2>&1)"; then
      echo "$out" >&2
      echo "error: docker build of krane-$1:$tag failed" >&2
      exit 1
    fi
    echo "    krane-$1:$tag $(docker image ls --format '{{.Size}}' "krane-$1:$tag")"
  done
}

if [[ ${#packages[@]} -gt 0 ]]; then
  locked=()
  [[ -f "$ROOT/Cargo.lock" ]] && locked=(--locked)
  echo "==> building static binaries: ${packages[*]} (target dir $CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build "${locked[@]}" --release --target "$TARGET" "${packages[@]}")
fi

for img in "${images[@]}"; do
  mkdir -p "$STAGE/$img"
  if [[ "$img" == nats ]]; then
    echo "==> ensuring nats-server"
    nats_bin="$(bash "$ROOT/scripts/install-nats.sh" | tail -n 1)"
    assert_static "$nats_bin"
    cp "$nats_bin" "$STAGE/nats/nats-server"
    cp "$ROOT/docker/nats.conf" "$STAGE/nats/nats.conf"
  else
    bin="$CARGO_TARGET_DIR/$TARGET/release/krane-$img"
    assert_static "$bin"
    cp "$bin" "$STAGE/$img/krane-$img"
    # Smaller images; the build output keeps its symbols.
    if command -v strip >/dev/null; then strip "$STAGE/$img/krane-$img"; fi
  fi
  build_image "$img"
done
built=()
for img in "${images[@]}"; do
  for tag in $(image_tags "$img"); do built+=("krane-$img:$tag"); done
done
echo "==> done: ${built[*]}"
