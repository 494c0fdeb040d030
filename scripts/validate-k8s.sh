#!/usr/bin/env bash
# Offline schema validation of the Kubernetes manifests: every file in deploy/k8s/ (and the HA
# variant in deploy/k8s/ha/) and the
# objects the `k8s` deployment backend generates (written by `examples/k8s_manifests.rs`), checked
# against the Kubernetes OpenAPI schemas bundled in the PyPI package `kubernetes-validate`
# (strict: unknown fields are errors). The only network use is the one-time `pip install` into
# $HOME/.cache/nanofaas-venv.
#   scripts/validate-k8s.sh                        # Kubernetes 1.33.0 and 1.37.0
#   K8S_VERSIONS="1.35.0" scripts/validate-k8s.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VALIDATOR_VERSION=1.37.0
# The oldest and newest releases k8s-openapi 0.29 supports (its `earliest` and `latest`).
K8S_VERSIONS="${K8S_VERSIONS:-1.33.0 1.37.0}"
VENV="${NANOFAAS_VENV:-$HOME/.cache/nanofaas-venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nanofaas-target}"

if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$VALIDATOR_VERSION"; then
  command -v python3 >/dev/null 2>&1 || { echo "python3 is required" >&2; exit 1; }
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$VALIDATOR_VERSION"
fi

generated=$(mktemp -d)
trap 'rm -rf "$generated"' EXIT
cargo run --quiet --locked --example k8s_manifests -- "$generated" >/dev/null

shopt -s nullglob
checked_in=(deploy/k8s/*.yaml deploy/k8s/*.yml deploy/k8s/*.json deploy/k8s/ha/*.yaml)
produced=("$generated"/*.json)
if [ ${#checked_in[@]} -eq 0 ] || [ ${#produced[@]} -eq 0 ]; then
  echo "nothing to validate: ${#checked_in[@]} files in deploy/k8s/, ${#produced[@]} generated" >&2
  exit 1
fi
files=("${checked_in[@]}" "${produced[@]}")
for version in $K8S_VERSIONS; do
  "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "${files[@]}"
  echo "valid against Kubernetes $version: ${#checked_in[@]} files in deploy/k8s/, ${#produced[@]} generated objects"
done
