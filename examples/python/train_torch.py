"""The model of train.py as a small PyTorch network on a GPU: what the GPU variant
of this example (gpu.toml) runs on EC2. Each trial sees only the GPUs augur gave
it (CUDA_VISIBLE_DEVICES), so `cuda` is its own GPU whatever else runs on the
instance; parameters, METRICS lines, checkpoints and the save on SIGTERM go
through the augur package as in train.py."""

import augur
import torch

from train import EPOCHS, data


def tensors(rows, device):
    x = torch.tensor([p for p, _ in rows], dtype=torch.float32, device=device)
    y = torch.tensor([[label] for _, label in rows], dtype=torch.float32, device=device)
    return x, y


def main():
    p = augur.params()
    lr, batch, l2, width = p.get("lr", 0.01), p.get("batch", 32), p.get("l2", 1e-4), p.get("width", 32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print("training on %s (CUDA_VISIBLE_DEVICES=%s)" % (device, augur.trial.gpus), flush=True)
    (x, y), (vx, vy) = tensors(data(600, 1), device), tensors(data(200, 2), device)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, width), torch.nn.ReLU(), torch.nn.Linear(width, 1)
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=l2)
    lossf = torch.nn.BCEWithLogitsLoss()
    ckpt, epoch0 = augur.checkpoint_dir(), 0
    if ckpt and (ckpt / "model.pt").exists():
        state = torch.load(ckpt / "model.pt", map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        epoch0 = state["epoch"]
        print("resuming after epoch %d" % epoch0, flush=True)
    done = {"epoch": epoch0}

    def save():
        if ckpt:
            state = {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": done["epoch"]}
            augur.save_atomically(ckpt / "model.pt", lambda path: torch.save(state, path))

    augur.on_sigterm(save)
    for epoch in range(epoch0 + 1, EPOCHS + 1):
        model.train()
        for i in torch.randperm(len(x), device=device).split(batch):
            opt.zero_grad()
            lossf(model(x[i]), y[i]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val, train_loss = lossf(model(vx), vy).item(), lossf(model(x), y).item()
        done["epoch"] = epoch
        save()
        augur.report(epoch=epoch, val_loss=val, train_loss=train_loss)


if __name__ == "__main__":
    main()
