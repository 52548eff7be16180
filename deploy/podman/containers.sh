#!/usr/bin/env bash
# The compose fleet under podman on a host that can reach Debian's mirror and Maven Central but no image
# registry (deploy/README.md, "With podman").
#
#   containers.sh images          install podman & co when missing, build every image the compose file needs
#   containers.sh compose ARGS    podman-compose -f deploy/docker-compose.yml ARGS, with this directory's settings
#
# `images` does, each step only when its inputs changed:
#   1. apt-get install podman buildah runc netavark aardvark-dns iptables debootstrap maven (the
#      `containers` set of deploy/local/system-packages.sh; one `apt-get update`, only for what is missing);
#   2. debootstrap a minimal Debian bookworm once into a tarball cached outside the clone
#      (~/.cache/hookfleet/podman/) and import it as localhost/hookfleet/debian:bookworm;
#   3. build stand-ins on it (at the same time), tagged with the exact names deploy/docker-compose.yml uses: Kafka (the Maven
#      jars of deploy/local/pom.xml at the compose file's Kafka version, Debian's Java 17), PostgreSQL and
#      Prometheus (Debian's packages), and a Python 3.11 base (Debian's python3.11) for the Dockerfile;
#      Grafana is not packaged by Debian, so it has no stand-in;
#   4. build the hookfleet image from the Dockerfile with BASE_IMAGE set to that Python base.
# Every image carries the sha256 of its inputs (label dev.hookfleet.content-hash): an image whose inputs
# did not change is not rebuilt, so a second run takes seconds.
#
# Exit status 3: containers cannot be had on this host (no apt-get or root for the packages, or podman
# cannot run a container); the message says why. Any other failure exits 1.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/deploy/podman"
compose_file="$root/deploy/docker-compose.yml"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/hookfleet/podman"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
label=dev.hookfleet.content-hash
debian_image=localhost/hookfleet/debian:bookworm
python_image=localhost/hookfleet/python:3.11-bookworm
mirror="${HOOKFLEET_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { echo "[containers] $*" >&2; }
unavailable() { say "containers unavailable here: $*"; exit 3; }

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo

install_tools() { # the `containers` set of deploy/local/system-packages.sh, when missing
  local packages="$root/deploy/local/system-packages.sh" missing=()
  mapfile -t missing < <("$packages" --missing containers)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || unavailable "no apt-get to install ${missing[*]}"
  if [ -n "$sudo" ] && ! sudo -n true 2>/dev/null; then unavailable "root is needed to install ${missing[*]}"; fi
  say "installing Debian packages: ${missing[*]}"
  "$packages" containers >&2
}

# sha256 of extra words and of every file under the given paths: contents and names relative to each path
# (so the same inputs hash the same in any clone or temporary directory), __pycache__ left out.
content_hash() {
  local words="$1" path n=0
  shift
  {
    echo "$words"
    for path in "$@"; do
      echo "== $((n += 1))"
      (cd "$path" 2>/dev/null || cd "$(dirname "$path")"
        find "$([ -d "$path" ] && echo . || basename "$path")" -name __pycache__ -prune -o -type f -print0 |
          LC_ALL=C sort -z | xargs -0 sha256sum)
    done
  } | sha256sum | cut -c1-64
}

image_hash() { podman image inspect --format "{{index .Labels \"$label\"}}" "$1" 2>/dev/null || true; }
image_id() { podman image inspect --format '{{.Id}}' "$1"; }

# build TAG HASH CONTEXT [podman build args...]: skipped when TAG already carries HASH.
build() {
  local tag="$1" hash="$2" context="$3"
  shift 3
  if [ "$(image_hash "$tag")" = "$hash" ]; then
    say "$tag: up to date"
    return 0
  fi
  say "building $tag"
  local start=$SECONDS
  podman build --quiet --label "$label=$hash" -t "$tag" "$@" "$context" >/dev/null
  say "$tag: built in $((SECONDS - start)) s"
}

debian_base() {
  local tarball="$cache/debian-bookworm.tar"
  if [ ! -s "$tarball" ] || [ ! -s "$tarball.sha256" ]; then
    local dir="$cache/debian-bookworm.root"
    say "bootstrapping Debian bookworm (minbase) from $mirror into $tarball (once)"
    local start=$SECONDS
    $sudo rm -rf "$dir"
    mkdir -p "$cache"
    $sudo debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
      { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    # What the official debian image has and a build needs: security updates, no service starts in apt.
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
      "$mirror" "$mirror" "${mirror%/debian}/debian" | $sudo tee "$dir/etc/apt/sources.list" >/dev/null
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$dir/usr/sbin/policy-rc.d" >/dev/null
    $sudo chmod 0755 "$dir/usr/sbin/policy-rc.d"
    $sudo chroot "$dir" apt-get clean
    $sudo rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin
    $sudo tar -C "$dir" --numeric-owner -cf "$tarball.part" .
    $sudo rm -rf "$dir"
    sha256sum "$tarball.part" | cut -c1-64 >"$tarball.sha256"
    mv "$tarball.part" "$tarball"
    say "Debian base bootstrapped in $((SECONDS - start)) s"
  fi
  local hash
  hash="$(cat "$tarball.sha256")"
  if [ "$(image_hash "$debian_image")" != "$hash" ]; then
    say "importing $tarball as $debian_image"
    podman import --quiet --change "LABEL $label=$hash" --change 'CMD ["/bin/bash"]' "$tarball" "$debian_image" >/dev/null
  fi
}

# Probe once per base: podman on this host can run a container with the settings in containers.conf.
probe_run() {
  local out
  out="$(podman run --rm --network none "$debian_image" true 2>&1)" ||
    unavailable "podman cannot run a container with $CONTAINERS_CONF: $out"
}

compose_image() { # the image: of a compose service, e.g. compose_image kafka -> apache/kafka:4.1.0
  awk -v svc="  $1:" '$0 == svc {found=1; next} found && /^    image:/ {print $2; exit}' "$compose_file"
}

qualified() { # the name docker would pull: postgres:16 -> docker.io/library/postgres:16
  case "$1" in
    */*/*) echo "$1" ;;
    */*) echo "docker.io/$1" ;;
    *) echo "docker.io/library/$1" ;;
  esac
}

kafka_jars() { # the jars of deploy/local/pom.xml at Kafka $1, fetched once per pom content
  local version="$1" libs="$cache/kafka-$1-libs"
  local pom_hash
  pom_hash="$(sha256sum "$root/deploy/local/pom.xml" | cut -c1-64)"
  if [ "$(cat "$libs/.pom-sha256" 2>/dev/null)" != "$pom_hash" ]; then
    say "fetching Apache Kafka $version jars from Maven Central into $libs (once)"
    rm -rf "$libs"
    # A Maven repository of its own: `make test` fetches the local stack's jars at the same time, and two
    # Maven processes writing one ~/.m2 can corrupt it.
    mvn -B -q -f "$root/deploy/local/pom.xml" dependency:copy-dependencies -Dkafka.version="$version" \
      -Dmaven.repo.local="$cache/m2" -DoutputDirectory="$libs" -DincludeScope=runtime >&2
    echo "$pom_hash" >"$libs/.pom-sha256"
  fi
  echo "$libs"
}

kafka_stand_in() {
  local base_id="$1" kafka_tag version libs ctx hash
  kafka_tag="$(compose_image kafka)"
  version="${kafka_tag##*:}"
  libs="$(kafka_jars "$version")"
  hash="$(content_hash "base=$base_id" "$here/kafka" "$libs")"
  if [ "$(image_hash "$(qualified "$kafka_tag")")" != "$hash" ]; then
    ctx="$(mktemp -d)"
    cp -r "$here/kafka/." "$ctx/"
    cp -r "$libs" "$ctx/libs"
    build "$(qualified "$kafka_tag")" "$hash" "$ctx" --build-arg DEBIAN_IMAGE="$debian_image"
    rm -rf "$ctx"
  else
    say "$(qualified "$kafka_tag"): up to date"
  fi
}

python_base() { # trusts the host's local CAs (a TLS-inspecting proxy's, for pip inside the build)
  local base_id="$1" ctx
  ctx="$(mktemp -d)"
  cp -r "$here/python/." "$ctx/"
  mkdir -p "$ctx/ca"
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/"
  fi
  build "$python_image" "$(content_hash "base=$base_id" "$ctx")" "$ctx" --build-arg DEBIAN_IMAGE="$debian_image"
  rm -rf "$ctx"
}

# The stand-ins share only the Debian base, so they build at the same time (most of a build is apt-get
# downloading); every one must succeed.
stand_ins() {
  local base_id service pid failed=0 pids=()
  base_id="$(image_id "$debian_image")"
  kafka_stand_in "$base_id" &
  pids+=($!)
  for service in postgres prometheus; do
    build "$(qualified "$(compose_image "$service")")" "$(content_hash "base=$base_id" "$here/$service")" \
      "$here/$service" --build-arg DEBIAN_IMAGE="$debian_image" &
    pids+=($!)
  done
  python_base "$base_id" &
  pids+=($!)
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" -eq 0 ] || { say "a stand-in image failed to build (its error is above)"; exit 1; }
  say "grafana ($(compose_image grafana)): no stand-in (not packaged by Debian); start the other services"
}

hookfleet_image() {
  local version tag sources=()
  version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml")"
  tag="localhost/hookfleet:${HOOKFLEET_VERSION:-$version}"
  # Exactly what the Dockerfile copies, so a change elsewhere (tests, docs) does not rebuild the image.
  mapfile -t sources < <(awk '$1 == "COPY" && $2 !~ /^--/ {for (i = 2; i < NF; i++) print $i}' "$root/Dockerfile" | sort -u)
  local hash
  hash="$(content_hash "base=$(image_id "$python_image")" "$root/Dockerfile" "${sources[@]/#/$root/}")"
  build "$tag" "$hash" "$root" -f "$root/Dockerfile" --build-arg BASE_IMAGE="$python_image"
}

images() {
  local start=$SECONDS
  install_tools
  local out
  out="$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>&1)" ||
    unavailable "podman does not start with $CONTAINERS_CONF: $out"
  mkdir -p "$cache"
  debian_base
  probe_run
  stand_ins
  hookfleet_image
  # Images replaced by a rebuild keep their label but lose their name: drop them.
  podman image prune -f --filter "label=$label" >/dev/null
  say "images ready in $((SECONDS - start)) s"
}

case "${1:-}" in
  images) images ;;
  compose)
    shift
    exec "${PODMAN_COMPOSE:-podman-compose}" -f "$compose_file" "$@"
    ;;
  *)
    echo "usage: $0 images | compose ARGS..." >&2
    exit 2
    ;;
esac
