#!/bin/sh
# Debian packages the local sandbox (tools/sandbox.py) and the registry tests need; installs missing ones.
#   docker.io        dockerd (engine 20.10, API 1.41) when no engine runs
#   docker-registry  plain-HTTP registry on 127.0.0.1 (the base-image mirror)
#   debootstrap      builds the Debian 12 minbase base image (nothing comes from Docker Hub)
#   apache2-utils    htpasswd -B, for registry tests with auth
#   skopeo           inspects pushed images without pulling them
set -eu
exec sh "$(dirname "$0")/apt-install.sh" docker.io docker-registry debootstrap apache2-utils skopeo
