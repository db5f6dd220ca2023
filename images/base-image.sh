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
#   images/base-image.sh --print-mirror # the Debian mirror it would use, and nothing else
#
# The mirror is the host's own, as apt uses it: DEBIAN_MIRROR if set, else the first
# enabled `deb` source of a release suite (no -security/-updates) in the deb822 files
# /etc/apt/sources.list.d/*.sources, then in the one-line /etc/apt/sources.list
# (APT_ETC replaces /etc/apt, for tests). No address is written here: none found is
# an error that says where it looked.
#
# Does nothing if the tag exists already. The machine's extra CA certificates
# (/usr/local/share/ca-certificates) and pip's index, if one is configured, are carried
# in, so that pip inside a build reaches PyPI the way the host does.
set -euo pipefail

APT_ETC=${APT_ETC:-/etc/apt}

# deb822 stanzas: Types, URIs, Suites, Enabled (continuation lines ignored).
deb822_mirror() {
    awk '
        function flush() {
            if (types ~ /(^| )deb( |$)/ && enabled != "no" && uri != "")
                for (i = 1; i <= n; i++) if (suites[i] !~ /-/) { print uri; found = 1; exit }
            types = ""; uri = ""; enabled = ""; n = 0
        }
        /^[ \t]*$/ { flush(); next }
        /^#/ { next }
        tolower($1) == "types:" { types = ""; for (i = 2; i <= NF; i++) types = types " " $i; types = types " " }
        tolower($1) == "uris:" { uri = $2 }
        tolower($1) == "suites:" { n = 0; for (i = 2; i <= NF; i++) suites[++n] = $i }
        tolower($1) == "enabled:" { enabled = tolower($2) }
        END { if (!found) flush() }
    ' "$@" 2>/dev/null | head -n1
}

# One-line format: deb [options] URI SUITE COMPONENTS...
one_line_mirror() {
    awk '
        $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) !~ /-/) { print $i; exit }
        }
    ' "$@" 2>/dev/null | head -n1
}

host_mirror() {
    local found=""
    if compgen -G "$APT_ETC/sources.list.d/*.sources" >/dev/null; then
        found=$(deb822_mirror "$APT_ETC"/sources.list.d/*.sources)
    fi
    if [ -z "$found" ] && [ -f "$APT_ETC/sources.list" ]; then
        found=$(one_line_mirror "$APT_ETC/sources.list")
    fi
    printf '%s' "$found"
}

MIRROR=${DEBIAN_MIRROR:-$(host_mirror)}
if [ -z "$MIRROR" ]; then
    echo "no Debian mirror found: no enabled 'deb' source of a release suite in" \
        "$APT_ETC/sources.list.d/*.sources or $APT_ETC/sources.list; set DEBIAN_MIRROR" \
        "to the mirror apt should use" >&2
    exit 1
fi
if [ "${1:-}" = "--print-mirror" ]; then
    echo "$MIRROR"
    exit 0
fi
ENGINE=${1:-podman}
TAG=${BASE_IMAGE:-docker.io/library/python:3.11.11-slim-bookworm}

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
