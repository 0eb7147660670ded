"""augur.lightgbm.report in a real LightGBM training run (lightgbm from PyPI)."""

import lightgbm as lgb
import numpy as np

import augur.lightgbm


def test_each_iteration_reports_its_evaluations(capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    y = 2 * x[:, 0] - x[:, 2] + rng.normal(scale=0.1, size=300)
    train = lgb.Dataset(x[:200], y[:200])
    valid = lgb.Dataset(x[200:], y[200:], reference=train)
    lgb.train(
        {"objective": "regression", "metric": "l2", "verbose": -1, "num_leaves": 7},
        train,
        num_boost_round=6,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[augur.lightgbm.report()],
    )
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("METRICS:")]
    assert len(lines) == 6
    assert lines[0].startswith("METRICS: step=1, valid-l2=")
    l2 = [float(l.split("valid-l2=")[1]) for l in lines]
    assert l2[-1] < l2[0], l2
