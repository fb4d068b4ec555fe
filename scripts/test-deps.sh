#!/bin/sh
# Debian packages the tests need beyond the sandbox's (scripts/sandbox-deps.sh); installs only missing ones.
#   chromium   headless browser that renders the nightly HTML report (tests/integration/test_report.py)
set -eu

PACKAGES="chromium"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *" installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "test-deps: all present ($PACKAGES)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "test-deps: installing$missing"
$SUDO apt-get update
# shellcheck disable=SC2086  # word splitting of the package list is intended
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
