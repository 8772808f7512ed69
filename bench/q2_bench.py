#!/usr/bin/env python
"""Q2 training speed: a replica of the handed-out loop against this project's, side by side.

Both train the Q2.1 network from the same seed on the same images for the same steps:
  handed-out  DataLoader(shuffle=True) over a per-item Dataset, torch.optim.SGD, and after each
              epoch an evaluation of the whole validation split in one forward pass with
              autograd on (hw2-q2.py of the course);
  this repo   whole splits as tensors sliced by the same permutation, evaluation under no_grad
              in large batches, and (for the sweep) the learning rates trained side by side as
              one StackedCNN.
It prints seconds per run, the speed ratio, and how far the final weights and the per-step
losses are from the handed-out loop's (same shuffling and dropout masks, so they agree up to
float rounding of different kernels).

    python bench/q2_bench.py [-train 4000] [-val 4000] [-epochs 2]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import octgen  # noqa: E402
from utils import configure_seed  # noqa: E402

spec = importlib.util.spec_from_file_location("hw2_q2", REPO / "hw2-q2.py")
q2 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(q2)

LEARNING_RATES = [0.1, 0.01, 0.001]


class HandedOutDataset(Dataset):
    """The handed-out ClassificationDataset: one (x, y) pair per __getitem__."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.X, self.y = x, y

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, idx):
        return self.X[idx], self.y[idx]


def handed_out_run(lr: float, data: dict, epochs: int, seed: int):
    """The handed-out main loop (minus printing and plotting)."""
    configure_seed(seed)
    model = q2.CNN(0.7)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=0)
    loader = DataLoader(HandedOutDataset(*data["train"]), batch_size=8, shuffle=True)
    losses = []
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = F.nll_loss(model(xb), yb)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()  # evaluate(): the whole split at once, autograd on
        (model(data["dev"][0]).argmax(-1) == data["dev"][1]).float().mean().item()
        model.train()
    return model, torch.tensor(losses)


def repo_runs(lrs: list[float], data: dict, epochs: int, seed: int):
    """This project's loop, the learning rates side by side (one replica when len(lrs) == 1)."""
    configure_seed(seed)
    model = q2.StackedCNN([q2.CNN(0.7)] * len(lrs))
    optimizer = q2.StackedSGD(model.parameters(), lrs)
    losses = []
    for _ in range(epochs):
        losses.append(q2.train_epoch(model, *data["train"], optimizer, 8, progress=False))
        for r in range(len(lrs)):
            q2.evaluate(model.replica(r), *data["dev"])
    return [model.replica(r) for r in range(len(lrs))], torch.cat(losses, dim=1)


def max_weight_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))


def synthetic_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = np.random.default_rng(seed).integers(0, 4, n).astype(np.uint8)
    images = octgen.render(labels, np.random.default_rng(seed + 1))
    return (torch.tensor(images.reshape(n, -1) / 256, dtype=torch.float32),
            torch.tensor(labels, dtype=torch.long))


def main() -> None:
    parser = argparse.ArgumentParser(description="Q2 loop speed: handed-out vs this repo")
    parser.add_argument("-train", type=int, default=4000, help="training images")
    parser.add_argument("-val", type=int, default=4000, help="validation images")
    parser.add_argument("-epochs", type=int, default=2)
    parser.add_argument("-seed", type=int, default=42)
    args = parser.parse_args()
    data = {"train": synthetic_split(args.train, 1), "dev": synthetic_split(args.val, 2)}
    steps = args.epochs * ((args.train + 7) // 8)
    print(f"{args.train} training images, {args.val} validation images, {args.epochs} epochs "
          f"= {steps} steps of batch 8 per run; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    handed, handed_time = {}, {}
    for lr in LEARNING_RATES:
        start = time.perf_counter()
        handed[lr] = handed_out_run(lr, data, args.epochs, args.seed)
        handed_time[lr] = time.perf_counter() - start
    start = time.perf_counter()
    (single,), single_losses = repo_runs([0.01], data, args.epochs, args.seed)
    single_time = time.perf_counter() - start
    start = time.perf_counter()
    stacked, stacked_losses = repo_runs(LEARNING_RATES, data, args.epochs, args.seed)
    stacked_time = time.perf_counter() - start

    h_model, h_losses = handed[0.01]
    print(f"\n{'loop':44s} {'s / run':>8s} {'ms / step':>10s} {'speed-up':>9s}")
    base = np.mean(list(handed_time.values()))
    for label, seconds in [("handed-out replica (mean of 3 runs)", base),
                           ("this repo, one run", single_time),
                           (f"this repo, {len(LEARNING_RATES)} runs side by side (per run)",
                            stacked_time / len(LEARNING_RATES))]:
        print(f"{label:44s} {seconds:8.2f} {seconds / steps * 1e3:10.2f} {base / seconds:8.2f}x")
    print("\nagreement with the handed-out loop (same shuffling, same dropout masks):")
    print(f"  one run, lr 0.01: max |weight diff| {max_weight_diff(single, h_model):.2e}, "
          f"max |loss diff| over {steps} steps {(single_losses[0] - h_losses).abs().max():.2e}")
    for r, lr in enumerate(LEARNING_RATES):
        model, losses = handed[lr]
        print(f"  side by side, lr {lr}: max |weight diff| {max_weight_diff(stacked[r], model):.2e}"
              f", max |loss diff| {(stacked_losses[r] - losses).abs().max():.2e}")


if __name__ == "__main__":
    main()
