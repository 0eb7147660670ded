#!/usr/bin/env bash
# Builds augur and runs an example study to completion, printing its leaderboard.
# Usage: scripts/example.sh [quadratic|branin|curves|flaky|datasets|resume]   (default: quadratic)
# State goes to .augur/ in the current directory; run it again and the finished study
# just prints its leaderboard.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
example="${1:-quadratic}"
# Both binaries, side by side: `augur` starts `augur-agent` for each trial.
cargo build --manifest-path "$root/Cargo.toml" --bins --locked --quiet
cargo run --manifest-path "$root/Cargo.toml" --locked --quiet --bin augur -- \
  run "$root/examples/$example/study.toml"
