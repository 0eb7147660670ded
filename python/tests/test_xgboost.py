"""augur.xgboost.Report in a real XGBoost training run (xgboost-cpu from PyPI)."""

import numpy as np
import xgboost as xgb

import augur.xgboost


def test_each_round_reports_its_evaluations(capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    train, valid = xgb.DMatrix(x[:150], y[:150]), xgb.DMatrix(x[150:], y[150:])
    xgb.train(
        {"objective": "binary:logistic", "eval_metric": ["logloss", "error", "error@0.7"], "max_depth": 2},
        train,
        num_boost_round=5,
        evals=[(train, "train"), (valid, "valid")],
        callbacks=[augur.xgboost.Report()],
        verbose_eval=False,
    )
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("METRICS:")]
    assert len(lines) == 5
    assert lines[0].startswith("METRICS: step=1, train-logloss=")
    assert "valid-error=" in lines[4] and "step=5" in lines[4]
    assert "valid-error_0.7=" in lines[4], "error@0.7 made a name augur reads"
    losses = [float(l.split("valid-logloss=")[1].split(",")[0]) for l in lines]
    assert losses[-1] < losses[0], losses
