#!/usr/bin/env bash
# up.sh: brings up the whole system (NATS + API + worker) with docker-compose from locally
# built FROM-scratch images, provisions a demo gateway of 3 replicas, shows progress until
# every instance is RUNNING, and prints the instances.
#   KRANE_API_PORT (default 7070)   host port of the API (published on 127.0.0.1 only)
#   KRANE_AUTH_TOKEN                the API's bearer token; when unset, the one in .env is used,
#                                   or a new random one is written there (mode 600)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${KRANE_API_PORT:-7070}"
API="http://127.0.0.1:$PORT/krane.v1.GatewayService"
export KRANE_API_PORT="$PORT"
ENV_FILE="$ROOT/.env"
if [[ -z "${KRANE_AUTH_TOKEN:-}" && -f "$ENV_FILE" ]]; then
  KRANE_AUTH_TOKEN="$(sed -n 's/^KRANE_AUTH_TOKEN=//p' "$ENV_FILE" | tail -n 1)"
fi
if [[ -z "${KRANE_AUTH_TOKEN:-}" ]]; then
  KRANE_AUTH_TOKEN="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  (umask 077; echo "KRANE_AUTH_TOKEN=$KRANE_AUTH_TOKEN" >> "$ENV_FILE")
  echo "==> wrote a new API token to $ENV_FILE"
fi
export KRANE_AUTH_TOKEN

command -v curl >/dev/null || { echo "error: curl is required" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "error: the Docker engine is not reachable" >&2; exit 1; }

echo "==> building images (static binaries, FROM scratch)"
bash "$ROOT/scripts/build-images.sh"

echo "==> starting nats, api and worker"
bash "$ROOT/scripts/compose.sh" up -d

call() { # $1 method, $2 JSON body
  curl -sS --max-time 5 -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $KRANE_AUTH_TOKEN" -d "$2" "$API/$1"
}

echo -n "==> waiting for the API on port $PORT "
for _ in $(seq 1 60); do
  if call GetGateway '{"namespace":"demo","gatewayId":"probe"}' >/dev/null 2>&1; then break; fi
  echo -n "."; sleep 1
done
echo
call GetGateway '{"namespace":"demo","gatewayId":"probe"}' >/dev/null \
  || { echo "error: the API did not come up; see: scripts/compose.sh logs api" >&2; exit 1; }

# The test gateway image answers HTTP on 8040; build-images.sh built it.
echo "==> creating gateway demo/hello (3 replicas of krane-test-gateway:dev)"
call CreateGateway '{"gateway":{"namespace":"demo","workspaceId":"ws_demo","gatewayId":"hello",
  "image":"krane-test-gateway:dev","replicas":3,"cpuMillicores":100,"memorySizeMib":16}}'
echo

count() { # $1 word, $2 text: occurrences of the word
  { grep -o "$1" <<<"$2" || true; } | wc -l
}

echo "==> waiting for every instance to be RUNNING"
for second in $(seq 1 120); do
  state="$(call GetGateway '{"namespace":"demo","gatewayId":"hello"}' || true)"
  running="$(count GATEWAY_STATUS_RUNNING "$state")"
  failed="$(count GATEWAY_STATUS_FAILED "$state")"
  echo "    ${second}s: ${running}/3 running"
  if [[ "$failed" -gt 0 ]]; then echo "error: gateway failed: $state" >&2; exit 1; fi
  if [[ "$running" -eq 3 ]]; then break; fi
  sleep 1
done
[[ "$running" -eq 3 ]] || { echo "error: not RUNNING after 120 s: $state" >&2; exit 1; }

echo "==> instances of demo/hello"
if command -v python3 >/dev/null; then python3 -m json.tool <<<"$state"; else echo "$state"; fi
first="$({ grep -o '"address":"[^"]*"' <<<"$state" || true; } | head -n 1 | cut -d'"' -f4)"
echo "==> GET http://$first/"
curl -sS --max-time 5 --retry 5 --retry-connrefused --retry-delay 1 "http://$first/"; echo
echo "Done. The API token is in $ENV_FILE (KRANE_AUTH_TOKEN); the krane CLI reads it from the"
echo "environment: set -a; . $ENV_FILE; set +a; krane --api http://127.0.0.1:$PORT gateway get hello --namespace demo"
echo "Stop everything with: scripts/compose.sh down -v (and remove demo containers with a"
echo "DeleteGateway call first: curl -H 'Content-Type: application/json' -H \"Authorization: Bearer \$KRANE_AUTH_TOKEN\" -d '{\"namespace\":\"demo\",\"gatewayId\":\"hello\"}' $API/DeleteGateway)"
