"""XGBoost: `xgb.train(..., callbacks=[augur.xgboost.Report()])` reports each
boosting round's evaluation results, `METRICS: step=1, valid-logloss=0.52, ...`
(named `DATA-METRIC` as XGBoost's `evals_log` names them), through XGBoost's
documented `xgboost.callback.TrainingCallback.after_iteration(model, epoch,
evals_log)`."""

import xgboost

from . import metrics_of, report


class Report(xgboost.callback.TrainingCallback):
    """Reports the last value of every evaluation metric after each round; the
    round (from 1) is the metric `step` (or `step_name`)."""

    def __init__(self, step_name="step"):
        super().__init__()
        self.step_name = step_name

    def after_iteration(self, model, epoch, evals_log):
        metrics = {}
        for data, by_metric in evals_log.items():
            for metric, values in by_metric.items():
                last = values[-1]
                # xgb.cv logs (mean, std) pairs.
                metrics["%s-%s" % (data, metric)] = last[0] if isinstance(last, tuple) else last
        metrics = metrics_of(metrics)
        metrics.pop(self.step_name, None)
        if metrics:
            report(**{self.step_name: epoch + 1}, **metrics)
        return False
