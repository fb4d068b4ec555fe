#!/bin/sh
# Debian packages the tests need beyond the sandbox's (scripts/sandbox-deps.sh); installs missing ones.
#   python3-venv  `python3 -m venv` for .venv (Debian ships ensurepip apart)
#   chromium      headless browser that renders the nightly HTML report (tests/integration/test_report.py)
set -eu
exec sh "$(dirname "$0")/apt-install.sh" --no-install-recommends python3-venv chromium
