#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries are installed (Debian's `postgresql`, as root), for the
# tests: they start their own private server on a Unix socket (tests/support/postgres.py) and
# never use the system cluster, so this script never starts one and stops one the package
# started. Idempotent and quick when the binaries are there.
set -euo pipefail
have_initdb() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null 2>&1
}
if have_initdb; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "no PostgreSQL server binaries and not root: install Debian's postgresql first" >&2
  exit 1
fi
echo "installing postgresql (Debian package)..."
apt-get update -qq
# policy-rc.d 101: the package's post-install must not start the system cluster.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _port status _rest; do
    if [ "$status" = online ]; then pg_ctlcluster "$version" "$cluster" stop || true; fi
  done
fi
if ! have_initdb; then
  echo "postgresql is installed but no /usr/lib/postgresql/*/bin/initdb was found" >&2
  exit 1
fi
