#!/usr/bin/env bash
# Installs the Debian packages the local stack (and, with `test`, the test suite) needs, when missing:
# one `apt-get update`, then the installs. Nothing is downloaded outside Debian's packages.
#   core: PostgreSQL (the local database), Java and Maven (the Kafka broker from Maven Central jars)
#   test: Prometheus (the observability test) with its promtool (the alert-rule unit tests), Chromium
#         (the browser tests, driven by Playwright), Node.js with npm (an independent Ed25519 verifier for
#         the asymmetric signature tests; the Node.js publisher test), squid (the egress proxy tests start
#         their own, as a user process: the package's service is not needed)
#   containers: podman and what it needs to build and run the compose images (deploy/podman/containers.sh)
# `make test` asks for all three sets in one run: apt-get takes one lock, so Debian packages are one step.
#   system-packages.sh --missing SET...   prints the missing packages (one a line), installs nothing
set -euo pipefail
list_only=false
if [ "${1:-}" = --missing ]; then
  list_only=true
  shift
fi
plain=() with_recommends=()
for set in "$@"; do
  case "$set" in
    core)
      compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || plain+=(postgresql)
      command -v java >/dev/null || plain+=(openjdk-17-jre-headless)
      command -v mvn >/dev/null || plain+=(maven)
      ;;
    test)
      { [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || plain+=(prometheus)
      [ -x /usr/bin/chromium ] || with_recommends+=(chromium)
      [ -x /usr/bin/chromedriver ] || with_recommends+=(chromium-driver)
      command -v node >/dev/null || plain+=(nodejs) # Ed25519 (v1a) checks; the Node.js publisher test (tests/node)
      command -v npm >/dev/null || plain+=(npm)
      [ -x /usr/sbin/squid ] || plain+=(squid)
      ;;
    containers)
      command -v podman >/dev/null || plain+=(podman)
      command -v buildah >/dev/null || plain+=(buildah)
      command -v runc >/dev/null || plain+=(runc)
      [ -x /usr/lib/podman/netavark ] || plain+=(netavark)
      [ -x /usr/lib/podman/aardvark-dns ] || plain+=(aardvark-dns)
      command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || plain+=(iptables) # netavark's NAT
      command -v debootstrap >/dev/null || plain+=(debootstrap)
      command -v mvn >/dev/null || plain+=(maven)
      ;;
    *) echo "usage: $0 [--missing] core|test|containers ..." >&2; exit 2 ;;
  esac
done
if $list_only; then
  printf '%s\n' "${plain[@]}" "${with_recommends[@]}" | awk 'NF && !seen[$0]++'
  exit 0
fi
[ ${#plain[@]} -eq 0 ] && [ ${#with_recommends[@]} -eq 0 ] && exit 0
mapfile -t plain < <(printf '%s\n' "${plain[@]}" | awk 'NF && !seen[$0]++')
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
echo "installing Debian packages: ${plain[*]} ${with_recommends[*]}"
$sudo apt-get update -q
export DEBIAN_FRONTEND=noninteractive
[ ${#plain[@]} -eq 0 ] || $sudo apt-get install -y -q --no-install-recommends "${plain[@]}"
[ ${#with_recommends[@]} -eq 0 ] || $sudo apt-get install -y -q "${with_recommends[@]}"
