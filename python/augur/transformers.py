"""Hugging Face Transformers: `Trainer(..., callbacks=[augur.transformers.Report()])`
reports what the Trainer logs (`loss`, `eval_loss`, `learning_rate`, ...) at each
logging step, `METRICS: step=500, loss=0.41`, through the documented
`TrainerCallback.on_log(args, state, control, logs=None, **kwargs)`, the step being
`state.global_step`.

Without `transformers` installed `Report` is a plain class with the same method
(how augur's tests call it: the Trainer needs PyTorch, whose PyPI wheels bring CUDA
libraries of gigabytes, beyond CI's budget)."""

from . import metrics_of, report

try:
    from transformers import TrainerCallback as _Base
except ImportError:  # pragma: no cover - depends on what is installed
    _Base = object


class Report(_Base):
    def __init__(self, step_name="step"):
        super().__init__()
        self.step_name = step_name

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not getattr(state, "is_world_process_zero", True):
            return control
        numbers = metrics_of(logs or {})
        numbers.pop(self.step_name, None)
        if numbers:
            report(**{self.step_name: state.global_step}, **numbers)
        return control
