#!/bin/sh
# Installs the Debian packages named as arguments that are not installed yet; a quick no-op when all are.
#   sh scripts/apt-install.sh [--no-install-recommends] PACKAGE...
# Root runs apt-get itself; anyone else through sudo.
set -eu

options=""
if [ "${1:-}" = "--no-install-recommends" ]; then
    options="$1"
    shift
fi

missing=""
for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *" installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "apt-install: all present ($*)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "apt-install: installing$missing"
$SUDO apt-get update -qq
# shellcheck disable=SC2086  # word splitting of the options and the package list is intended
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $options $missing
