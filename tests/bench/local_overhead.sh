#!/usr/bin/env bash
# augur's overhead on the embedded default: 500 trials of a trivial script (a METRICS
# line), parallel 2, on the release build, against a bare bash loop running the same
# script 500 times in 2 parallel lanes, measured in the same run. Also the time from
# `augur run` to the first trial's script start. Rounds of both, interleaved; the last
# line: the median round's times and ratio.
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
    AUGUR_TRIAL=$i FIRST=/dev/null bash -c "set -ex; $script" > "base.$i.log" 2>&1
  done
}
# Rounds of both, interleaved (the machine's noise hits both alike); the median
# round's ratio is the result. Each round in a directory of its own, nothing deleted
# until the end: some file systems make files slower for a while after deletions.
rounds="${ROUNDS:-3}"
ratios=()
for ((r = 1; r <= rounds; r++)); do
  mkdir "$work/round$r" && cp study.toml "$work/round$r/" && cd "$work/round$r"
  t0=$(now)
  lane 1 & lane 2 & wait
  t1=$(now)
  base_ns=$((t1 - t0))

  t0=$(now)
  "$bin/augur" run study.toml > /dev/null 2> run.err
  t1=$(now)
  augur_ns=$((t1 - t0))
  first_ms=$(( ($(cat "$work/first") - t0) / 1000000 ))
  done=$("$bin/augur" trials overhead --json | python3 -c 'import json,sys; print(sum(t["state"]=="succeeded" for t in json.load(sys.stdin)))')
  [ "$done" = "$n" ] || { echo "only $done of $n trials succeeded" >&2; exit 1; }
  echo "round $r: first trial's script started ${first_ms} ms after \`augur run\`; per trial: augur $(( augur_ns / n / 1000 )) us, bash $(( base_ns / n / 1000 )) us (wall, 2 lanes)"
  cd "$work"
  ratios+=("$(python3 -c "print(f'{$augur_ns/$base_ns:.3f} {$augur_ns/1e9:.3f} {$base_ns/1e9:.3f} $first_ms')")")
done
printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(( (rounds + 1) / 2 ))p" | {
  read -r ratio a b first
  echo "first trial's script started ${first} ms after \`augur run\` (target <= 150 ms)"
  echo "augur $a s vs bash loop $b s for $n trials, parallel 2: ratio $ratio, the median of $rounds rounds (target <= 1.5)"
}
