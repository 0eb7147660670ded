#!/usr/bin/env bash
# Builds the binaries that run on AWS: augur-agent (EC2 instances, x86_64 and
# aarch64 for Graviton) and augur-lambda (the Lambda function, runtime
# provided.al2023, x86_64), for Amazon Linux 2023 and older: linked against glibc
# 2.17 symbols with cargo-zigbuild, and zig from PyPI (both installed here,
# idempotently, into caches). Prints the built x86_64 agent's path; augur-lambda is
# beside it, and the aarch64 agent at the same path under aarch64-unknown-linux-gnu.
# Usage: scripts/instance-binaries.sh [release|dev]   (default: release)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
profile="${1:-release}"
cache="${AUGUR_CACHE:-$HOME/.cache/augur}"
zig="$cache/zig-0.17.1"
if ! "$zig/bin/python3" -c 'import ziglang' 2>/dev/null; then
  rm -rf "$zig"
  python3 -m venv "$zig" >&2
  "$zig/bin/pip" install --quiet --disable-pip-version-check "ziglang==0.17.1" >&2
fi
if ! cargo zigbuild --help > /dev/null 2>&1; then
  cargo install cargo-zigbuild --locked --version 0.24.1 >&2
fi
rustup target list --installed 2> /dev/null | grep -qx aarch64-unknown-linux-gnu \
  || rustup target add aarch64-unknown-linux-gnu >&2
# cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on PATH.
PATH="$zig/bin:$PATH" cargo zigbuild --manifest-path "$root/Cargo.toml" --locked --quiet \
  --profile "$profile" --target x86_64-unknown-linux-gnu.2.17 \
  -p augur-agent -p augur --bin augur-agent --bin augur-lambda >&2
PATH="$zig/bin:$PATH" cargo zigbuild --manifest-path "$root/Cargo.toml" --locked --quiet \
  --profile "$profile" --target aarch64-unknown-linux-gnu.2.17 -p augur-agent --bin augur-agent >&2
dir="$(cargo metadata --manifest-path "$root/Cargo.toml" --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
case "$profile" in dev) sub=debug ;; *) sub="$profile" ;; esac
echo "$dir/x86_64-unknown-linux-gnu/$sub/augur-agent"
