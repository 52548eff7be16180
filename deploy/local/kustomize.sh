#!/usr/bin/env bash
# Prints the path of a kustomize binary for the manifest rendering test, building it once when missing:
# `go install sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION` through the Go module proxy, into a
# cache outside the clone (~/.cache/hookfleet/kustomize-<version>/), so a fresh clone or `make clean`
# does not rebuild it. The first build took 2 min on two busy cores (downloads included); later runs only
# print the path. Without Go, kubectl's embedded kustomize is used when kubectl is installed.
set -euo pipefail
version="${KUSTOMIZE_VERSION:-v5.5.0}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/hookfleet/kustomize-$version"
binary="$cache/kustomize"
if [ ! -x "$binary" ]; then
  if ! command -v go >/dev/null; then
    if command -v kubectl >/dev/null; then
      # No Go here: kubectl embeds kustomize (`kubectl kustomize DIR` = `kustomize build DIR`).
      mkdir -p "$cache"
      printf '#!/bin/sh\n[ "$1" = build ] && shift\nexec kubectl kustomize "$@"\n' >"$cache/kubectl-kustomize"
      chmod +x "$cache/kubectl-kustomize"
      echo "$cache/kubectl-kustomize"
      exit 0
    fi
    echo "kustomize.sh: Go 1.22+ (to build kustomize $version) or kubectl is needed; neither is installed" >&2
    exit 1
  fi
  mkdir -p "$cache"
  echo "building kustomize $version into $cache (once)" >&2
  GOBIN="$cache" GOFLAGS="-buildvcs=false -trimpath" go install "sigs.k8s.io/kustomize/kustomize/v5@$version" >&2
fi
echo "$binary"
