#!/usr/bin/env python
"""Question 2: a CNN for OCTMNIST, with max-pooling (Q2.1) and with strided convolutions
instead (Q2.2, -no_maxpool), and their trainable-parameter counts (Q2.3).

One run:    python hw2-q2.py -learning_rate 0.01 [-no_maxpool]
The whole protocol (-sweep [-jobs 2]): both variants x learning rates 0.1 / 0.01 / 0.001,
15 epochs of SGD with batch 8; the best learning rate is chosen on validation accuracy with
max-pooling and the no-max-pooling network is reported at it. Writes plots/q2-*.{png,pdf} and
report/results/q2.json (q2-run-<config>.json for a single run).

The training loop makes the handed-out one's updates (same shuffling, same dropout draws, same
batches; equal up to float rounding) faster: whole splits are tensors sliced by the
permutation DataLoader would draw, a sweep's learning rates train side by side as one network,
the backward pass is written out with the SGD update fused into it, and evaluation runs under
no_grad in batches (bench/q2_bench.py measures it against a replica of the handed-out loop).

Runs that cannot lie: each epoch is checkpointed under <out_dir>/checkpoints/q2 with the
run's identity (flags, data MD5s, library versions), and -resume continues or reuses only a
run of the same identity; a second process writing the same files stops at a lock; a
non-finite loss ends the run with exit status 1 and writes no results; Ctrl-C or SIGTERM also
stops a -jobs sweep's processes, keeping every finished epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import utils
from download_octmnist import describe, md5sum, validate_octmnist
from utils import (Timer, add_common_args, configure_seed, fail, non_negative_float, plot_lines,
                   positive_float, positive_int, save_checkpoint, write_results)

LEARNING_RATES = (0.1, 0.01, 0.001)
N_CLASSES = 4


class CNN(nn.Module):
    """conv(8) -> ReLU -> maxpool -> conv(16) -> ReLU -> maxpool -> fc 320 -> ReLU -> dropout
    -> fc 120 -> ReLU -> fc 4 -> LogSoftmax. With `no_maxpool` the pools are dropped and both
    convolutions take stride 2 instead, which gives the same 16 x 6 x 6 feature map."""

    def __init__(self, dropout_prob: float, no_maxpool: bool = False):
        super().__init__()
        self.no_maxpool = no_maxpool
        stride = 2 if no_maxpool else 1
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, stride=stride, padding=1)   # 28 -> 28 | 14
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, stride=stride, padding=0)  # 14 -> 12 | 6
        self.fc1 = nn.Linear(16 * 6 * 6, 320)
        self.drop = nn.Dropout(dropout_prob)
        self.fc2 = nn.Linear(320, 120)
        self.fc3 = nn.Linear(120, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, 28, 28)  # the data arrive flattened (B, 784)
        x = F.relu(self.conv1(x))
        if not self.no_maxpool:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        x = F.relu(self.conv2(x))
        if not self.no_maxpool:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        x = self.drop(F.relu(self.fc1(x.flatten(1))))
        x = F.relu(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)


def get_number_trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def params_per_layer(model: nn.Module) -> dict[str, int]:
    """Trainable parameters of each layer (weights + biases)."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            layer = name.rsplit(".", 1)[0]
            counts[layer] = counts.get(layer, 0) + p.numel()
    return counts


def stacked_layout(name: str, weight: torch.Tensor) -> torch.Tensor:
    """A CNN parameter as StackedCNN keeps it and back (linear weights transposed)."""
    return weight.t() if name.startswith("fc") and name.endswith("weight") else weight


class StackedCNN(nn.Module):
    """R copies of `CNN` trained side by side on the same batches: one wide network whose
    replica r computes exactly what CNN r would (conv1 with R x 8 output channels, conv2 as a
    grouped convolution, the linear layers as batched matrix products).

    The sweep's runs of one variant differ only in the learning rate: from the same seed they
    start from the same weights and see the same shuffling and the same dropout masks. Doing
    the R runs as one network pays Python and dispatch overhead once per step instead of R
    times. `replica(r)` returns CNN r with its current weights.

    Linear weights are kept as (R, in, out), the transpose of nn.Linear's (out, in), so that
    the forward product and both backward products read contiguous memory. Feature maps are
    channels-last ((N, C, H, W) views of (N, H, W, C) memory): conv1, computed as one matrix
    product, comes out that way, and PyTorch's CPU max-pooling is several times faster on it.
    """

    def __init__(self, models: list[CNN]):
        super().__init__()
        first = models[0]
        self.n_replicas, self.no_maxpool, self.dropout_prob = len(models), first.no_maxpool, \
            first.drop.p
        self.stride = first.conv1.stride[0]
        for name, _ in first.named_parameters():  # conv1.weight -> conv1_weight of shape (R, ...)
            stacked = torch.stack([stacked_layout(name, dict(m.named_parameters())[name].detach())
                                   for m in models])
            self.register_parameter(name.replace(".", "_"), nn.Parameter(stacked.contiguous()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 784) -> log-probabilities (R, B, 4)."""
        return self.forward_pass(x)[0]

    def forward_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, SimpleNamespace]:
        """The log-probabilities and the activations that `sgd_step`'s backward pass reads."""
        r, b, size = self.n_replicas, x.shape[0], 28 // self.stride
        a = SimpleNamespace(patches=conv1_patches(x, self.stride))
        a.z1 = torch.addmm(self.conv1_bias.view(-1), a.patches.t(),
                           self.conv1_weight.view(r * 8, 9).t())  # (B*H*W, R*8)
        a.z1 = a.z1.view(b, size, size, r * 8).permute(0, 3, 1, 2)
        a.h1, a.pool1 = self.relu_pool(a.z1)
        a.z2 = F.conv2d(a.h1, self.conv2_weight.flatten(0, 1), self.conv2_bias.flatten(),
                        stride=self.stride, groups=r)
        a.h2, a.pool2 = self.relu_pool(a.z2)
        a.x3 = a.h2.view(b, r, 16, 6, 6).transpose(0, 1).reshape(r, b, 576)  # CNN's flatten
        a.a3 = F.relu(torch.baddbmm(self.fc1_bias[:, None], a.x3, self.fc1_weight))
        a.mask = None
        if self.training:
            # One mask for all replicas, drawn by the same call CNN's dropout makes, so the RNG
            # stream (and each replica's mask) is the one a single CNN would see.
            a.mask = F.dropout(a.a3.new_ones(a.a3.shape[1:]), self.dropout_prob, training=True)
            a.a3 = a.a3 * a.mask
        a.a4 = F.relu(torch.baddbmm(self.fc2_bias[:, None], a.a3, self.fc2_weight))
        logits = torch.baddbmm(self.fc3_bias[:, None], a.a4, self.fc3_weight)
        return F.log_softmax(logits, dim=-1), a

    def relu_pool(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CNN's ReLU then 2x2 max-pooling, computed as pooling then ReLU: the same values and
        gradients (ReLU is monotone and zeroes the gradient of every window whose maximum is
        not positive), with the ReLU on a quarter of the elements. Returns the map and the
        pooling indices (None without pooling)."""
        if self.no_maxpool:
            return F.relu(z), None
        pooled, indices = F.max_pool2d_with_indices(z, kernel_size=2)
        return F.relu(pooled), indices

    def relu_pool_backward(self, grad: torch.Tensor, out: torch.Tensor, z: torch.Tensor,
                           indices: torch.Tensor | None) -> torch.Tensor:
        """d loss / d z from d loss / d out, for out, indices = relu_pool(z)."""
        grad = torch.ops.aten.threshold_backward(grad, out, 0)  # passes where out > 0
        if self.no_maxpool:
            return grad
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, z, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)

    @torch.no_grad()
    def sgd_step(self, x: torch.Tensor, y: torch.Tensor, learning_rates: torch.Tensor,
                 weight_decay: float = 0.0) -> torch.Tensor:
        """One step of plain SGD for every replica on the batch, the update torch.optim.SGD
        makes for each run, p <- p - lr_r (dL_r/dp + weight_decay p) with L_r replica r's
        mean NLL; returns the losses L_r, (R,).

        The backward pass is written out instead of left to autograd: at batch 8 autograd's
        bookkeeping is a sizeable share of each step, and written out, each layer's update
        goes straight into its weights once the gradient flowing to the layer below is
        computed (for the linear layers W -= x^T (lr g), a single pass over the largest
        tensors instead of a gradient written, read back and applied)."""
        r, b = self.n_replicas, x.shape[0]
        lr = learning_rates.view(r, 1, 1)
        log_probs, a = self.forward_pass(x)
        target = F.one_hot(y, N_CLASSES).to(log_probs.dtype)
        losses = -(log_probs * target).sum(dim=2).mean(dim=1)
        grad = (log_probs.exp() - target) / b  # d L_r / d logits, (R, B, 4)
        grad = self.linear_backward("fc3", a.a4, grad, lr, weight_decay)
        grad = torch.ops.aten.threshold_backward(grad, a.a4, 0)
        grad = self.linear_backward("fc2", a.a3, grad, lr, weight_decay)
        if a.mask is not None:
            grad = grad * a.mask
        grad = torch.ops.aten.threshold_backward(grad, a.a3, 0)
        grad = self.linear_backward("fc1", a.x3, grad, lr, weight_decay)
        grad = grad.view(r, b, 16, 6, 6).transpose(0, 1).reshape(a.h2.shape)
        grad = self.relu_pool_backward(grad, a.h2, a.z2, a.pool2)
        grad, w_grad, b_grad = torch.ops.aten.convolution_backward(
            grad, a.h1, self.conv2_weight.flatten(0, 1), [16 * r], [self.stride] * 2, [0, 0],
            [1, 1], False, [0, 0], r, [True, True, True])
        sgd_update(self.conv2_weight, w_grad.view_as(self.conv2_weight), lr, weight_decay)
        sgd_update(self.conv2_bias, b_grad.view(r, 16), lr, weight_decay)
        grad = self.relu_pool_backward(grad, a.h1, a.z1, a.pool1)
        grad = grad.permute(0, 2, 3, 1).reshape(-1, r * 8)  # (B*H*W, R*8), as z1 was computed
        sgd_update(self.conv1_weight, torch.mm(a.patches, grad).t().reshape(r, 8, 1, 3, 3),
                   lr, weight_decay)
        sgd_update(self.conv1_bias, grad.sum(dim=0).view(r, 8), lr, weight_decay)
        return losses

    def linear_backward(self, name: str, inputs: torch.Tensor, grad: torch.Tensor,
                        lr: torch.Tensor, weight_decay: float) -> torch.Tensor:
        """d L / d inputs of linear layer `name` given d L / d outputs (R, B, out), then the
        layer's SGD update (which must come after: the input gradient uses the old W)."""
        weight, bias = getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias")
        input_grad = torch.bmm(grad, weight.transpose(1, 2))
        if weight_decay:
            weight.mul_(1 - lr * weight_decay)
            bias.mul_(1 - lr.view(-1, 1) * weight_decay)
        grad = grad * lr
        weight.baddbmm_(inputs.transpose(1, 2), grad, alpha=-1)
        bias.sub_(grad.sum(dim=1))
        return input_grad

    def replica(self, r: int) -> CNN:
        with torch.random.fork_rng(devices=[]):  # building a CNN must not move the RNG stream
            model = CNN(self.dropout_prob, no_maxpool=self.no_maxpool)
        model.load_state_dict({
            name: stacked_layout(name, getattr(self, name.replace(".", "_"))[r].detach()).clone()
            for name, _ in model.named_parameters()})
        return model.to(self.conv1_weight.device)


def conv1_patches(x: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, 784) images -> (9, B*H*W): the 3x3 patches conv1 (padding 1) sees, one row per kernel
    tap, so that conv1 is one matrix product and its weight gradient another."""
    b, size = x.shape[0], 28 // stride
    padded = F.pad(x.view(b, 28, 28), (1, 1, 1, 1))
    return padded.as_strided((3, 3, b, size, size),
                             (30, 1, 900, 30 * stride, stride)).reshape(9, -1)


def sgd_update(param: torch.Tensor, grad: torch.Tensor, lr: torch.Tensor,
               weight_decay: float) -> None:
    """param <- param - lr_r (grad + weight_decay param), lr_r the learning rate of replica r."""
    if weight_decay:
        grad = grad.add(param, alpha=weight_decay)
    param.addcmul_(lr.view(-1, *[1] * (param.dim() - 1)), grad, value=-1)


class StackedSGD:
    """Plain SGD (no momentum, as handed out) with one learning rate per replica; the update
    itself is fused into `StackedCNN.sgd_step`."""

    def __init__(self, learning_rates: list[float], weight_decay: float = 0.0,
                 device: str | torch.device = "cpu"):
        self.lr = torch.tensor(learning_rates, device=device)
        self.weight_decay = weight_decay

    def state_dict(self) -> dict:
        return {}  # plain SGD keeps no state between steps

    def load_state_dict(self, state: dict) -> None:
        pass


def dataloader_permutation(n: int) -> torch.Tensor:
    """The order in which `DataLoader(shuffle=True)` visits n items, drawn from the global RNG
    exactly as it does (one draw for the iterator's base seed, one to seed the sampler), so
    that this loop and the handed-out one see the same batches and dropout masks."""
    torch.empty((), dtype=torch.int64).random_()  # _BaseDataLoaderIter._base_seed
    seed = int(torch.empty((), dtype=torch.int64).random_().item())  # RandomSampler
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def train_epoch(model: StackedCNN, x: torch.Tensor, y: torch.Tensor, optimizer,
                batch_size: int, progress: bool = True) -> torch.Tensor:
    """One epoch over (x, y) in DataLoader order; returns every batch's loss, (R, n_batches)."""
    model.train()
    order = dataloader_permutation(len(x))
    order = order.to(x.device)
    x, y = x[order], y[order]  # one gather per epoch; the batches below are contiguous views
    n_batches = (len(x) + batch_size - 1) // batch_size
    losses = torch.empty(model.n_replicas, n_batches)
    bar = tqdm(range(n_batches), leave=False, disable=not progress, mininterval=1)
    for i in bar:
        losses[:, i] = train_step(model, optimizer, x[i * batch_size:(i + 1) * batch_size],
                                  y[i * batch_size:(i + 1) * batch_size])
        if i % 500 == 0:
            bar.set_postfix(loss=" ".join(f"{v:.3f}" for v in
                                          losses[:, max(0, i - 499):i + 1].mean(dim=1)))
    return losses


def train_step(model: StackedCNN, optimizer, xb: torch.Tensor, yb: torch.Tensor
               ) -> torch.Tensor:
    """One optimizer step of every replica on the batch; returns each replica's loss, (R,)."""
    if isinstance(optimizer, StackedSGD):
        return model.sgd_step(xb, yb, optimizer.lr, optimizer.weight_decay)
    log_probs = model(xb)  # Adam (one replica): autograd
    loss = F.nll_loss(log_probs[0], yb)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach().view(1)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    model.eval()
    preds = torch.cat([model(x[i:i + batch_size]).argmax(dim=-1)
                       for i in range(0, len(x), batch_size)])
    model.train()
    return preds


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy; under no_grad and in large batches (the handed-out one kept the graph)."""
    return (predict(model, x) == y).double().mean().item()


def load_splits(data_dir, subset: int | None) -> tuple[dict[str, tuple[torch.Tensor, ...]], dict]:
    """Float32 / int64 tensors of every split (the handed-out ClassificationDataset dtypes)."""
    path = utils.oct_data_path(data_dir)
    validate_octmnist(path)
    data = utils.load_oct_data(data_dir)
    tensors = {k: (torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long))
               for k, (x, y) in data.items()}
    if subset:
        for k in ("train", "dev"):
            tensors[k] = tuple(t[:subset] for t in tensors[k])
    info = describe(path)
    info["md5"] = md5sum(path)  # the data's part of each run's identity
    info["sizes"] = {k: len(v[0]) for k, v in tensors.items()}
    if subset:
        info["subset"] = f"first {subset} train and validation images"
    return tensors, info


def load_real_check(path: Path | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The 80 genuine Kermany OCT images (all splits together), preprocessed like OCTMNIST;
    a file without OCTMNIST's keys, shapes and labels is a one-line error naming it."""
    if path is None or not path.exists():
        return None
    validate_octmnist(path)
    with np.load(path) as d:
        x = np.concatenate([d[f"{s}_images"] for s in ("train", "val", "test")])
        y = np.concatenate([d[f"{s}_labels"] for s in ("train", "val", "test")]).reshape(-1)
    return (torch.tensor(x.reshape(len(x), -1) / 256, dtype=torch.float32),
            torch.tensor(y, dtype=torch.long))


def config_name(lr: float, args: argparse.Namespace, no_maxpool: bool) -> str:
    """The handed-out naming: {lr}-{dropout}-{l2_decay}-{optimizer}-{no_maxpool}."""
    return f"{lr}-{args.dropout}-{args.l2_decay}-{args.optimizer}-{no_maxpool}"


# Flags that change what a training group computes, besides its learning rates and variant.
IDENTITY_FLAGS = ("epochs", "batch_size", "dropout", "l2_decay", "optimizer", "subset", "seed")


def run_identity(learning_rates: list[float], no_maxpool: bool, args: argparse.Namespace,
                 data_info: dict) -> dict:
    """Everything that determines the numbers of one training group: the flags, the data
    (file MD5s) and the libraries that compute them. Its checkpoint and finished runs record
    it, and -resume continues or reuses them only when it is the same, so that a smoke run's
    state is never continued, or published, as another run's."""
    return {"learning_rates": list(learning_rates), "no_maxpool": no_maxpool,
            **{flag: getattr(args, flag) for flag in IDENTITY_FLAGS},
            "device": torch.device(args.device).type, "data_md5": data_info["md5"],
            "real_images_md5": data_info.get("real_check_md5"),
            "torch": torch.__version__, "numpy": np.__version__}


def check_identity(path: Path, saved: dict | None, identity: dict) -> None:
    """Stop, naming what differs, unless `saved` (the identity recorded in `path`) is
    `identity`."""
    how = "run without -resume, or delete it, to start afresh"
    if saved is None:
        raise fail(f"-resume: {path} records no run identity (an older version wrote it); {how}")
    changed = [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in identity.items()
               if saved.get(key) != value]
    if changed:
        raise fail(f"-resume: {path} is another run ({', '.join(changed)}); {how}")


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=False)
    except Exception as err:  # truncated, or not a checkpoint at all
        raise fail(f"{path}: unreadable checkpoint ({type(err).__name__}); delete it to start "
                   "afresh") from None


def train_runs(learning_rates: list[float], no_maxpool: bool, args: argparse.Namespace,
               splits: dict, real_check, data_info: dict) -> list[dict]:
    """Train one configuration per learning rate from seed `args.seed`, side by side
    (`StackedCNN`); returns each run's curves and test scores. The group's checkpoint is
    locked meanwhile: a second process training the same group stops at once."""
    names = [config_name(lr, args, no_maxpool) for lr in learning_rates]
    checkpoint = Path(args.checkpoint_dir) / ("+".join(names) + f"-seed{args.seed}.pt")
    identity = run_identity(learning_rates, no_maxpool, args, data_info)
    with utils.exclusive(checkpoint.with_suffix(".lock"), f"the checkpoint {checkpoint}"):
        model, state = train_group(learning_rates, no_maxpool, args, splits, checkpoint,
                                   identity)
        return finished_runs(model, state, learning_rates, no_maxpool, args, splits,
                             real_check)


def train_group(learning_rates: list[float], no_maxpool: bool, args: argparse.Namespace,
                splits: dict, checkpoint: Path, identity: dict) -> tuple[StackedCNN, dict]:
    """The epochs of one group, each saved to `checkpoint` (with -resume, continued from it):
    the trained model and the state holding every batch loss and validation accuracy."""
    configure_seed(args.seed)
    model = StackedCNN([CNN(args.dropout, no_maxpool=no_maxpool)] * len(learning_rates))
    model.to(args.device)
    if args.optimizer == "sgd":
        optimizer = StackedSGD(learning_rates, args.l2_decay, args.device)
    elif len(learning_rates) == 1:
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rates[0],
                                     weight_decay=args.l2_decay)
    else:
        raise ValueError("side-by-side runs need -optimizer sgd")
    names = [config_name(lr, args, no_maxpool) for lr in learning_rates]
    label = ", ".join(names)
    state = {"epoch": 0, "losses": [], "val_acc": [], "seconds": 0.0}
    if args.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        check_identity(checkpoint, state.get("identity"), identity)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda_rng"])
        print(f"resuming {label} after epoch {state['epoch']} from {checkpoint}")
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        with Timer() as timer:
            losses = train_epoch(model, *splits["train"], optimizer, args.batch_size,
                                 progress=not args.no_progress)
            stop_if_diverged(losses, epoch, names)
            accuracies = [evaluate(model.replica(r), *splits["dev"])
                          for r in range(len(learning_rates))]
        print(f"epoch {epoch}/{args.epochs} [{label}]  train loss "
              + " ".join(f"{v:.4f}" for v in losses.mean(dim=1))
              + "  valid acc " + " ".join(f"{v:.4f}" for v in accuracies), flush=True)
        state = {"epoch": epoch, "losses": state["losses"] + [losses],
                 "val_acc": state["val_acc"] + [accuracies],
                 "seconds": state["seconds"] + timer.seconds, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state() if args.device.startswith("cuda")
                 else None, "identity": identity}
        save_checkpoint(state, checkpoint)
    return model, state


def stop_if_diverged(losses: torch.Tensor, epoch: int, names: list[str]) -> None:
    """End the run (exit status 1) at the first non-finite batch loss of the epoch, before
    the epoch is checkpointed or anything is plotted or written: a diverged network's scores
    are not results. Checked once per epoch, so the training loop itself is untouched."""
    bad = (~torch.isfinite(losses)).nonzero().tolist()  # [replica, step] pairs
    if bad:
        r, step = min(bad, key=lambda rs: (rs[1], rs[0]))
        raise fail(f"training diverged: loss {losses[r, step].item()} at epoch {epoch}, step "
                   f"{step + 1} of {losses.shape[1]} ({names[r]}); nothing was written for "
                   "it; lower the learning rate")


def finished_runs(model: StackedCNN, state: dict, learning_rates: list[float],
                  no_maxpool: bool, args: argparse.Namespace, splits: dict,
                  real_check) -> list[dict]:
    """Each run's curves and test scores from the trained group, with its two figures."""
    names = [config_name(lr, args, no_maxpool) for lr in learning_rates]
    all_losses, val_acc = state["losses"], state["val_acc"]
    losses = torch.stack(all_losses, dim=1)  # (R, epochs, batches)
    running = losses.flatten(1).cumsum(dim=1).view_as(losses)[..., -1] / \
        (losses.shape[2] * torch.arange(1, args.epochs + 1))
    runs = []
    for r, (lr, name) in enumerate(zip(learning_rates, names)):
        final = model.replica(r)
        run = {
            "config": name, "learning_rate": lr, "no_maxpool": no_maxpool,
            "train_loss": losses[r].mean(dim=1).tolist(),
            "train_loss_running_mean": running[r].tolist(),  # the handed-out curve
            "val_acc": [v[r] for v in val_acc],
            "test_acc": evaluate(final, *splits["test"]),
            "test_acc_full": evaluate(final, *splits["test_full"]),
            "real_80_acc": evaluate(final, *real_check) if real_check else None,
            "trainable_params": get_number_trainable_params(final),
            "wall_time_s": state["seconds"],
            "trained_with": f"{len(learning_rates)} runs side by side",
        }
        print(f"[{name}] final test acc {run['test_acc']:.4f} (529-image subset), "
              f"{run['test_acc_full']:.4f} (full test split)")
        plot_run(run)
        runs.append(run)
    print(f"{state['seconds']:.0f} s of training for {len(runs)} run(s)")
    return runs


def plot_run(run: dict) -> None:
    """The two figures the statement asks for, per configuration."""
    epochs = list(range(1, len(run["train_loss"]) + 1))
    plot_lines(f"q2-training-loss-{run['config']}",
               {"mean loss of the epoch": (epochs, run["train_loss"]),
                "running mean since epoch 1 (handed-out)": (epochs,
                                                            run["train_loss_running_mean"])},
               "Epoch", "Loss", title=f"Training loss, {run['config']}")
    plot_lines(f"q2-validation-accuracy-{run['config']}",
               {"validation": (epochs, run["val_acc"])}, "Epoch", "Accuracy",
               title=f"Validation accuracy, {run['config']}")


def plot_comparison(runs: list[dict]) -> None:
    def label(r):
        return f"lr={r['learning_rate']}, {'no max-pool' if r['no_maxpool'] else 'max-pool'}"
    epochs = list(range(1, len(runs[0]["train_loss"]) + 1))
    plot_lines("q2-all-training-loss", {label(r): (epochs, r["train_loss"]) for r in runs},
               "Epoch", "Loss (mean of the epoch)", title="Training loss, all runs")
    plot_lines("q2-all-validation-accuracy", {label(r): (epochs, r["val_acc"]) for r in runs},
               "Epoch", "Validation accuracy", title="Validation accuracy, all runs")


def runs_or_resume(learning_rates: list[float], no_maxpool: bool, args, splits,
                   real_check, data_info: dict) -> list[dict]:
    """Finished runs are kept in <checkpoint_dir>/<config>-seed<seed>.json with the identity
    of their group; with -resume a group whose runs are all there, with the same identity,
    is reused instead of trained again."""
    identity = run_identity(learning_rates, no_maxpool, args, data_info)
    paths = [Path(args.checkpoint_dir) / f"{config_name(lr, args, no_maxpool)}-seed{args.seed}.json"
             for lr in learning_rates]
    if args.resume and all(p.exists() for p in paths):
        print("resuming: reusing " + ", ".join(str(p) for p in paths))
        return [load_finished_run(p, identity) for p in paths]
    runs = train_runs(learning_rates, no_maxpool, args, splits, real_check, data_info)
    for path, run in zip(paths, runs):
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # then rename: never half a file
        tmp.write_text(json.dumps({"identity": identity, "run": run}))
        tmp.replace(path)
    return runs


def load_finished_run(path: Path, identity: dict) -> dict:
    """The run stored in `path`, if it was trained with `identity`."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise fail(f"{path}: unreadable finished-run file ({type(err).__name__}); delete it "
                   "to train the run again") from None
    check_identity(path, record.get("identity") if isinstance(record, dict) else None, identity)
    return record["run"]


def sweep_groups(args) -> list[tuple[list[float], bool]]:
    """The sweep's trainings: per variant, its learning rates side by side (SGD) or one by one."""
    rates = [args.learning_rates] if args.optimizer == "sgd" else [[lr] for lr in
                                                                   args.learning_rates]
    return [(group, no_maxpool) for no_maxpool in (False, True) for group in rates]


def train_groups_in_processes(args) -> None:
    """Train the sweep's groups in `args.jobs` processes at once, one torch thread each unless
    -threads says otherwise. Batch-8 kernels are too small for two threads to help one
    process, so on a 2-core CPU two processes do twice the work of one. Each process runs
    this script on one group (-group) and leaves its runs in -checkpoint_dir."""
    command = [sys.executable, str(Path(__file__).resolve()), *args.argv, "-no_progress",
               "-threads", str(args.threads or 1)]
    pending = list(range(len(sweep_groups(args))))
    running: list[tuple[int, subprocess.Popen]] = []
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                group = pending.pop(0)
                running.append((group, subprocess.Popen(command + ["-group", str(group)])))
            time.sleep(0.2)
            for group, process in [(g, p) for g, p in running if p.poll() is not None]:
                running.remove((group, process))
                if process.returncode != 0:
                    raise fail(f"the process training sweep group {group} failed (exit code "
                               f"{process.returncode}; its error is above)")
    finally:  # on an error, Ctrl-C or SIGTERM: stop the other processes before exiting
        for _, process in running:
            process.terminate()
        for _, process in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def sweep(args, splits, real_check, data_info: dict) -> dict:
    """Both variants x the learning rates; pick the best rate on validation (max-pooling)."""
    groups = sweep_groups(args)
    if args.jobs > 1:
        train_groups_in_processes(args)
        args.resume = True  # every group is finished now: collect the runs
    runs = [run for group, no_maxpool in groups
            for run in runs_or_resume(group, no_maxpool, args, splits, real_check, data_info)]
    with_pool = [r for r in runs if not r["no_maxpool"]]
    best = max(with_pool, key=lambda r: r["val_acc"][-1])
    best_lr = best["learning_rate"]
    no_pool = next(r for r in runs if r["no_maxpool"] and r["learning_rate"] == best_lr)
    plot_comparison(runs)
    keys = ("config", "val_acc", "test_acc", "test_acc_full", "real_80_acc")
    return {"runs": runs, "best_learning_rate": best_lr,
            "selection": "highest validation accuracy after the last epoch, with max-pooling",
            "q2_1": {k: best[k] for k in keys}, "q2_2": {k: no_pool[k] for k in keys}}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Question 2: CNN on OCTMNIST. Q2.1 conv-pool network tuned over the "
                    "learning rate, Q2.2 the same without max-pooling (-no_maxpool), Q2.3 "
                    "trainable-parameter counts.")
    parser.add_argument("-epochs", default=15, type=positive_int,
                        help="training epochs (default: %(default)s, as the statement asks; "
                             "the handed-out default was 20)")
    parser.add_argument("-batch_size", default=8, type=positive_int, help="default: %(default)s")
    parser.add_argument("-learning_rate", type=positive_float, default=0.01,
                        help="default: %(default)s")
    parser.add_argument("-l2_decay", type=non_negative_float, default=0,
                        help="default: %(default)s")
    parser.add_argument("-dropout", type=float, default=0.7, help="default: %(default)s")
    parser.add_argument("-optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("-no_maxpool", action="store_true",
                        help="Q2.2: stride-2 convolutions instead of max-pooling")
    parser.add_argument("-sweep", action="store_true",
                        help="the whole protocol: both variants x -learning_rates, best "
                             "learning rate chosen on validation, test reported")
    parser.add_argument("-learning_rates", type=positive_float, nargs="+",
                        default=list(LEARNING_RATES),
                        help="learning rates of -sweep (default: %(default)s)")
    parser.add_argument("-jobs", type=positive_int, default=1,
                        help="-sweep: train the two networks in this many processes at once, "
                             "one torch thread each (default: %(default)s; 2 puts both cores of "
                             "a 2-core CPU to work)")
    parser.add_argument("-group", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("-subset", type=positive_int, default=None,
                        help="train and validate on the first N images only (smoke runs)")
    parser.add_argument("-real_images", default=None,
                        help="the 80 genuine Kermany OCT images to score as a check "
                             "(default: octmnist_kermany.npz in -data_dir or $HW2_DATA_DIR)")
    parser.add_argument("-checkpoint_dir", default=None,
                        help="where each epoch's training state and finished runs are kept "
                             "(default: checkpoints/q2 under -out_dir, else under the current "
                             "folder)")
    parser.add_argument("-resume", action="store_true",
                        help="continue from -checkpoint_dir: finished runs are reused, an "
                             "interrupted one continues after its last finished epoch; only "
                             "runs of the same configuration, data and library versions")
    parser.add_argument("-device", default="cpu",
                        help="torch device, e.g. cuda (default: %(default)s, as handed out)")
    parser.add_argument("-no_progress", action="store_true", help="no progress bars")
    add_common_args(parser, threads=True)
    args = parser.parse_args(argv)
    if not 0 <= args.dropout < 1:
        parser.error(f"argument -dropout: must lie in [0, 1) (got {args.dropout})")
    problem = device_problem(args.device)
    if problem:
        parser.error(f"argument -device: {problem}")
    if args.checkpoint_dir is None:  # two output folders never share checkpoints
        args.checkpoint_dir = str(Path(args.out_dir or ".") / "checkpoints" / "q2")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for -jobs' processes
    return args


def device_problem(device: str) -> str | None:
    """Why torch cannot use `device` here, or None: checked at parse time, so that
    `-device cuda` on a machine without a GPU is a usage error rather than a traceback."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"{device}: no CUDA GPU is available here (use -device cpu)"
    try:
        torch.empty(0, device=device)
    except Exception as err:  # unknown name, no such GPU, backend not built: all unusable
        return f"{device} is not usable here ({textwrap.shorten(str(err), 80)})"
    return None


def find_real_images(args) -> Path | None:
    if args.real_images:
        path = Path(args.real_images)
        if not path.exists():
            raise fail(f"{path} not found (-real_images)")
        return path
    for folder in (utils.resolve_data_dir(args.data_dir), utils.resolve_data_dir(None)):
        if (folder / "octmnist_kermany.npz").exists():
            return folder / "octmnist_kermany.npz"
    return None


def main(argv=None) -> None:
    """Load and check the data, check the output folders and take the lock on the results
    file (a -jobs process works under its parent's), then train: a bad input stops the run
    before any training, and an interruption ends in one line, every finished epoch kept in
    the checkpoints for -resume."""
    args = parse_args(argv)
    utils.apply_common_args(args)
    child = args.sweep and args.group is not None  # a process started by -jobs: one group
    name = "q2" if args.sweep else \
        f"q2-run-{config_name(args.learning_rate, args, args.no_maxpool)}"
    try:
        data = load_data(args)
        for folder, flag in ((utils.RESULTS_DIR, "-out_dir"), (utils.PLOTS_DIR, "-out_dir"),
                             (Path(args.checkpoint_dir), "-checkpoint_dir")):
            utils.ensure_writable(folder, flag)
        if child:
            runs_or_resume(*sweep_groups(args)[args.group], args, *data)
            return
        with utils.exclusive(utils.RESULTS_DIR / f"{name}.lock", f"{name}.json"):
            train_and_write(args, name, *data)
    except KeyboardInterrupt:
        if child:
            raise SystemExit(130) from None  # the parent reports the interruption
        raise fail(f"interrupted; every finished epoch is kept in {args.checkpoint_dir}: rerun "
                   "with -resume to continue") from None


def load_data(args: argparse.Namespace) -> tuple[dict, tuple | None, dict]:
    """The splits and the optional genuine-image check on -device, checked, and what they
    are (for results files and run identities)."""
    splits, data_info = load_splits(args.data_dir, args.subset)
    splits = {k: tuple(t.to(args.device) for t in v) for k, v in splits.items()}
    real_path = find_real_images(args)
    real_check = load_real_check(real_path)
    if real_check:
        real_check = tuple(t.to(args.device) for t in real_check)
    data_info["real_check"] = str(real_path) if real_path else None
    data_info["real_check_md5"] = md5sum(real_path) if real_path else None
    return splits, real_check, data_info


def train_and_write(args: argparse.Namespace, name: str, splits: dict, real_check,
                    data_info: dict) -> None:
    """Train one run or the sweep and write results/<name>.json."""
    model = CNN(args.dropout, no_maxpool=args.no_maxpool)
    params = {"max-pool": params_per_layer(CNN(args.dropout)),
              "no max-pool": params_per_layer(CNN(args.dropout, no_maxpool=True))}
    for variant, layers in params.items():
        print(f"{variant}: " + ", ".join(f"{k} {v:,}" for k, v in layers.items())
              + f"; total {sum(layers.values()):,}")
    with Timer() as wall:
        if args.sweep:
            results = sweep(args, splits, real_check, data_info)
        else:
            results = {"runs": train_runs([args.learning_rate], args.no_maxpool, args, splits,
                                          real_check, data_info)}
    results["params_per_layer"] = params
    results["trainable_params"] = {k: sum(v.values()) for k, v in params.items()}
    path = write_results(name, results, config=vars(args), seed=args.seed, data=data_info,
                         wall_time_s=wall.seconds)
    print(f"Number of trainable parameters: {get_number_trainable_params(model)}")
    print(f"wrote {path} ({wall.seconds:.0f} s)")


def interrupt(signum, frame) -> None:
    """SIGINT and SIGTERM handler: stop like Ctrl-C, so that `finally` blocks run (a -jobs
    sweep stops its processes; locks are released and removed), ignoring further signals
    meanwhile (a -jobs process gets Ctrl-C's SIGINT and then its parent's SIGTERM). A no-op
    handler rather than SIG_IGN: Python reports a signal already pending when its handler
    becomes SIG_IGN as an error."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    main()
