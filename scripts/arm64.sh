#!/usr/bin/env bash
# Lets this machine run aarch64 Linux programs, as the stand-in's Graviton instances
# do: qemu's user-mode emulator and Debian's arm64 C library (apt, idempotently), and
# the kernel told to hand aarch64 executables to qemu (binfmt_misc, the rule Debian's
# qemu-user-static ships). Needs root (or sudo) and the Debian archive. Programs find
# their loader through QEMU_LD_PREFIX=/usr/aarch64-linux-gnu.
set -euo pipefail
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if ! [ -x /usr/bin/qemu-aarch64-static ] || ! [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y -q qemu-user-static libc6-arm64-cross > /dev/null 2>&1; then
    $sudo apt-get update -q > /dev/null
    $sudo apt-get install -y -q qemu-user-static libc6-arm64-cross > /dev/null
  fi
fi
binfmt=/proc/sys/fs/binfmt_misc
[ -e "$binfmt/register" ] || $sudo mount -t binfmt_misc binfmt_misc "$binfmt"
if ! [ -e "$binfmt/qemu-aarch64" ]; then
  rule=/usr/lib/binfmt.d/qemu-aarch64.conf
  [ -f "$rule" ] || { echo "scripts/arm64.sh: no $rule (qemu-user-static)" >&2; exit 2; }
  $sudo tee "$binfmt/register" < "$rule" > /dev/null
fi
grep -qx enabled "$binfmt/qemu-aarch64" \
  || { echo "scripts/arm64.sh: qemu-aarch64 is registered but disabled in $binfmt" >&2; exit 2; }
