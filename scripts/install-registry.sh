#!/usr/bin/env bash
# install-registry.sh: makes sure the distribution reference registry (Debian's
# docker-registry package) is installed, for the registry tests. Only the binary is
# used: the tests start their own instance with a config they write; the package's own
# service, where an init system started it, is left alone. The last line printed is the
# binary's path.
set -euo pipefail

find_registry() {
  for cand in "$(command -v docker-registry || true)" /usr/bin/docker-registry; do
    if [[ -n "$cand" && -x "$cand" ]]; then
      echo "$cand"
      return 0
    fi
  done
  return 1
}

if found="$(find_registry)"; then
  echo "docker-registry already installed" >&2
  echo "$found"
  exit 0
fi

APT=(apt-get install -y --no-install-recommends docker-registry)
[[ "$(id -u)" == 0 ]] || APT=(sudo "${APT[@]}")
echo "==> installing docker-registry (Debian package)" >&2
if ! DEBIAN_FRONTEND=noninteractive "${APT[@]}" >&2; then
  echo "==> apt-get update, then installing again" >&2
  UPDATE=(apt-get update)
  [[ "$(id -u)" == 0 ]] || UPDATE=(sudo "${UPDATE[@]}")
  "${UPDATE[@]}" >&2
  DEBIAN_FRONTEND=noninteractive "${APT[@]}" >&2
fi

if ! found="$(find_registry)"; then
  echo "error: docker-registry is not on the PATH after installing the package" >&2
  exit 1
fi
echo "$found"
