#!/usr/bin/env bash
# Makes sure a Docker engine answers: installs docker.io and starts dockerd when
# none does (Debian, as root). Idempotent and quick when the engine already runs.
set -euo pipefail
log="${DOCKERD_LOG:-/tmp/lambda-dockerd.log}"
if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "no Docker engine and not root: install docker.io (or Docker Engine) first" >&2
    exit 1
  fi
  echo "installing docker.io (Debian package)..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if ! command -v docker >/dev/null 2>&1; then
  echo "dockerd is installed but the docker client is missing" >&2
  exit 1
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "dockerd is not running and this user cannot start it: start the docker service" >&2
    exit 1
  fi
  echo "starting dockerd (log: $log)..."
  nohup dockerd >"$log" 2>&1 &
fi
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "the Docker engine did not come up within 30 s; see $log" >&2
tail -n 20 "$log" >&2 || true
exit 1
