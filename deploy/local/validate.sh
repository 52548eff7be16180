#!/usr/bin/env bash
# Prints the path of the manifest validator (deploy/validate: strict decoding into Kubernetes' and KEDA's own
# Go types), building it once when missing, as kustomize.sh builds kustomize: `go build` through the Go module
# proxy into a cache outside the clone (~/.cache/hookfleet/validate-<hash of its sources>/), so a fresh clone or
# `make clean` does not rebuild it and a change to its sources does. The first build took 5.5 min on two busy
# cores (client-go and KEDA's API types, downloads included); later runs only print the path.
set -euo pipefail
here="$(cd "$(dirname "$0")/../validate" && pwd)"
hash="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/hookfleet/validate-$hash"
binary="$cache/validate"
# One build at a time: `make test` starts it beside the tests, and the manifest test asks for it too (it then
# waits for that build instead of starting a second one).
mkdir -p "$(dirname "$cache")"
exec 9>"$cache.lock"
flock 9
if [ ! -x "$binary" ]; then
  if ! command -v go >/dev/null; then
    echo "validate.sh: Go 1.23+ is needed to build the manifest validator (deploy/validate); it is not installed" >&2
    exit 1
  fi
  mkdir -p "$cache"
  echo "building the manifest validator into $cache (once)" >&2
  (cd "$here" && GOFLAGS="-buildvcs=false -trimpath" go build -o "$binary.partial" .) >&2
  mv "$binary.partial" "$binary"
fi
echo "$binary"
