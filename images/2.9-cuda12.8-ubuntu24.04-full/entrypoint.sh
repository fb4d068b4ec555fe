#!/usr/bin/env bash
# Entrypoint of the full variant (PID 1 is tini, which forwards signals and reaps children).
#   lab    (default) start sshd when keys are given, then Jupyter Lab in the foreground as `dev`
#   ssh    sshd alone, in the foreground
#   other  run that command as `dev` (e.g. `bash`, `python train.py`)
# Environment: JUPYTER_TOKEN (generated when unset, never empty), SSH_AUTHORIZED_KEYS (or a mounted
# /home/dev/.ssh/authorized_keys), HOST_UID / HOST_GID (the owner of files written in /workspace).
set -euo pipefail

user=dev
home=/home/dev

remap_user() {
  if [[ -n "${HOST_GID:-}" && "${HOST_GID}" != "$(id -g "$user")" ]]; then
    groupmod --non-unique --gid "$HOST_GID" "$user"
  fi
  if [[ -n "${HOST_UID:-}" && "${HOST_UID}" != "$(id -u "$user")" ]]; then
    usermod --non-unique --uid "$HOST_UID" "$user"
  fi
  chown "$user:$user" "$home" /workspace 2>/dev/null || true
}

setup_ssh() {
  mkdir -p "$home/.ssh"
  if [[ -n "${SSH_AUTHORIZED_KEYS:-}" ]]; then
    printf '%s\n' "$SSH_AUTHORIZED_KEYS" > "$home/.ssh/authorized_keys"
  fi
  [[ -s "$home/.ssh/authorized_keys" ]] || return 1
  chown -R "$user:$user" "$home/.ssh"
  chmod 700 "$home/.ssh"
  chmod 600 "$home/.ssh/authorized_keys"
  # Host keys are made at first start, never baked into the image.
  ssh-keygen -A >/dev/null
  mkdir -p /run/sshd
}

as_user() {
  exec setpriv --reuid "$(id -u "$user")" --regid "$(id -g "$user")" --init-groups \
    env HOME="$home" USER="$user" PATH="$PATH" "$@"
}

remap_user
case "${1:-lab}" in
  lab)
    if setup_ssh; then
      /usr/sbin/sshd -e
    else
      echo "ssh: no authorized key given (SSH_AUTHORIZED_KEYS or a mounted authorized_keys); sshd not started"
    fi
    token="${JUPYTER_TOKEN:-}"
    if [[ -z "$token" ]]; then
      token="$(python -c 'import secrets; print(secrets.token_hex(24))')"
      echo "Jupyter Lab: http://127.0.0.1:8888/lab?token=${token}"
    else
      echo "Jupyter Lab: http://127.0.0.1:8888/lab (token from JUPYTER_TOKEN)"
    fi
    export JUPYTER_TOKEN="$token"
    as_user jupyter lab --ip=0.0.0.0 --port=8888 --no-browser --ServerApp.root_dir=/workspace \
      --IdentityProvider.token="$token"
    ;;
  ssh)
    setup_ssh || { echo "ssh: no authorized key given" >&2; exit 2; }
    exec /usr/sbin/sshd -D -e
    ;;
  *)
    as_user "$@"
    ;;
esac
