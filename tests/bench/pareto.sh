#!/usr/bin/env bash
# Pareto search benchmark, one command: installs Optuna from PyPI into a cached
# virtualenv, builds pareto-bench (release), and runs augur's MOTPE and NSGA-II and
# Optuna's multi-objective TPE and NSGA-II on ZDT1, ZDT2, DTLZ2 (3 objectives) and the
# constrained BNH, one trial at a time and 8 at a time (100 trials, 10 seeds each;
# override with TRIALS, SEEDS and FIRST_SEED). The last lines are, per problem and
# parallelism, augur's best median hypervolume over Optuna's best.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="$(bash "$root/scripts/pytool.sh" optuna 5.0.0 python)"
cargo build --manifest-path "$root/Cargo.toml" --release --locked --quiet -p augur-bench
bin="$(cargo metadata --manifest-path "$root/Cargo.toml" --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
exec "$bin/pareto-bench" --trials "${TRIALS:-100}" --seeds "${SEEDS:-10}" --first-seed "${FIRST_SEED:-0}" \
  --python "$python" --optuna "$root/tests/bench/optuna_pareto.py"
