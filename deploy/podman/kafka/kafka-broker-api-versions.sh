#!/bin/bash
# Probe for the compose healthcheck. The stand-in carries the broker's jars, not the admin tools, so this
# checks that the listener accepts a connection: `--bootstrap-server HOST:PORT` as in the real script.
set -euo pipefail
[ "${1:-}" = --bootstrap-server ] || { echo "usage: $0 --bootstrap-server HOST:PORT" >&2; exit 2; }
exec 3<>"/dev/tcp/${2%:*}/${2##*:}"
