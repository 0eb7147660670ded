#!/usr/bin/env bash
# Builds augur and runs an example study to completion, printing its leaderboard.
# Usage: scripts/example.sh [quadratic|branin|curves|dollars|flaky|datasets|resume]   (default: quadratic)
# State goes to .augur/ in the current directory; run it again and the finished study
# just prints its leaderboard.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
example="${1:-quadratic}"
# Only the two binaries it runs, side by side: `augur` starts `augur-agent` for each
# trial (not the workspace's others: the Lambda, the simulation, the benches).
cargo build --manifest-path "$root/Cargo.toml" --locked --quiet \
  -p augur --bin augur -p augur-agent --bin augur-agent
# Run as built: `cargo run` of one package could unify features afresh and rebuild.
target="${CARGO_TARGET_DIR:-$root/target}"
exec "$target/debug/augur" run "$root/examples/$example/study.toml"
