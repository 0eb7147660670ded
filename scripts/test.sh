#!/usr/bin/env bash
# Sets up everything the tests need and runs all of them (the README's test command).
# Idempotent; needs the Rust toolchain, bash and python3. The AWS tests use moto's
# server from PyPI, installed here into a cached virtualenv (or the endpoint in
# AUGUR_TEST_AWS_ENDPOINT); each test starts and stops its own on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${AUGUR_TEST_AWS_ENDPOINT:-}" ]; then
  scripts/emulator.sh > /dev/null
fi
# CloudFormation templates: cfn-lint, checkov and the least-privilege IAM check.
scripts/infra-check.sh
# The AWS CLI (v1, PyPI) that infra/deploy.sh drives; a test deploys into moto.
AUGUR_TEST_AWSCLI="$(scripts/awscli.sh)"
export AUGUR_TEST_AWSCLI
# Debian's chromium for the browser test of the status pages (screenshots go to
# $AUGUR_SCREENSHOTS, by default the target directory's screenshots/).
AUGUR_TEST_CHROMIUM="$(scripts/browser.sh)"
export AUGUR_TEST_CHROMIUM
# axe-core (npm registry), which the browser test runs in every page (WCAG 2 A/AA).
AUGUR_TEST_AXE="$(scripts/axe.sh)"
export AUGUR_TEST_AXE
# qemu for aarch64 programs: the stand-in runs Graviton instances' agent under it.
scripts/arm64.sh
# The Python package (python/): its tests, against real XGBoost, LightGBM and Keras.
scripts/python-test.sh
# The end-to-end tests run the real binaries: build them first.
cargo build --workspace --bins --locked
# The agent for EC2 instances and augur-lambda, linked for an older glibc (zig and
# cargo-zigbuild are installed into caches by the script); a test checks the symbol
# versions they need, and the deploy test ships them.
AUGUR_INSTANCE_AGENT="$(scripts/instance-binaries.sh dev)"
export AUGUR_INSTANCE_AGENT
# The chaos rows (tests/chaos, tests/tests/ec2.rs) are written here: this run's only.
chaos="${CARGO_TARGET_DIR:-target}/debug/chaos"
rm -rf "$chaos"
cargo test --workspace --locked
# The status pages as the browser test saw them (kept with the build, named here).
shots="${AUGUR_SCREENSHOTS:-${CARGO_TARGET_DIR:-target}/debug/screenshots}"
if [ -d "$shots" ]; then
  echo "screenshots of the status pages (browser test): $(cd "$shots" && pwd)"
  ls -l "$shots"
fi
# The chaos table (tests/chaos and tests/tests/ec2.rs; each row was checked by its test).
if [ -d "$chaos" ]; then
  echo
  echo "| chaos: injected | how many | trials | completed | launches/trial | lost | duplicated | s |"
  echo "|---|---|---|---|---|---|---|---|"
  cat "$chaos"/*.md
fi
# The scale simulation: the real decide() and runner on a virtual clock against a
# simulated cloud, 1,000 then 10,000 trials on 500 machines (fails if a trial is lost
# or an attempt launched twice). A debug build here; see tests/sim/README.md.
echo
cargo run -q -p augur-sim --locked -- 1000 10000
