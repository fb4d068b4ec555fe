#!/bin/sh
# Debian packages the local sandbox (tools/sandbox.py) needs; installs only the missing ones.
#   docker.io        dockerd (engine 20.10, API 1.41) when no engine runs
#   docker-registry  plain-HTTP registry on 127.0.0.1 (the base-image mirror)
#   debootstrap      builds the Debian 12 minbase base image (nothing comes from Docker Hub)
#   apache2-utils    htpasswd -B, for registry tests with auth
#   skopeo           inspects pushed images without pulling them
set -eu

PACKAGES="docker.io docker-registry debootstrap apache2-utils skopeo"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *" installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "sandbox-deps: all present ($PACKAGES)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "sandbox-deps: installing$missing"
$SUDO apt-get update
# shellcheck disable=SC2086  # word splitting of the package list is intended
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
