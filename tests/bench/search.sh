#!/usr/bin/env bash
# Both search benchmarks from one command: oracles.sh (augur's TPE and random search
# against Optuna's TPE) and early_stopping.sh (no pruning vs the median rule vs ASHA).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/oracles.sh"
echo
bash "$here/early_stopping.sh"
