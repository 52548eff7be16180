#!/usr/bin/env bash
# Prints the path of a kustomize binary for the manifest rendering test, building it once when missing:
# `go install sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION` through the Go module proxy, into a
# cache outside the clone (~/.cache/hookfleet/kustomize-<version>/), so a fresh clone or `make clean`
# does not rebuild it. The first build takes about a minute on two cores; later runs only print the path.
set -euo pipefail
version="${KUSTOMIZE_VERSION:-v5.5.0}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/hookfleet/kustomize-$version"
binary="$cache/kustomize"
if [ ! -x "$binary" ]; then
  if ! command -v go >/dev/null; then
    echo "kustomize.sh: Go is needed to build kustomize $version (apt-get install golang-go)" >&2
    exit 1
  fi
  mkdir -p "$cache"
  echo "building kustomize $version into $cache (once)" >&2
  GOBIN="$cache" GOFLAGS="-buildvcs=false -trimpath" go install "sigs.k8s.io/kustomize/kustomize/v5@$version" >&2
fi
echo "$binary"
