#!/usr/bin/env bash
# augur's overhead on the embedded default: 500 trials of a trivial script (a METRICS
# line), parallel 2, on the release build, against a bare bash loop running the same
# script 500 times in 2 parallel lanes, measured in the same run. Also the time from
# `augur run` to the first trial's script start. Last line: both times and the ratio.
# Targets: ratio <= 1.5; first start <= 150 ms.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${TRIALS:-500}"
cargo build --manifest-path "$root/Cargo.toml" --release --locked --quiet -p augur -p augur-agent
bin="$(cargo metadata --manifest-path "$root/Cargo.toml" --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
script='[ "$AUGUR_TRIAL" = 1 ] && date +%s%N > "$FIRST"; echo "METRICS: loss=1"'
cat > study.toml <<TOML
name = "overhead"
objective = { metric = "loss" }
trials = $n
parallel = 2
[run]
script = '$script'
env = { FIRST = "$work/first" }
TOML
now() { date +%s%N; }

# Baseline: the same script, same preamble, output to a log file per run, 2 lanes.
lane() {
  for ((i = $1; i <= n; i += 2)); do
    AUGUR_TRIAL=$i FIRST=/dev/null bash -c "set -ex; $script" > "$work/base.$i.log" 2>&1
  done
}
t0=$(now)
lane 1 & lane 2 & wait
t1=$(now)
base_ns=$((t1 - t0))

t0=$(now)
"$bin/augur" run study.toml > /dev/null 2> run.err
t1=$(now)
augur_ns=$((t1 - t0))
first_ms=$(( ($(cat first) - t0) / 1000000 ))
done=$("$bin/augur" trials overhead --json | python3 -c 'import json,sys; print(sum(t["state"]=="succeeded" for t in json.load(sys.stdin)))')
[ "$done" = "$n" ] || { echo "only $done of $n trials succeeded" >&2; exit 1; }

echo "first trial's script started ${first_ms} ms after \`augur run\` (target <= 150 ms)"
echo "per trial: augur $(( augur_ns / n / 1000 )) us, bash $(( base_ns / n / 1000 )) us (wall, 2 lanes)"
python3 -c "a=$augur_ns/1e9; b=$base_ns/1e9; print(f'augur {a:.3f} s vs bash loop {b:.3f} s for $n trials, parallel 2: ratio {a/b:.2f} (target <= 1.5)')"
