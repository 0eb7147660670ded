"""Keras 3: `model.fit(..., callbacks=[augur.keras.Report()])` reports each epoch's
logs, `METRICS: epoch=1, loss=0.41, val_loss=0.45, ...`, through Keras's documented
`keras.callbacks.Callback.on_epoch_end(epoch, logs)`; with `checkpoint=True` it
also saves the model to `augur.checkpoint_dir()` each epoch (`model.keras`), for
`Report.restore` to load in a later attempt."""

import os

import keras

from . import checkpoint_dir, metrics_of, report, save_atomically


class Report(keras.callbacks.Callback):
    def __init__(self, step_name="epoch", checkpoint=False):
        super().__init__()
        self.step_name = step_name
        self.checkpoint = checkpoint

    def on_epoch_end(self, epoch, logs=None):
        numbers = metrics_of(logs or {})
        numbers.pop(self.step_name, None)
        report(**{self.step_name: epoch + 1}, **numbers)
        d = checkpoint_dir() if self.checkpoint else None
        if d is not None:
            # Keras names its format by the suffix: the file aside ends in .keras.
            tmp = d / (".model-%d.keras" % os.getpid())
            self.model.save(tmp)
            os.replace(tmp, d / "model.keras")
            save_atomically(d / "epoch", lambda p: p.write_text(str(epoch + 1)))

    @staticmethod
    def restore():
        """The model and the epoch to go on from, as a previous attempt saved them,
        or `(None, 0)`."""
        d = checkpoint_dir()
        if d is None or not (d / "model.keras").exists() or not (d / "epoch").exists():
            return None, 0
        return keras.models.load_model(d / "model.keras"), int((d / "epoch").read_text())

