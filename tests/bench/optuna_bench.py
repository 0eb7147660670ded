"""Optuna's TPE (default settings) on the problems of oracle-bench, which runs this
script in the same benchmark run. One JSON line per (problem, seed) with the best value
found, then one with the proposal time at 1,000 completed trials."""

import argparse
import json
import math
import random
import statistics
import time

import optuna
from optuna.samplers import TPESampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

H_ALPHA = [1.0, 1.2, 3.0, 3.2]
H_A = [
    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
]
H_P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]


def branin(p):
    x1, x2 = p["x1"], p["x2"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 * x1 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def hartmann6(p):
    x = [p[f"x{j + 1}"] for j in range(6)]
    return -sum(
        H_ALPHA[i] * math.exp(-sum(H_A[i][j] * (x[j] - H_P[i][j]) ** 2 for j in range(6)))
        for i in range(4)
    )


def rosenbrock4_log(p):
    x = [math.log10(p[f"p{j}"]) for j in range(1, 5)]
    return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(3))


PROBLEMS = {
    "branin": (branin, {"x1": (-5.0, 10.0, False), "x2": (0.0, 15.0, False)}, 0.397887),
    "hartmann6": (hartmann6, {f"x{j}": (0.0, 1.0, False) for j in range(1, 7)}, -3.32237),
    "rosenbrock4-log": (rosenbrock4_log, {f"p{j}": (0.01, 100.0, True) for j in range(1, 5)}, 0.0),
}


def objective(f, space):
    def run(trial):
        return f({k: trial.suggest_float(k, lo, hi, log=log) for k, (lo, hi, log) in space.items()})

    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    args = ap.parse_args()
    assert abs(branin({"x1": math.pi, "x2": 2.275}) - PROBLEMS["branin"][2]) < 1e-4
    assert abs(hartmann6(dict(zip([f"x{j}" for j in range(1, 7)],
               [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]))) + 3.32237) < 1e-4
    for name, (f, space, _) in PROBLEMS.items():
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            study = optuna.create_study(sampler=TPESampler(seed=seed))
            study.optimize(objective(f, space), n_trials=args.trials)
            print(json.dumps({"problem": name, "seed": seed, "best": study.best_value}), flush=True)

    # Proposal time after 1,000 completed trials at random points (hartmann6).
    f, space, _ = PROBLEMS["hartmann6"]
    dists = {k: optuna.distributions.FloatDistribution(lo, hi, log=log) for k, (lo, hi, log) in space.items()}
    rng = random.Random(1)
    study = optuna.create_study(sampler=TPESampler(seed=1))
    for _ in range(1000):
        p = {k: rng.uniform(lo, hi) for k, (lo, hi, _) in space.items()}
        study.add_trial(optuna.trial.create_trial(params=p, distributions=dists, value=f(p)))
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        trial = study.ask()
        p = {k: trial.suggest_float(k, lo, hi, log=log) for k, (lo, hi, log) in space.items()}
        times.append((time.perf_counter() - t0) * 1e3)
        study.tell(trial, f(p))
    print(json.dumps({"proposal_ms": statistics.median(times)}), flush=True)


if __name__ == "__main__":
    main()
