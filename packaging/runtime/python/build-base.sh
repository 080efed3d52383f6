#!/usr/bin/env bash
# Builds the registry-free base image: a Debian bookworm minbase root filesystem
# with python3, made by debootstrap and imported with `docker import`.
# The mirror is read from the host's apt sources so no host name is baked in here;
# set DEBIAN_MIRROR to override.
set -euo pipefail
tag="${1:-lambda-runtime/base:bookworm}"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag already present"
  exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  # The first active Debian archive URI (path ending in /debian) of the host's apt sources.
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null \
    | grep -oE '^(URIs:|deb) +[^ ]+' | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
fi
[ -n "$mirror" ] || { echo "no Debian mirror found; set DEBIAN_MIRROR" >&2; exit 1; }
root=$(mktemp -d /tmp/lambda-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm from the host's apt mirror into $root"
debootstrap --variant=minbase --include=python3 bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Trim what a function never needs: apt lists, docs, caches.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
       "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/sh"]' - "$tag"
echo "imported $tag"
