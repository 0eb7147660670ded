"""The package's core against augur's own contract: the lines it prints are the
ones augur's parser reads (the same rules), parameters keep their types, the
checkpoint directory and the reclaim notice are where the agent puts them, and a
SIGTERM runs the save before the process ends."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import augur


def test_report_prints_one_metrics_line(capsys):
    augur.report(step=3, loss=0.5, acc=1.0, **{"val/loss": 1e-7})
    assert capsys.readouterr().out == "METRICS: step=3, loss=0.5, acc=1, val/loss=1e-07\n"


@pytest.mark.parametrize(
    "bad, why",
    [
        ({"loss": float("nan")}, "not finite"),
        ({"loss": float("inf")}, "not finite"),
        ({"loss": "low"}, "not a number"),
        ({"loss": True}, "not a number"),
        ({"bad name": 1.0}, "is not one augur reads"),
        ({"a=b": 1.0}, "is not one augur reads"),
        ({}, "at least one metric"),
        ({"loss\n": 1.0}, "is not one augur reads"),
        ({"loss": 10**400}, "too large"),
    ],
)
def test_a_bad_metric_raises_and_prints_nothing(capsys, bad, why):
    with pytest.raises(augur.ReportError, match=why):
        augur.report(**bad)
    assert capsys.readouterr().out == ""


def test_numbers_that_convert_are_taken(capsys):
    class Scalar:  # as numpy scalars and 0-d tensors are
        def __float__(self):
            return 0.25

    augur.report(loss=Scalar(), n=7)
    assert capsys.readouterr().out == "METRICS: loss=0.25, n=7\n"


def test_params_keep_their_types(monkeypatch):
    monkeypatch.setenv("AUGUR_PARAMS_JSON", '{"act":"relu","layers":3,"lr":0.001}')
    p = augur.params()
    assert p == {"act": "relu", "layers": 3, "lr": 0.001}
    assert isinstance(p["layers"], int) and isinstance(p["lr"], float)
    monkeypatch.delenv("AUGUR_PARAMS_JSON")
    assert augur.params() == {}


def test_trial_facts_and_checkpoints(monkeypatch, tmp_path):
    monkeypatch.delenv("AUGUR_CHECKPOINT_DIR", raising=False)
    assert augur.checkpoint_dir() is None
    monkeypatch.setenv("AUGUR_STUDY", "s")
    monkeypatch.setenv("AUGUR_TRIAL", "12")
    monkeypatch.setenv("AUGUR_ATTEMPT", "2")
    monkeypatch.setenv("AUGUR_REPLICATE", "0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setenv("AUGUR_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    t = augur.trial
    assert (t.study, t.id, t.attempt, t.replicate, t.gpus) == ("s", 12, 2, 0, ["2", "3"])
    assert t.in_trial
    d = augur.checkpoint_dir()
    assert d == tmp_path / "ckpt" and d.is_dir()


def test_the_reclaim_notice(monkeypatch, tmp_path):
    monkeypatch.setenv("AUGUR_WORKDIR", str(tmp_path))
    assert not augur.preempted() and augur.reclaim_time() is None
    (tmp_path / augur.PREEMPTED_FILE).write_text(
        "AUGUR_PREEMPTED=1\nAUGUR_RECLAIM_TIME=2026-12-07T10:00:00Z\n"
    )
    assert augur.preempted()
    assert augur.reclaim_time() == "2026-12-07T10:00:00Z"


def test_sigterm_saves_then_ends(tmp_path):
    saved = tmp_path / "saved"
    script = textwrap.dedent(
        """
        import os, sys, time, augur
        augur.on_sigterm(lambda: open(sys.argv[1], "w").write("saved"))
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen(
        [sys.executable, "-c", script, str(saved)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 143
    assert saved.read_text() == "saved"


def test_what_frameworks_log_is_made_reportable(capsys):
    m = augur.metrics_of({"ndcg@10": 0.5, "valid 0-l2": 0.25, "loss": float("nan"),
                          "grad_norm": float("inf"), "lr": "1e-3", "flag": True, "note": "x"})
    assert m == {"ndcg_10": 0.5, "valid_0-l2": 0.25, "lr": 0.001}
    augur.report(**m)
    assert capsys.readouterr().out == "METRICS: ndcg_10=0.5, valid_0-l2=0.25, lr=0.001\n"


def test_a_file_saved_atomically_is_whole_or_the_last_one(tmp_path):
    target = tmp_path / "state.json"
    augur.save_atomically(target, lambda p: p.write_text("one"))

    def dies(p):
        p.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        augur.save_atomically(target, dies)
    assert target.read_text() == "one"
