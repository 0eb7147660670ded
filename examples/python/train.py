"""Logistic regression by minibatch SGD, in pure Python, trained with the augur
package: parameters from augur.params(), one METRICS line an epoch (what ASHA
prunes on), the weights saved each epoch to augur.checkpoint_dir() and read back
by a later attempt, and a save on SIGTERM (pruning, a reclaim) before the end."""

import json
import math
import random

import augur

EPOCHS = 9


def data(n, seed):
    """Two interleaved half-moons with noise: not separable by a line."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.random() < 0.5
        t = rng.uniform(0, math.pi)
        x, y = (math.cos(t), math.sin(t)) if label else (1 - math.cos(t), 0.5 - math.sin(t))
        out.append(((x + rng.gauss(0, 0.15), y + rng.gauss(0, 0.15)), 1.0 if label else 0.0))
    return out


def features(point, kind):
    x, y = point
    base = [1.0, x, y]
    return base + [x * x, y * y, x * y] if kind == "quadratic" else base


def loss(w, rows, kind):
    total = 0.0
    for point, label in rows:
        z = sum(wi * fi for wi, fi in zip(w, features(point, kind)))
        p = 1 / (1 + math.exp(-max(-30.0, min(30.0, z))))
        total -= label * math.log(max(p, 1e-12)) + (1 - label) * math.log(max(1 - p, 1e-12))
    return total / len(rows)


def main():
    p = augur.params()
    lr, batch, l2, kind = p.get("lr", 0.1), p.get("batch", 32), p.get("l2", 1e-4), p.get("features", "linear")
    train, valid = data(600, 1), data(200, 2)
    ckpt = augur.checkpoint_dir()
    state = {"epoch": 0, "w": [0.0] * len(features((0, 0), kind))}
    if ckpt and (ckpt / "state.json").exists():
        state = json.loads((ckpt / "state.json").read_text())
        print("resuming after epoch %d" % state["epoch"], flush=True)

    def save():
        if ckpt:  # whole or not at all: a pruned trial may be stopped mid-write
            augur.save_atomically(ckpt / "state.json", lambda p: p.write_text(json.dumps(state)))

    augur.on_sigterm(save)
    rng = random.Random(state["epoch"])
    for epoch in range(state["epoch"] + 1, EPOCHS + 1):
        rng.shuffle(train)
        w = state["w"]
        for i in range(0, len(train), batch):
            grad = [0.0] * len(w)
            chunk = train[i:i + batch]
            for point, label in chunk:
                f = features(point, kind)
                z = sum(wi * fi for wi, fi in zip(w, f))
                err = 1 / (1 + math.exp(-max(-30.0, min(30.0, z)))) - label
                for k, fk in enumerate(f):
                    grad[k] += err * fk / len(chunk)
            w = [wi - lr * (gi + l2 * wi) for wi, gi in zip(w, grad)]
        state = {"epoch": epoch, "w": w}
        save()
        augur.report(epoch=epoch, val_loss=loss(w, valid, kind), train_loss=loss(w, train, kind))


if __name__ == "__main__":
    main()
