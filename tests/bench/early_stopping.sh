#!/usr/bin/env bash
# Early-stopping benchmark on the embedded default (release build, local processes):
# a study of synthetic learning curves that plateau at different levels and speeds,
# run with the same seed (so the same points): without pruning, with the median rule,
# and with ASHA.
# Prints machine-seconds (launch to finish, summed over trials), wall time and the
# best value of each run; the last line has the saving and the best-value gap.
# Targets: >= 2x fewer machine-seconds, best value within 1 %.
# TRIALS (default 40), STEPS (27) and STEP_SECONDS (0.1) scale it.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
trials="${TRIALS:-40}" steps="${STEPS:-27}" step_s="${STEP_SECONDS:-0.1}"
cargo build --manifest-path "$root/Cargo.toml" --release --locked --quiet -p augur -p augur-agent
bin="$(cargo metadata --manifest-path "$root/Cargo.toml" --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

# loss(step) = plateau + (1.5 - plateau) * exp(-step / tau): good plateaus are not
# always the fastest learners, so early readings can mislead.
cat > curve.sh <<SH
for s in \$(seq 1 $steps); do
  awk -v p="\$AUGUR_PARAM_PLATEAU" -v tau="\$AUGUR_PARAM_TAU" -v s="\$s" \
    'BEGIN { printf "METRICS: step=%d, loss=%.6f\n", s, p + (1.5 - p) * exp(-s / tau) }'
  sleep $step_s
done
SH
study() {
  cat <<TOML
name = "$1"
objective = { metric = "loss" }
trials = $trials
parallel = 4
seed = 11
[params]
plateau = { range = [0.05, 1.0] }
tau = { range = [1.0, 12.0], scale = "log" }
[run]
script = 'bash curve.sh'
files = ["curve.sh"]
TOML
}
study full > full.toml
{ study asha; printf '[prune]\nrule = "asha"\nmin_step = 1\nreduction = 3\n'; } > asha.toml
{ study median; printf '[prune]\nrule = "median"\nwarmup = 3\nmin_trials = 5\n'; } > median.toml

measure() {
  local name="$1" t0 t1
  t0=$(date +%s%N)
  "$bin/augur" run "$name.toml" --heartbeat 100ms > /dev/null 2> "$name.err" || { cat "$name.err" >&2; exit 1; }
  t1=$(date +%s%N)
  "$bin/augur" trials "$name" --json > "$name.trials.json"
  "$bin/augur" leaderboard "$name" --json -n 1 > "$name.best.json"
  python3 - "$name" $(( (t1 - t0) / 1000000 )) <<'PY'
import json, sys
from datetime import datetime
name, wall_ms = sys.argv[1], int(sys.argv[2])
ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
trials = json.load(open(f"{name}.trials.json"))
best = json.load(open(f"{name}.best.json"))[0]
machine = sum(ts(t["finished"]) - ts(t["launched"] or t["started"]) for t in trials)
states = {}
for t in trials:
    states[t["state"]] = states.get(t["state"], 0) + 1
json.dump({"name": name, "machine_s": machine, "wall_s": wall_ms / 1000, "best": best["value"],
           "best_params": best["params"], "states": states}, open(f"{name}.result.json", "w"))
print(f"{name:<6} machine-seconds {machine:8.1f}   wall {wall_ms / 1000:6.1f} s   best loss {best['value']:.5f}   "
      + " ".join(f"{k}={v}" for k, v in sorted(states.items())))
PY
}
echo "$trials trials of $steps steps x ${step_s}s, parallel 4, same seed (same points)"
measure full
measure median
measure asha
python3 - <<'PY'
import json
full, median, asha = (json.load(open(f"{n}.result.json")) for n in ("full", "median", "asha"))
def line(label, r):
    saving = full["machine_s"] / r["machine_s"]
    gap = abs(r["best"] - full["best"]) / abs(full["best"]) * 100
    return (f"{label}: {saving:.2f}x fewer machine-seconds ({r['machine_s']:.1f} s vs {full['machine_s']:.1f} s), "
            f"best loss {r['best']:.5f} vs {full['best']:.5f} ({gap:.2f} % apart)")
print(line("median rule", median))
print(line("ASHA", asha) + "; targets >= 2x and <= 1 %")
PY
