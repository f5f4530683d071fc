#!/usr/bin/env bash
# compose.sh: runs `docker compose` (v2) when available, else `docker-compose` (v1), with the
# repository's docker-compose.yml. Arguments are passed through.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# A fixed project name, whatever the checkout directory is called (-p overrides it).
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-krane}"
if docker compose version >/dev/null 2>&1; then
  exec docker compose -f "$ROOT/docker-compose.yml" "$@"
elif command -v docker-compose >/dev/null 2>&1; then
  exec docker-compose -f "$ROOT/docker-compose.yml" "$@"
else
  echo "error: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi
