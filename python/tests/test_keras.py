"""augur.keras.Report in a real Keras 3 training run (keras and jax's CPU build
from PyPI), checkpoints included: a second "attempt" goes on from the saved epoch."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import augur.keras  # noqa: E402


def test_each_epoch_reports_its_logs_and_saves(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("AUGUR_CHECKPOINT_DIR", str(tmp_path))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(128, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5], dtype="float32"))[:, None]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, y, epochs=3, validation_split=0.25, verbose=0,
              callbacks=[augur.keras.Report(checkpoint=True)])
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("METRICS:")]
    assert len(lines) == 3
    assert lines[0].startswith("METRICS: epoch=1, ") and "val_loss=" in lines[0]
    restored, epoch = augur.keras.Report.restore()
    assert epoch == 3
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)
