#!/bin/sh
# A local stand-in for python:3.11-slim, for building knative/images/*.Dockerfile with buildah
# on a machine that cannot reach Docker Hub (this workplace: no Docker daemon, no registry but
# PyPI, npm and Debian's apt mirror). Real builds use the official image; this exists only so
# the Dockerfiles can be built and run here unchanged.
#
# What it is: a Debian bookworm minbase rootfs (debootstrap from the apt mirror) with Debian's
# python3.11 (3.11.2), python3.11-venv, python3-pip, ca-certificates, netbase and tzdata, tagged
# docker.io/library/python:3.11-slim in the local containers storage.
# How it differs from the official image: Python is Debian's build (3.11.2, in /usr/bin, with
# Debian's patches and its ensurepip wheels), not python.org's 3.11.x built into /usr/local;
# /usr/local/bin/python, python3 and pip are symlinks to it; PATH, LANG=C.UTF-8 and CMD are
# set as the official image sets them; apt and dpkg are configured as in Debian's official
# slim images (apt keeps no caches, dpkg installs no docs). Not reproduced: the official
# image's exact package set, GPG_KEY, PYTHON_SHA256. Extra CA certificates named in
# STANDIN_EXTRA_CA (space-separated files, e.g. a workplace's egress proxy CA) are added to
# the trust store so that pip and apt inside the builds reach their registries.
#
# Usage (root): sh knative/images/standin-base.sh
#   then: buildah bud --format docker -f knative/images/relay.Dockerfile -t dexorder/relay:dev .
# (--format docker: buildah's default OCI format drops HEALTHCHECK; on a host with hybrid
# cgroups crun refuses to run a step, runc works: /etc/containers/containers.conf runtime.)
set -eu

MIRROR=${STANDIN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${STANDIN_SECURITY:-http://deb.debian.org/debian-security}
TAG=docker.io/library/python:3.11-slim

ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$(buildah mount "$ctr")
# everything below writes under $root: never let an empty one mean the host's /
case "$root" in /?*/*) ;; *) echo "unexpected mount point: '$root'" >&2; exit 1 ;; esac

debootstrap --variant=minbase \
    --include=python3.11,python3.11-venv,python3-pip,ca-certificates,netbase,tzdata \
    bookworm "$root" "$MIRROR"

# the official image's apt sources (updates and security too), deb822 as bookworm writes them
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

for ca in ${STANDIN_EXTRA_CA:-}; do
    cp "$ca" "$root/usr/local/share/ca-certificates/$(basename "$ca" .crt).crt"
done
chroot "$root" update-ca-certificates >/dev/null

# the official layout: python, python3 and pip in /usr/local/bin (there: python.org's build)
for name in python python3 python3.11; do
    ln -sf /usr/bin/python3.11 "$root/usr/local/bin/$name"
done
ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip3"

# what Debian's official images (debuerreotype, slim variant) configure and the Dockerfiles
# rely on: apt keeps no package caches or downloaded .debs after an install (the Dockerfiles
# remove only /var/lib/apt/lists), dpkg installs no docs, man pages or translations
test -d "$root/etc/apt/apt.conf.d" && test -d "$root/etc/dpkg/dpkg.cfg.d"  # never the host's
clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"'
printf '%s\n' "DPkg::Post-Invoke { $clean; };" "APT::Update::Post-Invoke { $clean; };" \
    'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' \
    >"$root/etc/apt/apt.conf.d/docker-clean"
printf '%s\n' 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
printf '%s\n' 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
printf '%s\n' 'Apt::AutoRemove::SuggestsImportant "false";' \
    >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
    'path-include /usr/share/locale/locale.alias' 'path-exclude /usr/share/man/*' \
    'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/linda/*' \
    'path-exclude /usr/share/lintian/*' >"$root/etc/dpkg/dpkg.cfg.d/docker"
# and what debootstrap already installed
chroot "$root" sh -c 'find /usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
    find /usr/share/doc -mindepth 1 -type d -empty -delete
    find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    rm -rf /usr/share/man/* /usr/share/info/* /usr/share/groff/* /usr/share/lintian/*
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /var/cache/debconf/*-old'

buildah unmount "$ctr" >/dev/null
buildah config \
    --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --env PYTHON_VERSION=3.11.2 \
    --cmd python3 \
    --label org.dexorder.standin="Debian bookworm python3.11, not the official python:3.11-slim" \
    "$ctr"
buildah commit --rm "$ctr" "$TAG"
trap - EXIT
echo "stand-in committed as $TAG"
