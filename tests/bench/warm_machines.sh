#!/usr/bin/env bash
# Issue 18's bench on the AWS path (the emulator, the fault proxy and the fake
# hypervisor, as the tests run them): 20 trials of 30 s, parallel 4, instances that
# take 40 s to boot; one instance per attempt against instances kept warm
# (run.reuse = "study"), in the same run. Prints wall time, machine-seconds,
# RunInstances calls and DynamoDB writes per trial for both, and the ratios.
# Target: machine-seconds >= 1.5x fewer when warm; writes per trial no higher.
# About ten minutes; BENCH_SCALE=N divides every duration.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cargo build --locked --quiet --workspace --bins
cargo test --locked --quiet -p augur-tests --test warm warm_machines_bench -- --ignored --nocapture 2>&1 \
  | grep -E "single-use|warm:|machine-seconds single" 
