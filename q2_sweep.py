"""Question 2's sweep, made fast: the learning rates of one network trained side by side, and
the two networks in parallel processes (hw2-q2.py -sweep -jobs 2).

At batch 8 every kernel of the CNN is tiny, so a step costs mostly Python, dispatch and
autograd overhead. `SideBySideCNN` holds R copies of the CNN as one grouped network (conv1
with R x 8 output channels, conv2 as a grouped convolution, the linear layers as batched
matrix products), so R runs pay that overhead once per step. It trains with autograd and
`torch.optim.SGD`, and makes the handed-out loop's updates for each run:

- the same initial weights: every copy is the CNN built right after seeding;
- the same batches: a `DataLoader(shuffle=True)` over the indices draws its permutation from
  the global RNG exactly as the handed-out `DataLoader` over the images does (it is the same
  class, making the same draws);
- the same dropout mask for every copy, the one a single CNN draws: `F.dropout` on a
  (batch, 320) tensor, the call `nn.Dropout` makes, so the RNG stream is a single run's;
- the same update: SGD with learning rate 1 on sum_r lr_r (L_r + l2/2 |theta_r|^2) moves
  copy r by lr_r (dL_r/dtheta_r + l2 theta_r), the step `torch.optim.SGD(lr=lr_r,
  weight_decay=l2)` makes, because the copies share no parameter.

The results equal separate runs of the handed-out loop up to float rounding (tests/test_q2.py).
Alternatives measured on one thread of the 2-core CPU (issue 16): `torch.func.vmap` over
`functional_call` with `grad` and `randomness="same"` took about 1.5x the handed-out loop's
time per run (its batching costs more than it saves at batch 8); the grouped network under
`torch.compile` (30-40 s of compiling) was 1.4x the handed-out loop's speed per run against
1.5x without (`python bench/q2_bench.py -threads 1 -compile`).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from q2_runs import (Checkpoint, History, config_name, finished_run_path, load_finished_run, run_identity,
                     save_finished_run)
from utils import Outputs, Timer, fail, plot_lines


def stacked_layout(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A CNN parameter as SideBySideCNN keeps one copy of it, and back: linear weights
    transposed to (in, out), so that the batched products read contiguous memory."""
    return tensor.t() if name.startswith("fc") and name.endswith("weight") else tensor


class SideBySideCNN(nn.Module):
    """R copies of hw2-q2.py's CNN as one network: forward maps (B, 784) images to the
    log-probabilities of every copy, (R, B, 4)."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        first = models[0]
        self.n_copies, self.no_maxpool, self.dropout_prob = len(models), first.no_maxpool, \
            first.drop.p
        self.stride = first.conv1.stride[0]
        for name, _ in first.named_parameters():  # conv1.weight -> conv1_weight, (R, ...)
            stacked = torch.stack([stacked_layout(name, dict(m.named_parameters())[name].detach())
                                   for m in models])
            self.register_parameter(name.replace(".", "_"), nn.Parameter(stacked.contiguous()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, b, size = self.n_copies, x.shape[0], 28 // self.stride
        # conv1 (one input channel) as one matrix product over the 3x3 patches; its output
        # comes out channels-last, which PyTorch's CPU max-pooling reads several times faster
        h = torch.addmm(self.conv1_bias.view(-1), conv1_patches(x, self.stride),
                        self.conv1_weight.view(r * 8, 9).t())
        h = self.pool_relu(h.view(b, size, size, r * 8).permute(0, 3, 1, 2))
        h = F.conv2d(h, self.conv2_weight.flatten(0, 1), self.conv2_bias.flatten(),
                     stride=self.stride, groups=r)
        h = self.pool_relu(h).reshape(b, r, 16 * 6 * 6).transpose(0, 1)  # each CNN's flatten
        h = F.relu(torch.baddbmm(self.fc1_bias[:, None], h, self.fc1_weight))
        # one mask for all copies, drawn by the very call CNN's nn.Dropout makes
        h = h * F.dropout(h.new_ones(h.shape[1:]), self.dropout_prob, self.training)
        h = F.relu(torch.baddbmm(self.fc2_bias[:, None], h, self.fc2_weight))
        return F.log_softmax(torch.baddbmm(self.fc3_bias[:, None], h, self.fc3_weight), dim=-1)

    def pool_relu(self, z: torch.Tensor) -> torch.Tensor:
        """CNN's ReLU then 2x2 max-pooling, computed as pooling then ReLU: the same values and
        gradients (ReLU is monotone), with the ReLU on a quarter of the elements."""
        return F.relu(z if self.no_maxpool else F.max_pool2d(z, kernel_size=2))

    def squared_norms(self) -> torch.Tensor:
        """|theta_r|^2 of every copy, (R,)."""
        return sum(p.square().flatten(1).sum(dim=1) for p in self.parameters())

    def copy_state_dict(self, r: int) -> dict[str, torch.Tensor]:
        """Copy r's weights as a CNN state dict."""
        return {name.replace("_", ".", 1): stacked_layout(name, p[r].detach()).clone()
                for name, p in self.named_parameters()}


def conv1_patches(x: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, 784) images -> (B*H*W, 9): the 3x3 patches conv1 (padding 1) sees."""
    b, size = x.shape[0], 28 // stride
    padded = F.pad(x.view(b, 28, 28), (1, 1, 1, 1))
    return padded.as_strided((b, size, size, 3, 3), (900, 30 * stride, stride, 30, 1)) \
        .reshape(-1, 9)


def train_batch(X: torch.Tensor, y: torch.Tensor, model: SideBySideCNN,
                optimizer: torch.optim.SGD, learning_rates: torch.Tensor,
                l2_decay: float = 0.0) -> torch.Tensor:
    """One SGD step of every copy on the batch (`optimizer` has learning rate 1, see the
    module's docstring); returns each copy's mean NLL loss, (R,)."""
    optimizer.zero_grad()
    log_probs = model(X)
    losses = F.nll_loss(log_probs.flatten(0, 1), y.repeat(model.n_copies),
                        reduction="none").view(model.n_copies, -1).mean(dim=1)
    objective = losses + l2_decay / 2 * model.squared_norms() if l2_decay else losses
    (learning_rates * objective).sum().backward()
    optimizer.step()
    return losses.detach()


def train_epoch(model: SideBySideCNN, optimizer: torch.optim.SGD, X: torch.Tensor,
                y: torch.Tensor, learning_rates: torch.Tensor, l2_decay: float,
                batch_size: int) -> torch.Tensor:
    """One epoch in the handed-out loop's batch order; every batch loss, (R, batches)."""
    model.train()
    batches = DataLoader(range(len(X)), batch_size=batch_size, shuffle=True)
    return torch.stack([train_batch(X[i], y[i], model, optimizer, learning_rates, l2_decay)
                        for i in batches], dim=1)


def train_side_by_side(learning_rates: list[float], model: nn.Module, args: argparse.Namespace,
                       splits: dict, checkpoint: Checkpoint,
                       evaluate: Callable[[nn.Module, torch.Tensor, torch.Tensor], float]
                       ) -> tuple[History, list[dict[str, torch.Tensor]]]:
    """hw2-q2.py's loop for several learning rates at once, starting from `model`'s weights
    (SGD only); validation runs through `model` loaded with each copy's weights. Returns the
    history and each copy's final weights."""
    copies = SideBySideCNN([model] * len(learning_rates))
    optimizer = torch.optim.SGD(copies.parameters(), lr=1.0)  # the rates weight the losses
    rates = torch.tensor(learning_rates, device=args.device)
    names = [config_name(lr, args, model.no_maxpool) for lr in learning_rates]
    history = checkpoint.resume(copies, optimizer)
    for _ in range(history.epoch, args.epochs):
        with Timer() as timer:
            losses = train_epoch(copies, optimizer, *splits["train"], rates, args.l2_decay,
                                 args.batch_size)
            accuracies = []
            for r in range(len(learning_rates)):
                model.load_state_dict(copies.copy_state_dict(r))
                accuracies.append(evaluate(model, *splits["dev"]))
        history.record(losses, accuracies, timer.seconds, names)
        checkpoint.save(history, copies, optimizer)
    return history, [copies.copy_state_dict(r) for r in range(len(learning_rates))]


TrainRuns = Callable[[list[float], bool], list[dict]]  # (learning rates, no_maxpool) -> runs


def sweep_groups(args: argparse.Namespace) -> list[tuple[list[float], bool]]:
    """The sweep's trainings: per network, its learning rates side by side (SGD) or one by
    one (Adam, whose update does not separate by learning rate)."""
    rates = [args.learning_rates] if args.optimizer == "sgd" else \
        [[lr] for lr in args.learning_rates]
    return [(group, no_maxpool) for no_maxpool in (False, True) for group in rates]


def group_runs(learning_rates: list[float], no_maxpool: bool, args: argparse.Namespace,
               data_info: dict, train: TrainRuns) -> list[dict]:
    """A sweep group's runs: with -resume, reused from their finished-run files when all are
    there with the same identity; else trained, and their files written."""
    identity = run_identity(learning_rates, no_maxpool, args, data_info)
    paths = [finished_run_path(lr, no_maxpool, args) for lr in learning_rates]
    if args.resume and all(p.exists() for p in paths):
        print("resuming: reusing " + ", ".join(str(p) for p in paths))
        return [load_finished_run(p, identity) for p in paths]
    runs = train(learning_rates, no_maxpool)
    for path, run in zip(paths, runs):
        save_finished_run(path, run, identity)
    return runs


def sweep(args: argparse.Namespace, data_info: dict, train: TrainRuns, out: Outputs,
          script: str) -> dict:
    """Both networks x the learning rates (with -jobs N, the groups trained by N processes
    running `script` first); the best rate chosen on validation."""
    if args.jobs > 1:
        command = [sys.executable, str(Path(script).resolve()), *args.argv, "-no_progress",
                   "-threads", str(args.threads or 1)]
        train_in_processes(command, len(sweep_groups(args)), args.jobs)
        args.resume = True  # every group is finished now: collect the runs
    runs = [run for group in sweep_groups(args)
            for run in group_runs(*group, args, data_info, train)]
    plot_comparison(runs, out)
    return summarize(runs)


def train_in_processes(command: list[str], n_groups: int, jobs: int) -> None:
    """Run `command -group g` for every group g, `jobs` processes at once. Batch-8 kernels
    are too small for two threads to help one process, so on a 2-core CPU two one-thread
    processes do twice the work of one. On an error, Ctrl-C or SIGTERM the other processes
    are stopped before returning."""
    pending = list(range(n_groups))
    running: list[tuple[int, subprocess.Popen]] = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                group = pending.pop(0)
                running.append((group, subprocess.Popen(command + ["-group", str(group)])))
            time.sleep(0.2)
            for group, process in [(g, p) for g, p in running if p.poll() is not None]:
                running.remove((group, process))
                if process.returncode != 0:
                    raise fail(f"the process training sweep group {group} failed (exit code "
                               f"{process.returncode}; its error is above)")
    finally:
        for _, process in running:
            process.terminate()
        for _, process in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def summarize(runs: list[dict]) -> dict:
    """The protocol's choice: the best learning rate on validation accuracy after the last
    epoch with max-pooling (Q2.1), and the no-max-pooling network at that rate (Q2.2)."""
    best = max((r for r in runs if not r["no_maxpool"]), key=lambda r: r["val_acc"][-1])
    no_pool = next(r for r in runs if r["no_maxpool"]
                   and r["learning_rate"] == best["learning_rate"])
    keys = ("config", "val_acc", "test_acc", "test_acc_full", "real_80_acc")
    return {"runs": runs, "best_learning_rate": best["learning_rate"],
            "selection": "highest validation accuracy after the last epoch, with max-pooling",
            "q2_1": {k: best[k] for k in keys}, "q2_2": {k: no_pool[k] for k in keys}}


def plot_comparison(runs: list[dict], out: Outputs) -> None:
    def label(r):
        return f"lr={r['learning_rate']}, {'no max-pool' if r['no_maxpool'] else 'max-pool'}"
    epochs = list(range(1, len(runs[0]["train_loss"]) + 1))
    plot_lines("q2-all-training-loss", {label(r): (epochs, r["train_loss"]) for r in runs},
               "Epoch", "Loss (mean of the epoch)", title="Training loss, all runs",
               plots_dir=out.plots)
    plot_lines("q2-all-validation-accuracy", {label(r): (epochs, r["val_acc"]) for r in runs},
               "Epoch", "Validation accuracy", title="Validation accuracy, all runs",
               plots_dir=out.plots)
