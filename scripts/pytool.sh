#!/usr/bin/env bash
# Installs a Python tool from PyPI into its own cached virtualenv, idempotently, and
# prints the path of one of its programs. The other scripts call it.
# Usage: scripts/pytool.sh NAME VERSION PROGRAM [PIP-SPEC]
#   e.g. scripts/pytool.sh moto 5.2.5 moto_server "moto[server]==5.2.5"
set -euo pipefail
name="$1" version="$2" program="$3" spec="${4:-$1==$2}"
venv="${AUGUR_CACHE:-$HOME/.cache/augur}/$name-$version"
if [ ! -x "$venv/bin/$program" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2
fi
echo "$venv/bin/$program"
