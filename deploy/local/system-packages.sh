#!/usr/bin/env bash
# Installs the Debian packages the local stack (and, with `test`, the test suite) needs, when missing:
# one `apt-get update`, then the installs. Nothing is downloaded outside Debian's packages.
#   core: PostgreSQL (the local database), Java and Maven (the Kafka broker from Maven Central jars)
#   test: Prometheus (the observability test) with its promtool (the alert-rule unit tests), and Chromium
#         (the browser tests, driven by Playwright)
set -euo pipefail
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
      ;;
    *) echo "usage: $0 core|test ..." >&2; exit 2 ;;
  esac
done
[ ${#plain[@]} -eq 0 ] && [ ${#with_recommends[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
echo "installing Debian packages: ${plain[*]} ${with_recommends[*]}"
$sudo apt-get update -q
export DEBIAN_FRONTEND=noninteractive
[ ${#plain[@]} -eq 0 ] || $sudo apt-get install -y -q --no-install-recommends "${plain[@]}"
[ ${#with_recommends[@]} -eq 0 ] || $sudo apt-get install -y -q "${with_recommends[@]}"
