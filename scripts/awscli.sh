#!/usr/bin/env bash
# Installs the AWS CLI (v1, from PyPI) into a cached virtualenv, idempotently, and
# prints the path of its `aws`. infra/deploy.sh uses the `aws` on PATH when there is
# one; the tests use this one (against the emulator).
set -euo pipefail
version="1.46.3"
venv="${AUGUR_CACHE:-$HOME/.cache/augur}/awscli-$version"
if [ ! -x "$venv/bin/aws" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "awscli==$version" >&2
fi
echo "$venv/bin/aws"
