"""A training-like script that resumes from its checkpoint.

Each epoch improves the loss a little; after each one the state is saved (atomically)
to $AUGUR_CHECKPOINT_DIR, and saved once more on SIGTERM (augur's stop, a timeout, or
a spot reclaim notice on AWS). An attempt that starts with a checkpoint there goes on
from it instead of from epoch 0. Attempt 1 of every other trial dies half-way (as a
lost machine would) to show it.
"""
import json
import math
import os
import signal
import sys
import time

lr = float(os.environ["AUGUR_PARAM_LR"])
width = int(os.environ["AUGUR_PARAM_WIDTH"])
epochs = 12
ckpt = os.path.join(os.environ["AUGUR_CHECKPOINT_DIR"], "state.json")


def save(state):
    tmp = ckpt + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, ckpt)


state = {"epoch": 0, "loss": 2.0}
if os.path.exists(ckpt):
    with open(ckpt) as f:
        state = json.load(f)
    print(f"resuming from epoch {state['epoch']} (loss {state['loss']:.4f})")


def on_term(signum, frame):
    save(state)
    print(f"stopped at epoch {state['epoch']}: checkpoint saved", flush=True)
    sys.exit(143)


signal.signal(signal.SIGTERM, on_term)

attempt = int(os.environ["AUGUR_ATTEMPT"])
trial = int(os.environ["AUGUR_TRIAL"])
target = 0.05 + abs(math.log10(lr) + 2.5) * 0.2 + 8.0 / width
while state["epoch"] < epochs:
    time.sleep(0.1)
    state["epoch"] += 1
    state["loss"] = target + (state["loss"] - target) * 0.7
    save(state)
    print(f"METRICS: step={state['epoch']}, loss={state['loss']:.5f}", flush=True)
    if attempt == 1 and trial % 2 == 0 and state["epoch"] == epochs // 2:
        print("simulating a lost machine half-way", flush=True)
        os.kill(os.getppid(), signal.SIGKILL)  # the agent
        time.sleep(300)
