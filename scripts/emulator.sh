#!/usr/bin/env bash
# Installs the local AWS emulator (moto's server, from PyPI) into a cached virtualenv,
# idempotently, and prints the path of its `moto_server`. The tests start and stop the
# server themselves, on 127.0.0.1 only. AUGUR_TEST_AWS_ENDPOINT, when set, makes the
# tests use that endpoint instead (LocalStack, or real AWS) and this script unneeded.
set -euo pipefail
exec "$(dirname "$0")/pytool.sh" moto 5.2.5 moto_server "moto[server]==5.2.5"
