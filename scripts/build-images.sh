#!/usr/bin/env bash
# Builds the control-plane and example-runtime images on a machine that cannot pull images:
# statically linked release binaries, copied into images built FROM scratch.
#   TAG=local scripts/build-images.sh   →  nanofaas/control-plane:$TAG, nanofaas/example-runtime:$TAG
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${TAG:-local}"
TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nanofaas-target}"
command -v docker >/dev/null 2>&1 || { echo "docker is required" >&2; exit 1; }

RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$TARGET" \
  -p nanofaas-control-plane -p nanofaas-example-runtime
OUT="$CARGO_TARGET_DIR/$TARGET/release"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for name in control-plane example-runtime; do
  mkdir -p "$stage/$name"
  cp "$OUT/nanofaas-$name" "$stage/$name/"
  docker build --quiet -f "docker/$name.scratch.Dockerfile" -t "nanofaas/$name:$TAG" "$stage/$name" >/dev/null
  echo "built nanofaas/$name:$TAG ($(docker image inspect -f '{{.Size}}' "nanofaas/$name:$TAG") bytes)"
done
