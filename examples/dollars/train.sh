#!/usr/bin/env bash
# Stands in for training a model of LAYERS x WIDTH units for 5 epochs: its time
# grows with its size (0.2 s to 2 s in all), its accuracy with its capacity (less
# per unit as it grows) and with a learning rate near 10^-2.5. It reports the
# accuracy each epoch, as a training script would.
set -euo pipefail
units=$(( AUGUR_PARAM_LAYERS * AUGUR_PARAM_WIDTH ))
for epoch in 1 2 3 4 5; do
  read -r accuracy seconds < <(awk -v u="$units" -v lr="$AUGUR_PARAM_LR" -v e="$epoch" 'BEGIN {
    size = log(u / 16) / log(256)               # 0 (16 units) .. 1 (4096 units)
    best = 0.97 - 0.30 * exp(-u / 700) - 0.06 * (log(lr) / log(10) + 2.5) ^ 2
    printf "%.4f %.3f\n", best * (1 - 0.5 * exp(-e)), (0.2 + 1.8 * size) / 5
  }')
  sleep "$seconds"
  echo "METRICS: epoch=$epoch, accuracy=$accuracy"
done
