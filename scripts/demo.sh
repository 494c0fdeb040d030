#!/usr/bin/env bash
# Builds and starts the control plane with laptop-friendly defaults, registers a demo function,
# invokes it, then keeps running in the foreground (Ctrl-C stops it gracefully).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
command -v curl >/dev/null 2>&1 || { echo "curl is required for the demo" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nanofaas-target}"
cargo build --release --locked
BIN="$CARGO_TARGET_DIR/release/nanofaas-control-plane"

export SERVER_PORT="${SERVER_PORT:-8080}"
export MANAGEMENT_SERVER_PORT="${MANAGEMENT_SERVER_PORT:-8081}"
export NANOFAAS_ASYNC_QUEUE_ENABLED="${NANOFAAS_ASYNC_QUEUE_ENABLED:-true}"
API="http://localhost:$SERVER_PORT"

"$BIN" &
CP=$!
trap 'kill -TERM $CP 2>/dev/null; wait $CP 2>/dev/null' EXIT
trap 'exit 0' INT TERM
for _ in $(seq 1 100); do
  curl -fsS "http://localhost:$MANAGEMENT_SERVER_PORT/actuator/health/readiness" >/dev/null 2>&1 && break
  sleep 0.1
done

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
say "curl -X POST $API/v1/functions -H 'Content-Type: application/json' -d '{\"name\":\"echo\",\"image\":\"local\",\"executionMode\":\"LOCAL\"}'"
curl -sS -X POST "$API/v1/functions" -H 'Content-Type: application/json' \
  -d '{"name":"echo","image":"local","executionMode":"LOCAL"}'; echo
say "curl -X POST $API/v1/functions/echo:invoke -H 'Content-Type: application/json' -d '{\"input\":{\"message\":\"hello nanofaas\"}}'"
curl -sS -i -X POST "$API/v1/functions/echo:invoke" -H 'Content-Type: application/json' \
  -d '{"input":{"message":"hello nanofaas"}}'; echo
say "curl -X POST $API/v1/functions/echo:enqueue -H 'Content-Type: application/json' -d '{\"input\":\"later\"}'"
EXEC=$(curl -sS -X POST "$API/v1/functions/echo:enqueue" -H 'Content-Type: application/json' -d '{"input":"later"}')
echo "$EXEC"
ID=$(printf '%s' "$EXEC" | sed -n 's/.*"executionId":"\([^"]*\)".*/\1/p')
if [ -n "$ID" ]; then
  sleep 0.2
  say "curl $API/v1/executions/$ID"
  curl -sS "$API/v1/executions/$ID"; echo
fi
printf '\nControl plane running: API %s, metrics http://localhost:%s/actuator/prometheus. Ctrl-C to stop.\n' "$API" "$MANAGEMENT_SERVER_PORT"
wait $CP
