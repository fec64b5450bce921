#!/usr/bin/env bash
# Build infergate's container images on a Docker engine that cannot pull anything.
#
#   scripts/build-local-images.sh            # `make images`
#
# 1. Base image (once; reused while it exists): debootstrap a minimal Debian rootfs from this
#    machine's own apt mirror (read from the apt sources at run time, never written in the repo)
#    with ca-certificates, curl and redis-server, then `docker import` it as infergate-base:bookworm.
# 2. Binaries: `cargo build --release` on the host. The host must run the same Debian release as
#    the base (bookworm) so the binaries find the same glibc inside the image.
# 3. Images: deploy/docker/Dockerfile built on that base with the host binaries
#    (PREBUILT_DIR=bin, a build context holding only them), for the targets gateway, key-admin and
#    dev-upstream, plus a Redis image (deploy/docker/Dockerfile.redis-local) from the same base.
#
# Settings (environment):
#   INFERGATE_TAG=local              tag of the project images
#   INFERGATE_IMAGE_PREFIX=infergate images are <prefix>/gateway, /key-admin, /dev-upstream, /redis
#   INFERGATE_BASE_IMAGE=infergate-base:bookworm
#   INFERGATE_REBUILD_BASE=1         debootstrap again even if the base image exists
#   INFERGATE_SKIP_CARGO=1           use target/release as it is (do not run cargo build)
#   INFERGATE_DEBIAN_MIRROR=URL      mirror for debootstrap (default: the first URIs: of the apt sources)
#
# With internet access none of this is needed: `docker build -f deploy/docker/Dockerfile .` (or
# `docker compose build`) uses the official Rust and Debian images. See docs/deploy.md.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${INFERGATE_TAG:-local}
PREFIX=${INFERGATE_IMAGE_PREFIX:-infergate}
BASE_IMAGE=${INFERGATE_BASE_IMAGE:-infergate-base:bookworm}
SUITE=bookworm
# Keep in sync with RUNTIME_PACKAGES in deploy/docker/Dockerfile (plus redis-server for the Redis image).
BASE_PACKAGES=ca-certificates,curl,redis-server
WORK=target/docker
ROOTFS=$WORK/rootfs-$SUITE
CONTEXT=$WORK/context

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info)"

# ---------------------------------------------------------------------------------------------
# 1. Base image
base_ok() {
  [[ "$(docker image inspect -f '{{ index .Config.Labels "org.infergate.base-packages" }}' "$BASE_IMAGE" 2>/dev/null)" == "$BASE_PACKAGES" ]]
}

apt_mirror() {
  if [[ -n "${INFERGATE_DEBIAN_MIRROR:-}" ]]; then echo "$INFERGATE_DEBIAN_MIRROR"; return; fi
  local m=""
  if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
    m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z "$m" ]]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1=="deb" { for (i=2;i<=NF;i++) if ($i ~ /^https?:/) { print $i; exit } }')
  fi
  [[ -n "$m" ]] || die "cannot find an apt mirror in the apt sources; set INFERGATE_DEBIAN_MIRROR"
  echo "$m"
}

build_base() {
  [[ $(id -u) -eq 0 ]] || die "debootstrap needs root (or build $BASE_IMAGE once as root)"
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  fi
  local marker="$ROOTFS/.infergate-packages"
  if [[ ! -f "$marker" || "$(cat "$marker")" != "$BASE_PACKAGES" ]]; then
    local mirror; mirror=$(apt_mirror)
    log "debootstrap $SUITE ($BASE_PACKAGES) into $ROOTFS"
    rm -rf "$ROOTFS"
    mkdir -p "$WORK"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$ROOTFS" "$mirror" \
      >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
    # Caches and package lists are not needed at run time.
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*.log
    echo "$BASE_PACKAGES" >"$marker"
  else
    log "reusing the rootfs in $ROOTFS"
  fi
  log "docker import -> $BASE_IMAGE"
  tar --exclude=./.infergate-packages -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --change "LABEL org.infergate.base-packages=$BASE_PACKAGES" \
    - "$BASE_IMAGE" >/dev/null
}

if [[ -n "${INFERGATE_REBUILD_BASE:-}" ]] || ! base_ok; then
  build_base
else
  log "reusing base image $BASE_IMAGE"
fi

# ---------------------------------------------------------------------------------------------
# 2. Host binaries
bins=(infergate-gateway infergate-admin infergate-dev-upstream)
if [[ -z "${INFERGATE_SKIP_CARGO:-}" ]]; then
  log "cargo build --release (host)"
  cargo build --release -q -p infergate-gateway -p infergate-key-admin -p infergate-dev-upstream --bins
fi
if [[ -r /etc/os-release ]] && ! grep -q "^VERSION_CODENAME=$SUITE" /etc/os-release; then
  log "warning: the host is not Debian $SUITE; host-built binaries may not run in the $SUITE base"
fi
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/bin"
for b in "${bins[@]}"; do
  [[ -x target/release/$b ]] || die "target/release/$b is missing (run cargo build --release)"
  cp target/release/"$b" "$CONTEXT/bin/$b"
done

# ---------------------------------------------------------------------------------------------
# 3. Images
# docker build, quiet unless it fails (the classic builder's deprecation notice is noise here).
docker_build() {
  local out
  if ! out=$(docker build -q "$@" 2>&1); then
    printf '%s\n' "$out" >&2
    die "docker build $* failed"
  fi
}
build() { # target image
  log "docker build --target $1 -> $2"
  docker_build -f deploy/docker/Dockerfile --target "$1" \
    --build-arg RUST_IMAGE="$BASE_IMAGE" --build-arg RUNTIME_IMAGE="$BASE_IMAGE" \
    --build-arg PREBUILT_DIR=bin \
    -t "$2" "$CONTEXT"
}
build dev-upstream "$PREFIX/dev-upstream:$TAG"
build key-admin "$PREFIX/key-admin:$TAG"
build gateway "$PREFIX/gateway:$TAG"
log "docker build redis -> $PREFIX/redis:$TAG"
mkdir -p "$WORK/redis-context"
docker_build -f deploy/docker/Dockerfile.redis-local --build-arg BASE_IMAGE="$BASE_IMAGE" \
  -t "$PREFIX/redis:$TAG" "$WORK/redis-context"

# The classic builder leaves each build's `build` stage behind as an untagged image (~200 MB of
# binaries); drop ours (they carry the base image's label) so repeated runs don't fill the disk.
docker image prune -f --filter "label=org.infergate.base-packages" >/dev/null 2>&1 || true

for img in "$BASE_IMAGE" "$PREFIX"/{gateway,key-admin,dev-upstream,redis}:"$TAG"; do
  size=$(docker image inspect -f '{{.Size}}' "$img" 2>/dev/null || echo 0)
  log "  $img  $((size / 1000000)) MB"
done
log "done"
