"""The callbacks for frameworks CI does not install, against their documented
interfaces: PyTorch Lightning's `Callback.on_train_epoch_end(trainer, pl_module)`
with `trainer.callback_metrics`, `trainer.current_epoch` and `trainer.is_global_zero`, and
Transformers' `TrainerCallback.on_log(args, state, control, logs=None, **kwargs)`
with `state.global_step` and `state.is_world_process_zero`. Both need PyTorch, whose PyPI wheels bring gigabytes of
CUDA libraries: beyond CI's budget on a CPU machine."""

from types import SimpleNamespace

import augur.lightning
import augur.transformers


class Tensor:  # a 0-d tensor converts with float()
    def __init__(self, v):
        self.v = v

    def __float__(self):
        return self.v


def test_lightning_reports_each_epoch_once_from_the_global_zero_process(capsys):
    cb = augur.lightning.Report()
    trainer = SimpleNamespace(sanity_checking=True, current_epoch=0, is_global_zero=True,
                              callback_metrics={"val_loss": Tensor(0.9)})
    cb.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out == "", "the sanity check is not an epoch"
    trainer.sanity_checking = False
    trainer.callback_metrics = {"val_loss": Tensor(0.5), "train_loss": Tensor(0.4), "note": "x",
                                "val/acc@1": Tensor(0.75)}
    cb.on_train_epoch_end(trainer, None)
    other = SimpleNamespace(**{**vars(trainer), "is_global_zero": False})
    cb.on_train_epoch_end(other, None)
    assert capsys.readouterr().out == "METRICS: epoch=1, val_loss=0.5, train_loss=0.4, val/acc_1=0.75\n"


def test_transformers_reports_each_log_at_its_global_step(capsys):
    cb = augur.transformers.Report()
    control = SimpleNamespace(should_training_stop=False)
    state = SimpleNamespace(global_step=500, is_world_process_zero=True)
    out = cb.on_log(None, state, control, logs={"loss": 0.41, "learning_rate": 5e-5, "epoch": 0.5})
    assert out is control
    cb.on_log(None, state, control, logs={"train_runtime": 12.5, "note": "done", "grad_norm": float("inf")})
    cb.on_log(None, SimpleNamespace(global_step=500, is_world_process_zero=False), control, logs={"loss": 1.0})
    assert capsys.readouterr().out == (
        "METRICS: step=500, loss=0.41, learning_rate=5e-05, epoch=0.5\n"
        "METRICS: step=500, train_runtime=12.5\n"
    )
