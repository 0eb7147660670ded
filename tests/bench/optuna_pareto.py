"""Optuna's multi-objective TPESampler (multivariate) and NSGAIISampler, default
settings otherwise, on the problems of pareto-bench, which runs this script in the same
benchmark run. One JSON line per (problem, method, parallel, seed) with every trial's
objective values followed by its constraint metrics; pareto-bench measures the
hypervolume itself, as it does for augur's searches."""

import argparse
import json
import math

import optuna
from optuna.samplers import NSGAIISampler, TPESampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def zdt1(x):
    g = 1 + 9 * sum(x[1:]) / (len(x) - 1)
    return [x[0], g * (1 - math.sqrt(x[0] / g))]


def zdt2(x):
    g = 1 + 9 * sum(x[1:]) / (len(x) - 1)
    return [x[0], g * (1 - (x[0] / g) ** 2)]


def dtlz2(x):
    g = sum((v - 0.5) ** 2 for v in x[2:])
    h = math.pi / 2
    return [
        (1 + g) * math.cos(x[0] * h) * math.cos(x[1] * h),
        (1 + g) * math.cos(x[0] * h) * math.sin(x[1] * h),
        (1 + g) * math.sin(x[0] * h),
    ]


def bnh(x):
    a, b = x
    return [4 * a * a + 4 * b * b, (a - 5) ** 2 + (b - 5) ** 2, (a - 5) ** 2 + b * b, (a - 8) ** 2 + (b + 3) ** 2]


# name: (function, upper bounds, objectives, constraints as g(values) <= 0)
PROBLEMS = {
    "zdt1": (zdt1, [1.0] * 30, 2, []),
    "zdt2": (zdt2, [1.0] * 30, 2, []),
    "dtlz2": (dtlz2, [1.0] * 12, 3, []),
    "bnh": (bnh, [5.0, 3.0], 2, [lambda v: v[2] - 25.0, lambda v: 7.7 - v[3]]),
}


def constraints_of(trial):
    return trial.user_attrs["constraints"]


def search(name, method, seed, trials, parallel):
    f, upper, m, constraints = PROBLEMS[name]
    cf = constraints_of if constraints else None
    sampler = (
        TPESampler(seed=seed, multivariate=True, constraints_func=cf)
        if method == "tpe"
        else NSGAIISampler(seed=seed, constraints_func=cf)
    )
    study = optuna.create_study(directions=["minimize"] * m, sampler=sampler)
    rows = []
    done = 0
    while done < trials:
        batch = [study.ask() for _ in range(min(parallel, trials - done))]
        for t in batch:
            x = [t.suggest_float(f"x{i:02}", 0.0, hi) for i, hi in enumerate(upper)]
            values = f(x)
            t.set_user_attr("constraints", [g(values) for g in constraints])
            rows.append(values)
        for t, values in zip(batch, rows[done:]):
            study.tell(t, values[:m])
        done += len(batch)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    a = ap.parse_args()
    for name in PROBLEMS:
        for parallel in (1, 8):
            for method in ("tpe", "nsga2"):
                for seed in range(a.first_seed, a.first_seed + a.seeds):
                    rows = search(name, method, seed, a.trials, parallel)
                    print(json.dumps({"problem": name, "method": f"optuna-{method}", "parallel": parallel, "seed": seed, "values": rows}), flush=True)


if __name__ == "__main__":
    main()
