"""Question 2's sweep, made fast: the learning rates of one network trained side by side, and
the two networks in parallel processes (hw2-q2.py -sweep -jobs 2).

At batch 8 every kernel of the CNN is tiny, so a step costs mostly Python, dispatch and
autograd overhead. `SideBySideCNN` holds R copies of the CNN as one grouped network (conv1
with R x 8 output channels, conv2 as a grouped convolution, the linear layers as batched
matrix products), so R runs pay that overhead once per step, and its `sgd_step` writes the
backward pass out with public functions (`torch.nn.grad.conv2d_input` / `conv2d_weight`,
`F.max_unpool2d`, ReLU masks), so no autograd graph is built. It makes the handed-out loop's
updates for each run:

- the same initial weights: every copy is the CNN built right after seeding;
- the same batches: a `DataLoader(shuffle=True)` over the indices draws its permutation from
  the global RNG exactly as the handed-out `DataLoader` over the images does (it is the same
  class, making the same draws);
- the same dropout mask for every copy, the one a single CNN draws: `F.dropout` on a
  (batch, 320) tensor, the call `nn.Dropout` makes, so the RNG stream is a single run's;
- the same update: copy r takes `torch.optim.SGD(lr=lr_r, weight_decay=l2)`'s step.

The results equal separate runs of the handed-out loop up to float rounding, and each step
equals autograd with `torch.optim.SGD` on each CNN (tests/test_q2.py). Alternatives measured
on this 2-core CPU and not kept (report, Appendix C): autograd over the grouped network with
`torch.optim.SGD` on sum_r lr_r L_r; `torch.func.vmap` over `functional_call` with `grad`
and `randomness="same"`; `sgd_step` under `torch.compile` (`python bench/q2_bench.py
-compile`).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight
from torch.utils.data import DataLoader

from hw2.checkpoints import (Q2Checkpoint, History, finished_run_path, load_finished_run,
                             run_identity, save_finished_run)
from hw2.cli import Outputs, fail
from hw2.results import Timer
from hw2 import figures


def stacked_layout(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A CNN parameter as SideBySideCNN keeps one copy of it, and back: linear weights
    transposed to (in, out), so that the batched products read contiguous memory."""
    return tensor.t() if name.startswith("fc") and name.endswith("weight") else tensor


class SideBySideCNN(nn.Module):
    """R copies of hw2-q2.py's CNN as one network: forward maps (B, 784) images to the
    log-probabilities of every copy, (R, B, 4); `sgd_step` trains all copies on a batch."""

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
        """Every copy's log-probabilities (training goes through `sgd_step`)."""
        return self.forward_pass(x)[0]

    def forward_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, SimpleNamespace]:
        """The log-probabilities and the activations `sgd_step`'s backward pass reads."""
        r, b, size = self.n_copies, x.shape[0], 28 // self.stride
        a = SimpleNamespace(patches=conv1_patches(x, self.stride))
        # conv1 (one input channel) as one matrix product over the 3x3 patches; its output
        # comes out channels-last, which PyTorch's CPU max-pooling reads several times faster
        z1 = torch.addmm(self.conv1_bias.view(-1), a.patches.t(),
                         self.conv1_weight.view(r * 8, 9).t())
        a.h1, a.pool1 = self.pool_relu(z1.view(b, size, size, r * 8).permute(0, 3, 1, 2))
        z2 = F.conv2d(a.h1, self.conv2_weight.flatten(0, 1), self.conv2_bias.flatten(),
                      stride=self.stride, groups=r)
        a.h2, a.pool2 = self.pool_relu(z2)
        a.x3 = a.h2.reshape(b, r, 16 * 6 * 6).transpose(0, 1)  # each CNN's flatten
        a.h3 = F.relu(torch.baddbmm(self.fc1_bias[:, None], a.x3, self.fc1_weight))
        # one mask for all copies, drawn by the very call CNN's nn.Dropout makes
        a.mask = F.dropout(a.h3.new_ones(a.h3.shape[1:]), self.dropout_prob, self.training)
        a.x4 = a.h3 * a.mask
        a.h4 = F.relu(torch.baddbmm(self.fc2_bias[:, None], a.x4, self.fc2_weight))
        logits = torch.baddbmm(self.fc3_bias[:, None], a.h4, self.fc3_weight)
        return F.log_softmax(logits, dim=-1), a

    def pool_relu(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CNN's ReLU then 2x2 max-pooling, computed as pooling then ReLU: the same values and
        gradients (ReLU is monotone), with the ReLU on a quarter of the elements. Returns the
        map and the pooling indices (None without pooling)."""
        if self.no_maxpool:
            return F.relu(z), None
        pooled, indices = F.max_pool2d(z, kernel_size=2, return_indices=True)
        return F.relu(pooled), indices

    @torch.no_grad()
    def sgd_step(self, x: torch.Tensor, y: torch.Tensor, learning_rates: torch.Tensor,
                 l2_decay: float = 0.0) -> torch.Tensor:
        """One SGD step of every copy on the batch: copy r makes torch.optim.SGD(lr=lr_r,
        weight_decay=l2_decay)'s update, p <- p - lr_r (dL_r/dp + l2_decay p), L_r its mean
        NLL loss. Returns the losses L_r, (R,).

        The backward pass is written out: at batch 8 autograd's bookkeeping is a large share
        of a step, and written out, each layer's update goes into its weights as soon as the
        gradient for the layer below has been computed from them. The output gradient is
        scaled by lr_r first, so every later gradient is already copy r's step."""
        r, b = self.n_copies, x.shape[0]
        log_probs, a = self.forward_pass(x)
        target = y.expand(r, b).unsqueeze(2)
        losses = -log_probs.gather(2, target).squeeze(2).mean(dim=1)
        grad = log_probs.exp().scatter_add_(2, target, log_probs.new_full((r, b, 1), -1.0))
        grad.mul_((learning_rates / b).view(r, 1, 1))  # lr_r d L_r / d logits
        decay = 1 - learning_rates * l2_decay if l2_decay else None
        grad = self.linear_backward("fc3", a.h4, grad, decay).masked_fill_(a.h4 <= 0, 0)
        grad = self.linear_backward("fc2", a.x4, grad, decay).mul_(a.mask) \
            .masked_fill_(a.h3 <= 0, 0)  # through dropout and ReLU
        grad = self.linear_backward("fc1", a.x3, grad, decay)
        grad = self.pool_relu_backward(grad.transpose(0, 1).reshape(a.h2.shape), a.h2, a.pool2)
        grad = self.conv2_backward(a.h1, grad, decay)
        grad = self.pool_relu_backward(grad, a.h1, a.pool1)
        grad = grad.permute(0, 2, 3, 1).reshape(-1, r * 8)  # (B*H*W, R*8), as conv1 computed
        sgd_update(self.conv1_weight, torch.mm(a.patches, grad).t(), decay)
        sgd_update(self.conv1_bias, grad.sum(dim=0), decay)
        return losses

    def linear_backward(self, name: str, inputs: torch.Tensor, grad: torch.Tensor,
                        decay: torch.Tensor | None) -> torch.Tensor:
        """The gradient at the inputs of linear layer `name` from the one at its outputs,
        (R, B, out); then the layer's update, W -= x^T grad (one pass over W without weight
        decay)."""
        weight, bias = getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias")
        input_grad = torch.bmm(grad, weight.transpose(1, 2))
        apply_decay(weight, decay)
        weight.baddbmm_(inputs.transpose(1, 2), grad, alpha=-1)
        sgd_update(bias, grad.sum(dim=1), decay)
        return input_grad

    def conv2_backward(self, inputs: torch.Tensor, grad: torch.Tensor,
                       decay: torch.Tensor | None) -> torch.Tensor:
        """The gradient at conv2's inputs, then conv2's update. The gradient comes out
        channels-last as the inputs are (it follows the weight's layout), so that for conv1 it
        needs no copy."""
        weight, groups = self.conv2_weight.flatten(0, 1), self.n_copies
        input_grad = conv2d_input(inputs.shape,
                                  weight.contiguous(memory_format=torch.channels_last), grad,
                                  stride=self.stride, groups=groups)
        sgd_update(self.conv2_weight, conv2d_weight(inputs, weight.shape, grad,
                                                    stride=self.stride, groups=groups), decay)
        sgd_update(self.conv2_bias, grad.sum(dim=(0, 2, 3)), decay)
        return input_grad

    def pool_relu_backward(self, grad: torch.Tensor, out: torch.Tensor,
                           indices: torch.Tensor | None) -> torch.Tensor:
        """The gradient at z from the one at out (which it overwrites), for out, indices =
        pool_relu(z)."""
        grad.masked_fill_(out <= 0, 0)
        if indices is None:
            return grad
        return F.max_unpool2d(grad, indices, kernel_size=2,
                              output_size=(2 * out.shape[2], 2 * out.shape[3]))

    def copy_state_dict(self, r: int) -> dict[str, torch.Tensor]:
        """Copy r's weights as a CNN state dict."""
        return {name.replace("_", ".", 1): stacked_layout(name, p[r].detach()).clone()
                for name, p in self.named_parameters()}


def apply_decay(param: torch.Tensor, decay: torch.Tensor | None) -> None:
    """param <- decay_r param for every copy r (weight decay's part of the SGD step)."""
    if decay is not None:
        param.mul_(decay.view(-1, *[1] * (param.dim() - 1)))


def sgd_update(param: torch.Tensor, step: torch.Tensor, decay: torch.Tensor | None) -> None:
    """param <- decay_r param - step for every copy r; `step` holds the copies' steps in any
    shape with R x param[0].numel() elements."""
    apply_decay(param, decay)
    param.sub_(step.reshape(param.shape))


def conv1_patches(x: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, 784) images -> (9, B*H*W): the 3x3 patches conv1 (padding 1) sees, one row per
    kernel tap, so that conv1 is one matrix product and its weight gradient another."""
    b, size = x.shape[0], 28 // stride
    padded = F.pad(x.view(b, 28, 28), (1, 1, 1, 1))
    return padded.as_strided((3, 3, b, size, size), (30, 1, 900, 30 * stride, stride)) \
        .reshape(9, -1)


def train_epoch(model: SideBySideCNN, X: torch.Tensor, y: torch.Tensor,
                learning_rates: torch.Tensor, l2_decay: float, batch_size: int) -> torch.Tensor:
    """One epoch in the handed-out loop's batch order; every batch loss, (R, batches)."""
    model.train()
    batches = DataLoader(range(len(X)), batch_size=batch_size, shuffle=True)
    return torch.stack([model.sgd_step(X[i], y[i], learning_rates, l2_decay) for i in batches],
                       dim=1)


def train_side_by_side(learning_rates: list[float], model: nn.Module, args: argparse.Namespace,
                       splits: dict, checkpoint: Q2Checkpoint, names: list[str],
                       evaluate: Callable[[nn.Module, torch.Tensor, torch.Tensor], float]
                       ) -> tuple[History, list[dict[str, torch.Tensor]]]:
    """hw2-q2.py's loop for several learning rates at once (the runs `names`), starting from
    `model`'s weights (SGD only); validation runs through `model` loaded with each copy's
    weights. Returns the history and each copy's final weights."""
    copies = SideBySideCNN([model] * len(learning_rates))
    rates = torch.tensor(learning_rates, device=args.device)
    history = checkpoint.resume(copies)
    for _ in range(history.epoch, args.epochs):
        with Timer() as timer:
            losses = train_epoch(copies, *splits["train"], rates, args.l2_decay, args.batch_size)
            accuracies = []
            for r in range(len(learning_rates)):
                model.load_state_dict(copies.copy_state_dict(r))
                accuracies.append(evaluate(model, *splits["dev"]))
        history.record(losses, accuracies, timer.seconds, names)
        checkpoint.save(history, copies)
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
    figures.plot_q2_comparison(runs, out.plots)
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


