#!/usr/bin/env bash
# Entrypoint of the full variant. PID 1 is tini: it forwards signals to this script and reaps orphans.
#   lab    (default) sshd and Jupyter Lab as children; TERM/INT/HUP stops both and exits 0
#   ssh    sshd alone, supervised the same way
#   other  run that command as `dev` (e.g. `bash`, `python train.py`)
# Environment:
#   JUPYTER_TOKEN        Jupyter's token; generated (and printed once) when unset or empty
#   SSH_AUTHORIZED_KEYS  public keys for `dev` (or mount /home/dev/.ssh/authorized_keys read-only)
#   HOST_UID, HOST_GID   give `dev` these ids, so files written in a mounted /workspace belong to you
set -euo pipefail

readonly DEV=dev DEV_HOME=/home/dev
readonly KEYS_DIR=/etc/ssh/authorized_keys
readonly STOP_GRACE_S=8 # docker stop waits 10 s before SIGKILL
# Variables SSH sessions get (through pam_env and /etc/profile.d), so `ssh dev@... python` finds torch.
readonly SESSION_VARS=(PATH VIRTUAL_ENV CUDA_HOME TORCH_CUDA_ARCH_LIST LD_LIBRARY_PATH NVIDIA_VISIBLE_DEVICES
  NVIDIA_DRIVER_CAPABILITIES LANG LC_ALL PYTHONUNBUFFERED PIP_DISABLE_PIP_VERSION_CHECK PIP_NO_CACHE_DIR)

log() { echo "entrypoint: $*" >&2; }
die() { log "$*"; exit 2; }

remap_user() {
  local uid="${HOST_UID:-}" gid="${HOST_GID:-}"
  [[ -z "$uid" || "$uid" =~ ^[0-9]+$ ]] || die "HOST_UID=$uid is not a number"
  [[ -z "$gid" || "$gid" =~ ^[0-9]+$ ]] || die "HOST_GID=$gid is not a number"
  [[ "$uid" != 0 ]] || die "HOST_UID=0 would make $DEV root; give your own uid or leave it unset"
  if [[ -n "$gid" && "$gid" != "$(id -g "$DEV")" ]]; then
    groupmod --non-unique --gid "$gid" "$DEV"
  fi
  if [[ -n "$uid" && "$uid" != "$(id -u "$DEV")" ]]; then
    usermod --non-unique --uid "$uid" "$DEV"
  fi
  # The home and the image's own /workspace follow; mounts (-xdev, mountpoint) are the host's business.
  find "$DEV_HOME" -xdev \( ! -user "$DEV" -o ! -group "$DEV" \) -exec chown -h "$DEV:$DEV" {} + 2>/dev/null || true
  if ! mountpoint -q /workspace; then
    chown "$DEV:$DEV" /workspace
  fi
}

write_session_env() {
  # pam_env reads /etc/environment for every SSH session; login shells re-read it in /etc/profile.d.
  local name value
  for name in "${SESSION_VARS[@]}"; do
    value="${!name:-}"
    if [[ -n "$value" && "$value" != *[\'\"\#$'\n']* ]]; then
      printf "%s='%s'\n" "$name" "$value"
    fi
  done > /etc/environment
}

setup_ssh() {
  install -d -m 755 "$KEYS_DIR"
  if [[ -n "${SSH_AUTHORIZED_KEYS:-}" ]]; then
    printf '%s\n' "$SSH_AUTHORIZED_KEYS" > "$KEYS_DIR/$DEV"
    chmod 644 "$KEYS_DIR/$DEV"
  fi
  if [[ ! -s "$KEYS_DIR/$DEV" && ! -s "$DEV_HOME/.ssh/authorized_keys" ]]; then
    log "ssh: no key given (SSH_AUTHORIZED_KEYS or a mounted $DEV_HOME/.ssh/authorized_keys); logins are refused"
  fi
  # Host keys are made at the container's first start (kept across restarts), never baked into the image.
  ssh-keygen -A >/dev/null
  mkdir -p /run/sshd
}

jupyter_token() {
  local token="${JUPYTER_TOKEN:-}"
  if [[ -z "$token" ]]; then
    token="$(python -c 'import secrets; print(secrets.token_hex(24))')"
    echo "Jupyter Lab: http://127.0.0.1:8888/lab?token=${token}  (8888 is the container's port)"
  else
    echo "Jupyter Lab: http://127.0.0.1:8888/lab  (token from JUPYTER_TOKEN)"
  fi
  JUPYTER_TOKEN="$token"
}

as_dev=()
set_as_dev() {
  as_dev=(setpriv --reuid "$(id -u "$DEV")" --regid "$(id -g "$DEV")" --init-groups
    env HOME="$DEV_HOME" USER="$DEV" LOGNAME="$DEV" SHELL=/bin/bash)
}

children=()
stop_children() {
  local pid waited=0
  for pid in "${children[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  while (( waited < STOP_GRACE_S * 10 )); do
    local alive=0
    for pid in "${children[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    (( alive )) || break
    sleep 0.1
    waited=$((waited + 1))
  done
  for pid in "${children[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

on_signal() {
  trap - TERM INT HUP
  log "stopping"
  stop_children
  exit 0
}

# Wait for the main child; if it ends by itself, stop the rest and pass its exit status on.
supervise() {
  local main="$1" status=0
  trap on_signal TERM INT HUP
  while kill -0 "$main" 2>/dev/null; do
    wait -n || true
  done
  wait "$main" || status=$?
  trap - TERM INT HUP
  stop_children
  exit "$status"
}

if [[ "$(id -u)" != 0 ]]; then
  # Started with --user: no remapping and no sshd (it needs root); run the command as is.
  [[ -w "${HOME:-/}" ]] || export HOME=/tmp
  if [[ "${1:-lab}" == lab ]]; then
    jupyter_token
    export JUPYTER_TOKEN
    exec jupyter lab --no-browser --ip=0.0.0.0 --port=8888 --ServerApp.root_dir=/workspace
  fi
  [[ "$1" != ssh ]] || die "sshd needs root: start the container without --user"
  exec "$@"
fi

remap_user
set_as_dev
write_session_env
case "${1:-lab}" in
  lab)
    setup_ssh
    /usr/sbin/sshd -D -e &
    children+=("$!")
    jupyter_token
    # The token travels in the environment: a command-line flag would show in `ps`.
    export JUPYTER_TOKEN
    "${as_dev[@]}" jupyter lab --no-browser --ip=0.0.0.0 --port=8888 --ServerApp.root_dir=/workspace &
    children+=("$!")
    supervise "$!"
    ;;
  ssh)
    setup_ssh
    /usr/sbin/sshd -D -e &
    children+=("$!")
    supervise "$!"
    ;;
  *)
    exec "${as_dev[@]}" "$@"
    ;;
esac
