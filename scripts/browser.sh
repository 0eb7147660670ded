#!/usr/bin/env bash
# Installs Debian's chromium for the browser test, idempotently, and prints its path.
# Needs root (or sudo) and the Debian archive; nothing else from the network.
set -euo pipefail
if ! command -v chromium > /dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y --no-install-recommends chromium > /dev/null 2>&1; then
    $sudo apt-get update > /dev/null
    $sudo apt-get install -y --no-install-recommends chromium > /dev/null
  fi
fi
command -v chromium
