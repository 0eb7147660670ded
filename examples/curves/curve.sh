# A pretend training run: the loss falls towards a plateau, one step every 0.3 s.
# loss(step) = plateau + (1.5 - plateau) * exp(-step / tau)
for s in $(seq 1 27); do
  awk -v p="$AUGUR_PARAM_PLATEAU" -v tau="$AUGUR_PARAM_TAU" -v s="$s" \
    'BEGIN { printf "METRICS: step=%d, loss=%.5f\n", s, p + (1.5 - p) * exp(-s / tau) }'
  sleep 0.3
done
