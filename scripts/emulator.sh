#!/usr/bin/env bash
# Installs the local AWS emulator (moto's server, from PyPI) into a cached virtualenv,
# idempotently, and prints the path of its `moto_server`. The tests start and stop the
# server themselves, on 127.0.0.1 only. AUGUR_TEST_AWS_ENDPOINT, when set, makes the
# tests use that endpoint instead (LocalStack, or real AWS) and this script unneeded.
set -euo pipefail
version="5.2.5"
venv="${AUGUR_CACHE:-$HOME/.cache/augur}/moto-$version"
if [ ! -x "$venv/bin/moto_server" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$version" >&2
fi
echo "$venv/bin/moto_server"
