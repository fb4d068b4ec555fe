#!/bin/sh
# Run once while building the full variant: the `dev` user, key-only SSH for it, and login shells that see
# the container's environment. Shipped once with the tool and COPYed by every full Dockerfile.
#
# SSH is key-only and for `dev` alone; keys come from SSH_AUTHORIZED_KEYS (written by the entrypoint to
# /etc/ssh/authorized_keys/dev) or a mounted ~/.ssh/authorized_keys. Host keys are made at first start.
# No account has a password ('*' matches none). SSH sessions get the container's PATH and CUDA variables
# from /etc/environment, which the entrypoint writes and login shells re-read after /etc/profile.
set -eu

printf '%s\n' "PasswordAuthentication no" "KbdInteractiveAuthentication no" "PermitEmptyPasswords no" \
  "PermitRootLogin no" "AllowUsers dev" "PubkeyAuthentication yes" \
  "AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/authorized_keys/%u" "X11Forwarding no" \
  > /etc/ssh/sshd_config.d/pytorch-cuda-images.conf
install -d -m 755 /etc/ssh/authorized_keys
printf '%s\n' "# The container's environment (written by the entrypoint), after /etc/profile reset PATH." \
  'if [ -r /etc/environment ]; then set -a; . /etc/environment; set +a; fi' \
  > /etc/profile.d/zz-pytorch-cuda-images.sh
# Ubuntu 23.04+ images ship a `ubuntu` user at uid 1000.
if id -u ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi
useradd --create-home --uid 1000 --user-group --shell /bin/bash dev
usermod --password '*' dev
mkdir -p /workspace
chown dev:dev /workspace
