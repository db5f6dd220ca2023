#!/usr/bin/env bash
# Makes the Dockerfiles' base image, python:3.11.11-slim-bookworm, on a machine that
# reaches Debian's packages and PyPI but no container registry: Debian bookworm by
# debootstrap (from the mirror apt uses here) with Debian's Python 3.11 in a venv at
# /usr/local (the official image's layout: `python`, `pip` and site-packages under
# /usr/local, so the Dockerfiles' `pip install --prefix=/install` + `COPY /install
# /usr/local` work unchanged). It is a stand-in (Python 3.11.2, not 3.11.11), for local
# builds only; a registry-connected build (CI) pulls the real image.
#
#   images/base-image.sh [ENGINE]      # podman (default) or docker; needs root
#
# Does nothing if the tag exists already. The machine's extra CA certificates
# (/usr/local/share/ca-certificates) and pip's index, if one is configured, are carried
# in, so that pip inside a build reaches PyPI the way the host does.
set -euo pipefail

ENGINE=${1:-podman}
TAG=${BASE_IMAGE:-docker.io/library/python:3.11.11-slim-bookworm}
MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p; s/^deb \(http[^ ]*\) bookworm .*/\1/p' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n1 || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

if "$ENGINE" image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG exists"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }

ROOTFS=$(mktemp -d /tmp/hpo-base-XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap bookworm from $MIRROR into $ROOTFS"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || { tail -n 20 "$ROOTFS.log" >&2; exit 1; }
rm -f "$ROOTFS.log"

if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
    chroot "$ROOTFS" update-ca-certificates >/dev/null
fi
# The official layout: /usr/local/bin/python and pip, site-packages under /usr/local.
chroot "$ROOTFS" python3 -m venv /usr/local
{
    echo "[global]"
    echo "cert = /etc/ssl/certs/ca-certificates.crt"
    index=$(pip config get global.index-url 2>/dev/null || true)
    if [ -n "${PIP_INDEX_URL:-$index}" ]; then echo "index-url = ${PIP_INDEX_URL:-$index}"; fi
} >"$ROOTFS/etc/pip.conf"
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/* "$ROOTFS"/usr/share/doc/* \
    "$ROOTFS"/usr/share/man/* "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache

tar -C "$ROOTFS" --numeric-owner -c . | "$ENGINE" import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$TAG" >/dev/null
echo "base image $TAG made ($("$ENGINE" run --rm "$TAG" python --version))"
