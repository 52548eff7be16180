#!/usr/bin/env bash
# Prints the path of a Jaeger v2 binary (all-in-one: OTLP receiver, in-memory store, query API) for the
# tracing test, building it once when missing from github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION
# through the Go module proxy, into a cache outside the clone (~/.cache/hookfleet/jaeger-<version>/), so a
# fresh clone or `make clean` does not rebuild it. Not `go install pkg@version`: Jaeger's go.mod has a
# replace directive (sarama), which `go install` refuses, so a throwaway module requires Jaeger, repeats
# that replace, and builds the command. Build time: see deploy/README.md (tracing).
set -euo pipefail
version="${JAEGER_VERSION:-v1.76.0}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/hookfleet/jaeger-$version"
binary="$cache/jaeger"
if [ ! -x "$binary" ]; then
  if ! command -v go >/dev/null; then
    echo "jaeger.sh: Go 1.24+ is needed to build jaeger $version once; it is not installed" >&2
    exit 1
  fi
  mkdir -p "$cache"
  echo "building jaeger $version into $cache (once)" >&2
  src="$cache/build"
  mkdir -p "$src"
  (
    cd "$src"
    [ -f go.mod ] || go mod init hookfleet.local/jaeger-build >&2
    go mod edit -replace github.com/Shopify/sarama=github.com/Shopify/sarama@v1.33.0
    go get "github.com/jaegertracing/jaeger/cmd/jaeger@$version" >&2
    go build -buildvcs=false -trimpath -o "$binary.partial" github.com/jaegertracing/jaeger/cmd/jaeger >&2
  )
  mv "$binary.partial" "$binary"
fi
echo "$binary"
