#!/usr/bin/env bash
# The search benchmarks from one command: oracles.sh (augur's TPE and random search
# against Optuna's TPE), pareto.sh (augur's MOTPE and NSGA-II against Optuna's, by
# hypervolume) and early_stopping.sh (no pruning vs the median rule vs ASHA).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/oracles.sh"
echo
bash "$here/pareto.sh"
echo
bash "$here/early_stopping.sh"
