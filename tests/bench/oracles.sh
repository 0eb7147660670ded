#!/usr/bin/env bash
# Search benchmark, one command: installs Optuna from PyPI into a cached virtualenv,
# builds oracle-bench (release), and runs augur's oracles and Optuna's TPE on Branin,
# Hartmann-6 and a log-scaled 4-D Rosenbrock (100 trials, 10 seeds each; override
# with TRIALS, SEEDS and FIRST_SEED). The last line is augur TPE's median regret over
# Optuna's.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="$(bash "$root/scripts/pytool.sh" optuna 5.0.0 python)"
cargo build --manifest-path "$root/Cargo.toml" --release --locked --quiet -p augur-bench
bin="$(cargo metadata --manifest-path "$root/Cargo.toml" --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
exec "$bin/oracle-bench" --trials "${TRIALS:-100}" --seeds "${SEEDS:-10}" --first-seed "${FIRST_SEED:-0}" \
  --python "$python" --optuna "$root/tests/bench/optuna_bench.py"
