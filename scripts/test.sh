#!/usr/bin/env bash
# Sets up everything the tests need and runs all of them (the README's test command).
# Idempotent; needs only the Rust toolchain, bash and python3 (used by an example).
set -euo pipefail
cd "$(dirname "$0")/.."
# The end-to-end tests run the real binaries: build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked
