#!/usr/bin/env python
"""Q2 training speed: a replica of the handed-out loop against this project's, side by side.

Both train the Q2 networks from the same seed on the same images for the same steps:
  handed-out  DataLoader(shuffle=True) over a per-item Dataset, torch.optim.SGD, and after each
              epoch an evaluation of the whole validation split in one forward pass with
              autograd on (hw2-q2.py of the course), one run at a time;
  this repo   whole splits as tensors sliced by the same permutation, a backward pass
              written out with the SGD update fused into it (StackedCNN.sgd_step), evaluation
              under no_grad in large batches, and for the sweep the three learning rates side
              by side as one StackedCNN; `hw2-q2.py -sweep -jobs 2` also trains the two
              networks in two processes of one thread each.
It prints milliseconds per step and run and the speed-up of each way for both networks, and
how far the final weights and the per-step losses are from the handed-out loop's. Same
shuffling and dropout masks, so the updates agree up to float rounding of different kernels;
over many steps at a large learning rate SGD amplifies rounding, so the bench also prints, for
scale, how far the handed-out loop drifts from itself when only its convolution kernel changes.
Writes report/results/q2-bench.json.

    python bench/q2_bench.py [-train 4000] [-val 450] [-epochs 2]
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import octgen  # noqa: E402
from utils import Timer, configure_seed, write_results  # noqa: E402

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


def handed_out_run(lr: float, data: dict, epochs: int, seed: int, no_maxpool: bool = False):
    """The handed-out main loop (minus printing and plotting)."""
    configure_seed(seed)
    model = q2.CNN(0.7, no_maxpool=no_maxpool)
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


def repo_runs(lrs: list[float], data: dict, epochs: int, seed: int, no_maxpool: bool = False):
    """This project's loop, the learning rates side by side (one replica when len(lrs) == 1)."""
    configure_seed(seed)
    model = q2.StackedCNN([q2.CNN(0.7, no_maxpool=no_maxpool)] * len(lrs))
    optimizer = q2.StackedSGD(lrs)
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


VARIANTS = {"max-pool": False, "no max-pool": True}


def main() -> None:
    parser = argparse.ArgumentParser(description="Q2 loop speed: handed-out vs this repo")
    parser.add_argument("-train", type=int, default=4000,
                        help="training images (default: %(default)s)")
    parser.add_argument("-val", type=int, default=450,
                        help="validation images (default: %(default)s, OCTMNIST's 9:1 ratio)")
    parser.add_argument("-epochs", type=int, default=2)
    parser.add_argument("-seed", type=int, default=42)
    parser.add_argument("-worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = {"train": synthetic_split(args.train, 1), "dev": synthetic_split(args.val, 2)}
    if args.worker:  # one of the two processes of the -jobs 2 sweep: time its three runs
        torch.set_num_threads(1)
        print(timed(repo_runs, LEARNING_RATES, data, args.epochs, args.seed,
                    VARIANTS[args.worker])[1])
        return
    steps = args.epochs * ((args.train + 7) // 8)
    print(f"{args.train} training images, {args.val} validation images, {args.epochs} epochs "
          f"= {steps} steps of batch 8 per run; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    with Timer() as wall:
        results = {"steps_per_run": steps, "learning_rates": LEARNING_RATES}
        results.update(measure(data, args, steps))
    path = write_results("q2-bench", results, config=vars(args), seed=args.seed,
                         data=f"octgen.render synthetic images, {args.train} train / "
                              f"{args.val} validation", wall_time_s=wall.seconds)
    print(f"\nwrote {path}")


def timed(fn, *args):
    """fn(*args) and the seconds it took."""
    with Timer() as timer:
        result = fn(*args)
    return result, timer.seconds


def sweep_in_two_processes(args) -> float:
    """Seconds for both networks' three runs, in two 1-thread processes at once."""
    command = [sys.executable, __file__, "-train", str(args.train), "-val", str(args.val),
               "-epochs", str(args.epochs), "-seed", str(args.seed), "-worker"]
    workers = [subprocess.Popen(command + [variant], stdout=subprocess.PIPE, text=True)
               for variant in VARIANTS]
    return max(float(worker.communicate()[0].split()[-1]) for worker in workers)


@contextmanager
def onednn_off():
    """Convolutions with PyTorch's own kernels instead of oneDNN's, for the rounding reference."""
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = enabled


def drift(model: torch.nn.Module, losses: torch.Tensor, reference) -> dict:
    return {"max_weight_diff": max_weight_diff(model, reference[0]),
            "max_loss_diff": (losses - reference[1]).abs().max().item()}


def measure(data: dict, args: argparse.Namespace, steps: int) -> dict:
    """Time every way for both networks, print the tables, return the numbers."""
    small = {k: (x[:64], y[:64]) for k, (x, y) in data.items()}  # one-time setup costs
    handed_out_run(0.01, small, 1, args.seed)
    repo_runs(LEARNING_RATES, small, 1, args.seed)
    run = (data, args.epochs, args.seed)
    seconds, out = {}, {}
    for variant, no_maxpool in VARIANTS.items():
        handed = {lr: timed(handed_out_run, lr, *run, no_maxpool) for lr in LEARNING_RATES}
        (single, single_time) = timed(repo_runs, [0.01], *run, no_maxpool)
        (stacked, stacked_time) = timed(repo_runs, LEARNING_RATES, *run, no_maxpool)
        seconds[variant] = {"handed_out": np.mean([t for _, t in handed.values()]),
                            "one_run": single_time,
                            "side_by_side": stacked_time / len(LEARNING_RATES)}
        rounding = []
        for lr in LEARNING_RATES:
            with onednn_off():
                rounding.append(drift(*handed_out_run(lr, *run, no_maxpool), handed[lr][0]))
        out[variant] = {
            "agreement_one_run_lr_0_01": drift(single[0][0], single[1][0], handed[0.01][0]),
            "agreement_side_by_side": [drift(stacked[0][r], stacked[1][r], handed[lr][0])
                                       for r, lr in enumerate(LEARNING_RATES)],
            "rounding_alone": rounding}
    both = len(VARIANTS) * len(LEARNING_RATES)
    seconds["both"] = {k: np.mean([seconds[v][k] for v in VARIANTS]) for k in
                       ("handed_out", "one_run", "side_by_side")}
    seconds["both"]["two_processes"] = sweep_in_two_processes(args) / both

    print(f"\nms per step and run (speed-up over the handed-out loop), {steps} steps per run")
    rows = {"handed_out": "handed-out replica (mean of 3 runs)",
            "one_run": "this repo, one run",
            "side_by_side": f"this repo, {len(LEARNING_RATES)} runs side by side",
            "two_processes": f"this repo, sweep -jobs 2 ({both} runs, 2 processes)"}
    print(f"{'':46s}" + "".join(f"{v:>20s}" for v in seconds))
    for key, label in rows.items():
        cells = [f"{seconds[v][key] / steps * 1e3:7.2f} ({seconds[v]['handed_out'] / seconds[v][key]:5.2f}x)"
                 if key in seconds[v] else "" for v in seconds]
        print(f"{label:46s}" + "".join(f"{c:>20s}" for c in cells))

    print("\nagreement with the handed-out loop (same shuffling and dropout masks): "
          "max |weight diff|, max |loss diff|")
    for variant, d in out.items():
        print(f"  {variant}")
        lines = [("one run, lr 0.01", d["agreement_one_run_lr_0_01"])]
        lines += [(f"side by side, lr {lr}", x)
                  for lr, x in zip(LEARNING_RATES, d["agreement_side_by_side"])]
        lines += [(f"rounding alone, lr {lr}", x)
                  for lr, x in zip(LEARNING_RATES, d["rounding_alone"])]
        for label, x in lines:
            print(f"    {label:26s} {x['max_weight_diff']:.2e}  {x['max_loss_diff']:.2e}")
    print("  (rounding alone: the handed-out loop against itself with only its convolution "
          "kernel changed, oneDNN off)")
    return {"ms_per_step": {v: {k: t / steps * 1e3 for k, t in d.items()}
                            for v, d in seconds.items()},
            "speed_up": {v: {k: d["handed_out"] / t for k, t in d.items()}
                         for v, d in seconds.items()},
            "agreement": out}


if __name__ == "__main__":
    main()
