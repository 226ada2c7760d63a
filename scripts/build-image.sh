#!/usr/bin/env bash
# Builds the exporter's OCI image without a Docker engine, then runs `--version` inside it.
#
#   scripts/build-image.sh [--tag IMAGE] [--oci-archive FILE] [--rebuild-base]
#
# Uses buildah with `--isolation chroot` (works in containers without cgroup delegation). Needs
# no container registry: the base image is built locally once with debootstrap (Debian bookworm
# minbase + python3, python3-venv, ca-certificates) and kept in the buildah storage under
# .tools/image/, so later runs only rebuild the application layers. The build names that base by
# its digest, so the image is built from exactly the base just made or checked, and records it
# in its org.opencontainers.image.base.name label. With a registry at hand,
# BASE_IMAGE=<image>@sha256:... builds from that image instead (the Dockerfile's default is
# python:3.11-slim by digest). Dependencies come from requirements/*.txt, checked by hash.
# The smoke test runs the image as its user, finds the Avro schemas, and checks that neither the
# simulator nor numpy nor the PromQL parser is installed.
# Installs buildah and debootstrap with apt when they are missing. Needs root (or sudo -n).
#
# Env: IMAGE_WORK_DIR (default .tools/image), DEBIAN_MIRROR (default: the host's apt mirror),
#      BASE_IMAGE (skip debootstrap and build FROM this image, pinned by digest, instead).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/exporter/__init__.py")"
TAG="localhost/chargeback-exporter:${VERSION}"
OCI_ARCHIVE=""
REBUILD_BASE=0
WORK="${IMAGE_WORK_DIR:-$ROOT/.tools/image}"
SUITE=bookworm
LOCAL_BASE="localhost/chargeback-exporter-base:${SUITE}-python3"

die() { echo "build-image: $*" >&2; exit 1; }
step() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) [ $# -ge 2 ] || die "--tag needs a value"; TAG="$2"; shift 2 ;;
    --oci-archive) [ $# -ge 2 ] || die "--oci-archive needs a file"; OCI_ARCHIVE="$2"; shift 2 ;;
    --rebuild-base) REBUILD_BASE=1; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[ -n "$VERSION" ] || die "cannot read __version__ from exporter/__init__.py"

SUDO=""
if [ "$(id -u)" != "0" ]; then
  sudo -n true 2>/dev/null || die "needs root (buildah chroot isolation and debootstrap); run as root or allow sudo -n"
  SUDO="sudo -n"
fi

# The host's Debian mirror: first URI of the deb822 sources, else of sources.list.
host_mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri="$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list)"
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
if [ -z "${BASE_IMAGE:-}" ]; then
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
fi
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

mkdir -p "$WORK"
B=(buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver overlay)
[ -z "$SUDO" ] || B=(sudo -n "${B[@]}")

BASE="${BASE_IMAGE:-$LOCAL_BASE}"
if [ -z "${BASE_IMAGE:-}" ]; then
  if [ "$REBUILD_BASE" = 1 ] || ! "${B[@]}" inspect --type image "$LOCAL_BASE" >/dev/null 2>&1; then
    MIRROR="${DEBIAN_MIRROR:-$(host_mirror)}"
    step "debootstrap $SUITE from $MIRROR"
    $SUDO rm -rf "$WORK/rootfs"
    # The Release file must carry a valid signature by Debian's archive keys: the packages'
    # checksums chain to it, so a mirror cannot slip in other files.
    $SUDO debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
      "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
      || die "debootstrap failed, see $WORK/debootstrap.log"
    $SUDO rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
    step "commit base image $LOCAL_BASE"
    ctr="$("${B[@]}" from scratch)"
    "${B[@]}" copy "$ctr" "$WORK/rootfs" / >/dev/null
    "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env LANG=C.UTF-8 "$ctr"
    "${B[@]}" commit -q "$ctr" "$LOCAL_BASE" >/dev/null
    "${B[@]}" rm "$ctr" >/dev/null
    $SUDO rm -rf "$WORK/rootfs"
  else
    step "reusing base image $LOCAL_BASE"
  fi
  digest="$("${B[@]}" inspect --type image --format '{{.FromImageDigest}}' "$LOCAL_BASE")"
  [[ "$digest" == sha256:* ]] || die "cannot read the digest of $LOCAL_BASE"
  BASE="${LOCAL_BASE%:*}@$digest"
fi
[[ "$BASE" == *@sha256:* ]] || die "BASE_IMAGE must be pinned by digest (<image>@sha256:...), got $BASE"

# pip in the build uses the host's CA bundle (a TLS-intercepting proxy's CA lives there) and the
# host's index, if one is set. Both are bind mounts for RUN steps only, never image layers.
PIPCONF="$WORK/pip.conf"
{
  echo "[global]"
  echo "cert = /etc/ssl/certs/ca-certificates.crt"
  [ -n "${PIP_INDEX_URL:-}" ] && echo "index-url = ${PIP_INDEX_URL}"
  echo "timeout = 180"
} >"$PIPCONF"
REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"

step "build $TAG from $BASE"
"${B[@]}" build --isolation chroot --network host --layers \
  -v /etc/ssl/certs:/etc/ssl/certs:ro -v "$PIPCONF:/etc/pip.conf:ro" \
  --build-arg "BASE=$BASE" --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" \
  -f "$ROOT/Dockerfile" -t "$TAG" "$ROOT"

step "smoke test: chargeback-exporter --version as the image's user"
ctr="$("${B[@]}" from -q "$TAG")"
trap '"${B[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
out="$("${B[@]}" run --isolation chroot "$ctr" -- /opt/chargeback-exporter/bin/chargeback-exporter --version)"
echo "$out"
[ "$out" = "chargeback-exporter $VERSION" ] || die "unexpected --version output: $out"
uid="$("${B[@]}" run --isolation chroot "$ctr" -- /opt/chargeback-exporter/bin/python -c 'import os; print(os.getuid())')"
[ "$uid" = "10001" ] || die "image runs as uid $uid, expected 10001"
# The Avro contract is package data reached through a symlink; a dangling one builds silently.
"${B[@]}" run --isolation chroot "$ctr" -- /opt/chargeback-exporter/bin/python -c \
  "from importlib.resources import files; assert list(files('exporter').joinpath('schemas').glob('*.avsc'))" \
  || die "the image's package has no exporter/schemas/*.avsc"
# The simulator and what only it needs are an extra the image must not carry.
"${B[@]}" run --isolation chroot "$ctr" -- /opt/chargeback-exporter/bin/python -c \
  "import importlib.util as u, sys; m = [n for n in ('chargeback_simulator', 'numpy', 'promql_parser', 'noida_db') if u.find_spec(n)]; sys.exit(f'installed: {m}' if m else 0)" \
  || die "the image carries the simulator extra"

if [ -n "$OCI_ARCHIVE" ]; then
  step "export $OCI_ARCHIVE"
  "${B[@]}" push -q "$TAG" "oci-archive:$OCI_ARCHIVE"
fi
"${B[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -F "$TAG" || true
step "done: $TAG"
