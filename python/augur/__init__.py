"""The script side of augur, in pure Python with no dependencies.

A trial's script reads its parameters, reports its metrics, keeps its checkpoints
and hears of a spot reclaim through environment variables, printed lines and files
(the script contract in augur's README); this package does each in one call:

    import augur

    p = augur.params()                      # {"lr": 0.01, "layers": 3, "act": "relu"}
    for epoch in range(1, 11):
        loss = train_one_epoch(p)
        augur.report(epoch=epoch, loss=loss)   # METRICS: epoch=1, loss=0.52

    augur.checkpoint_dir()                  # kept across the trial's attempts
    augur.preempted()                       # a spot reclaim notice came
    augur.on_sigterm(save)                  # save, then end, when the machine is going
    augur.trial.id, augur.trial.attempt     # facts of the attempt

Callbacks for frameworks are in `augur.xgboost`, `augur.lightgbm`, `augur.keras`,
`augur.lightning` and `augur.transformers` (each imports its framework only when
used).
"""

import json
import math
import os
import re
import signal
import sys
from pathlib import Path

__all__ = [
    "params",
    "report",
    "checkpoint_dir",
    "preempted",
    "reclaim_time",
    "on_sigterm",
    "trial",
    "Trial",
    "ReportError",
    "metrics_of",
    "save_atomically",
]

__version__ = "0.1.0"

# The names a METRICS line takes (augur's own rule: model/src/metrics.rs).
_NAME = re.compile(r"^[A-Za-z0-9_.\-/:]+$")

# The file a spot reclaim notice is written to, in the attempt's working directory.
PREEMPTED_FILE = "augur-preempted.env"


def metrics_of(values):
    """What a framework logged, as `report` takes it: names made ones augur reads
    (each other character becomes `_`: `ndcg@10` → `ndcg_10`), and values that are
    not finite numbers left out (a NaN loss, an inf gradient norm), so a callback
    never stops training over a metric. `report` itself refuses both."""
    out = {}
    for name, value in values.items():
        if isinstance(value, bool):
            continue
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            continue
        if math.isfinite(v):
            out[re.sub(r"[^A-Za-z0-9_.\-/:]", "_", str(name)) or "_"] = v
    return out


def save_atomically(path, write):
    """Calls `write(tmp)` for a file beside `path`, then renames it over `path`: a
    process killed meanwhile (pruned, reclaimed) leaves the last whole file, never
    half of one. Returns `path`."""
    path = Path(path)
    tmp = path.with_name(".%s.tmp-%d" % (path.name, os.getpid()))
    write(tmp)
    os.replace(tmp, path)
    return path


class ReportError(ValueError):
    """A metric augur could not read: a bad name or a value that is not a finite
    number. Raised before anything is printed, so no half line reaches the log."""


def params():
    """The trial's parameter values, typed: floats, integers and strings as the
    study file gives them (`AUGUR_PARAMS_JSON`). Empty outside a trial."""
    text = os.environ.get("AUGUR_PARAMS_JSON")
    if text:
        return json.loads(text)
    return {}


def _number(name, value):
    if isinstance(value, bool):
        raise ReportError("metric `%s` is %r, not a number" % (name, value))
    if not isinstance(value, (int, float)):
        # numpy scalars and 0-d tensors convert; anything else is refused.
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ReportError(
                "metric `%s` is %r, not a number" % (name, value)
            ) from None
    try:
        value = float(value)
    except OverflowError:
        raise ReportError("metric `%s` is too large for a float" % name) from None
    if not math.isfinite(value):
        raise ReportError("metric `%s` is not finite (%r)" % (name, value))
    return value


def _format(value):
    text = repr(value)
    return text[:-2] if text.endswith(".0") and "e" not in text else text


def report(step=None, **metrics):
    """Prints one `METRICS:` line: `report(step=3, loss=0.5)` prints
    `METRICS: step=3, loss=0.5`. Names are checked as augur reads them (letters,
    digits and `_ . - / :`), values must be finite numbers; a bad one raises
    `ReportError` and prints nothing. Metrics whose names are not Python
    identifiers go in a dict: `report(**{"val/loss": 0.3})`."""
    pairs = []
    if step is not None:
        pairs.append(("step", _number("step", step)))
    for name, value in metrics.items():
        if not _NAME.fullmatch(name):
            raise ReportError(
                "metric name `%s` is not one augur reads (letters, digits and _ . - / :)"
                % name
            )
        pairs.append((name, _number(name, value)))
    if not pairs:
        raise ReportError("report() needs at least one metric")
    out = sys.stdout
    out.write("METRICS: " + ", ".join("%s=%s" % (n, _format(v)) for n, v in pairs) + "\n")
    out.flush()


def checkpoint_dir():
    """The directory kept across the trial's attempts (`AUGUR_CHECKPOINT_DIR`):
    save there, and a later attempt finds what was saved. Created if missing;
    `None` outside a trial."""
    d = os.environ.get("AUGUR_CHECKPOINT_DIR")
    if not d:
        return None
    p = Path(d)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _notice():
    here = Path(os.environ.get("AUGUR_WORKDIR") or ".")
    try:
        text = (here / PREEMPTED_FILE).read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip():
            out[key.strip()] = value.strip()
    return out


def preempted():
    """Whether the machine is being taken away (a spot reclaim notice): the agent
    writes it to the working directory before it sends SIGTERM."""
    return _notice().get("AUGUR_PREEMPTED") == "1"


def reclaim_time():
    """When the machine goes (RFC 3339), if a reclaim notice came; else `None`."""
    return _notice().get("AUGUR_RECLAIM_TIME")


def on_sigterm(save, exit_code=143):
    """Calls `save()` when the script is told to end (SIGTERM: a reclaim, a
    timeout, pruning, `augur stop`), then ends it with `exit_code` (128 + 15, as a
    shell reports a SIGTERM). augur waits the study's `run.grace` before SIGKILL:
    `save` must fit in it. Returns the previous handler."""

    def handler(signum, frame):
        try:
            save()
        finally:
            sys.stdout.flush()
            os._exit(exit_code)

    return signal.signal(signal.SIGTERM, handler)


class Trial:
    """Facts of the running attempt, from its environment."""

    @property
    def study(self):
        return os.environ.get("AUGUR_STUDY")

    @property
    def id(self):
        return _int("AUGUR_TRIAL")

    @property
    def attempt(self):
        return _int("AUGUR_ATTEMPT")

    @property
    def replicate(self):
        return _int("AUGUR_REPLICATE")

    @property
    def workdir(self):
        d = os.environ.get("AUGUR_WORKDIR")
        return Path(d) if d else None

    @property
    def gpus(self):
        """The GPUs the trial has to itself (`run.gpus`), as CUDA numbers them."""
        v = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return [g for g in v.split(",") if g]

    @property
    def in_trial(self):
        """Whether this process runs as an augur trial."""
        return "AUGUR_TRIAL" in os.environ

    def __repr__(self):
        return "Trial(study=%r, id=%r, attempt=%r)" % (self.study, self.id, self.attempt)


def _int(name):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else None


trial = Trial()
