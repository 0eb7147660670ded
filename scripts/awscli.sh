#!/usr/bin/env bash
# Installs the AWS CLI (v1, from PyPI) into a cached virtualenv, idempotently, and
# prints the path of its `aws`. infra/deploy.sh uses the `aws` on PATH when there is
# one; the tests use this one (against the emulator).
set -euo pipefail
exec "$(dirname "$0")/pytool.sh" awscli 1.46.3 aws
