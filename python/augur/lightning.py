"""PyTorch Lightning: `Trainer(callbacks=[augur.lightning.Report()])` reports the
logged metrics (`trainer.callback_metrics`) at the end of each validation epoch,
`METRICS: epoch=1, val_loss=0.45, train_loss=0.41`, through Lightning's documented
`Callback.on_train_epoch_end(trainer, pl_module)`, which runs after the epoch's
validation.

Lightning is imported as `lightning.pytorch`, else `pytorch_lightning`. Without
either, `Report` is a plain class with the same methods (how augur's tests call it:
PyTorch from PyPI brings CUDA libraries of gigabytes, beyond CI's budget)."""

from . import metrics_of, report

try:
    from lightning.pytorch.callbacks import Callback as _Base
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from pytorch_lightning.callbacks import Callback as _Base
    except ImportError:
        _Base = object


class Report(_Base):
    def __init__(self, step_name="epoch"):
        super().__init__()
        self.step_name = step_name

    def on_train_epoch_end(self, trainer, pl_module):
        """Lightning calls it after the epoch's validation, with the epoch's
        training and validation metrics in `trainer.callback_metrics`; only the
        global-zero process reports, once per epoch however many devices train."""
        if getattr(trainer, "sanity_checking", False):
            return
        if not getattr(trainer, "is_global_zero", True):
            return
        metrics = metrics_of(dict(trainer.callback_metrics))
        metrics.pop(self.step_name, None)
        if metrics:
            report(**{self.step_name: trainer.current_epoch + 1}, **metrics)
