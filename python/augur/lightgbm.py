"""LightGBM: `lgb.train(..., callbacks=[augur.lightgbm.report()])` reports each
iteration's evaluation results, `METRICS: step=1, valid_0-l2=0.31`, through
LightGBM's documented callback interface: a callable given a `CallbackEnv` whose
`evaluation_result_list` holds `(data_name, eval_name, value, is_higher_better)`
(and a fifth item, the standard deviation, under `lgb.cv`)."""

from . import metrics_of
from . import report as _report


def report(step_name="step"):
    """A LightGBM callback that prints a METRICS line after every iteration."""

    def callback(env):
        metrics = {}
        for item in env.evaluation_result_list or []:
            data, name, value = item[0], item[1], item[2]
            metrics["%s-%s" % (data, name)] = value
        metrics = metrics_of(metrics)
        metrics.pop(step_name, None)
        if metrics:
            _report(**{step_name: env.iteration + 1}, **metrics)

    # After LightGBM's logging (10) and recording (20), before early stopping (30),
    # which ends training by raising: its last iteration is reported too.
    callback.order = 25
    return callback
