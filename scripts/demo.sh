#!/usr/bin/env bash
# Builds and starts the control plane with laptop-friendly defaults and the example runtime
# (runtimes/rust-example), registers a LOCAL echo and the runtime as a POOL function, invokes them
# synchronously and asynchronously, shows a signed result webhook arriving at a small receiver
# (python3; skipped without it), then keeps running in the foreground (Ctrl-C stops everything).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
command -v curl >/dev/null 2>&1 || { echo "curl is required for the demo" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nanofaas-target}"
cargo build --release --locked -p nanofaas-control-plane --bin nanofaas-control-plane
cargo build --release --locked -p nanofaas-example-runtime
BIN="$CARGO_TARGET_DIR/release/nanofaas-control-plane"
RUNTIME_BIN="$CARGO_TARGET_DIR/release/nanofaas-example-runtime"
RUNTIME_PORT="${RUNTIME_PORT:-9000}"
HOOK_PORT="${HOOK_PORT:-9001}"

export SERVER_PORT="${SERVER_PORT:-8080}"
export MANAGEMENT_SERVER_PORT="${MANAGEMENT_SERVER_PORT:-8081}"
export NANOFAAS_ASYNC_QUEUE_ENABLED="${NANOFAAS_ASYNC_QUEUE_ENABLED:-true}"
API="http://localhost:$SERVER_PORT"
# Results posted to X-Callback-Url are signed (Standard Webhooks) with this secret.
export NANOFAAS_WEBHOOK_SECRET="${NANOFAAS_WEBHOOK_SECRET:-whsec_$(head -c 24 /dev/urandom | base64)}"

"$BIN" &
CP=$!
PORT="$RUNTIME_PORT" FUNCTION_NAME=example CALLBACK_URL="$API/v1/internal/executions" "$RUNTIME_BIN" &
RUNTIME=$!
HOOK=
HOOK_LOG=$(mktemp)
if command -v python3 >/dev/null 2>&1; then
  # A webhook receiver that checks each signature on its own (Python's hmac, not our code).
  python3 -u - "$HOOK_PORT" >"$HOOK_LOG" 2>&1 <<'PY' &
import base64, hashlib, hmac, http.server, os, sys
secret = os.environ["NANOFAAS_WEBHOOK_SECRET"]
key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        h = self.headers
        signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + body
        mac = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        valid = any(hmac.compare_digest("v1," + mac, s) for s in h.get("webhook-signature", "").split())
        print(f"webhook received: {h['X-Function-Name']} {h['X-Execution-Id']} "
              f"status={h['X-Function-Status']} duration={h['X-Duration-Seconds']}s "
              f"signature {'valid' if valid else 'INVALID'}\n  {body.decode()}")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
PY
  HOOK=$!
fi
trap 'kill -TERM $CP $RUNTIME $HOOK 2>/dev/null; wait $CP $RUNTIME $HOOK 2>/dev/null; rm -f "$HOOK_LOG"' EXIT
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

# A real function: the example runtime as a POOL function.
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$RUNTIME_PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
say "curl -X POST $API/v1/functions -H 'Content-Type: application/json' -d '{\"name\":\"example\",\"image\":\"unused\",\"executionMode\":\"POOL\",\"endpointUrl\":\"http://127.0.0.1:$RUNTIME_PORT/invoke\"}'"
curl -sS -X POST "$API/v1/functions" -H 'Content-Type: application/json' \
  -d "{\"name\":\"example\",\"image\":\"unused\",\"executionMode\":\"POOL\",\"endpointUrl\":\"http://127.0.0.1:$RUNTIME_PORT/invoke\"}"; echo
say "curl -X POST $API/v1/functions/example:invoke -H 'Content-Type: application/json' -d '{\"input\":{\"message\":\"hello runtime\"}}'"
curl -sS -i -X POST "$API/v1/functions/example:invoke" -H 'Content-Type: application/json' \
  -d '{"input":{"message":"hello runtime"}}'; echo
if [ -n "$HOOK" ]; then
  say "curl -X POST $API/v1/functions/example:enqueue -H 'X-Callback-Url: http://127.0.0.1:$HOOK_PORT/results' -H 'Content-Type: application/json' -d '{\"input\":{\"message\":\"call me back\"}}'"
  curl -sS -X POST "$API/v1/functions/example:enqueue" -H "X-Callback-Url: http://127.0.0.1:$HOOK_PORT/results" \
    -H 'Content-Type: application/json' -d '{"input":{"message":"call me back"}}'; echo
  for _ in $(seq 1 50); do
    grep -q "webhook received" "$HOOK_LOG" && break
    sleep 0.1
  done
  printf '\n\033[1m# the receiver on port %s (signed with NANOFAAS_WEBHOOK_SECRET)\033[0m\n' "$HOOK_PORT"
  cat "$HOOK_LOG"
else
  say "curl -X POST $API/v1/functions/example:enqueue -H 'Content-Type: application/json' -d '{\"input\":{\"message\":\"later\"}}'"
  curl -sS -X POST "$API/v1/functions/example:enqueue" -H 'Content-Type: application/json' \
    -d '{"input":{"message":"later"}}'; echo
  echo "(python3 not found: the result webhook receiver is skipped)"
fi
printf '\nControl plane running: API %s, metrics http://localhost:%s/actuator/prometheus. Ctrl-C to stop.\n' "$API" "$MANAGEMENT_SERVER_PORT"
wait $CP
