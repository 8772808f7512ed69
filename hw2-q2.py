#!/usr/bin/env python
"""Question 2: a CNN for OCTMNIST with max-pooling (Q2.1) and with strided convolutions instead
(Q2.2, -no_maxpool), and their trainable-parameter counts (Q2.3).
    python hw2-q2.py -learning_rate 0.01 [-no_maxpool]   one configuration, the handed-out loop
    python hw2-q2.py -sweep [-jobs 2]   both networks x learning rates 0.1, 0.01, 0.001; the best
rate is chosen on validation with max-pooling and the network without it reported at that rate.
Every epoch is checkpointed (-resume continues); writes plots/q2-* and report/results/q2*.json.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.util
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from hw2 import cli, figures, octmnist, side_by_side
from hw2.checkpoints import Checkpoint, atomic_write, check_identity, exclusive
from hw2.cli import add_common_args, fail, non_negative_float, positive_float, positive_int
from hw2.results import Timer, check_replaceable, write_results
from utils import configure_seed

LEARNING_RATES = (0.1, 0.01, 0.001)
N_CLASSES = 4
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
# Flags that change what a training computes, besides its learning rates and variant.
IDENTITY_FLAGS = ("epochs", "batch_size", "dropout", "l2_decay", "optimizer", "subset", "seed")
CHECKPOINT_FORMAT = 3  # 3: hw2.checkpoints.Checkpoint's layout (RNG states in a dict)


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# A training's identity, history and checkpoint
# ---------------------------------------------------------------------------------------------
def config_name(lr: float, args: argparse.Namespace, no_maxpool: bool) -> str:
    """The handed-out naming: {lr}-{dropout}-{l2_decay}-{optimizer}-{no_maxpool}."""
    return f"{lr}-{args.dropout}-{args.l2_decay}-{args.optimizer}-{no_maxpool}"


def run_identity(learning_rates: list[float], no_maxpool: bool, args: argparse.Namespace,
                 data_info: dict) -> dict:
    """Everything that determines the numbers of one training: -resume continues a checkpoint,
    or reuses a finished run, only when it is the same."""
    return {"learning_rates": list(learning_rates), "no_maxpool": no_maxpool,
            **{flag: getattr(args, flag) for flag in IDENTITY_FLAGS},
            "device": torch.device(args.device).type, "data_md5": data_info["md5"],
            "real_images_md5": data_info.get("real_check_md5"),
            "torch": torch.__version__, "numpy": np.__version__}


@dataclass
class History:
    """What a training has done so far: every batch loss ((R, batches) per epoch, R runs) and
    each run's validation accuracy after each epoch."""
    epoch: int = 0
    losses: list[torch.Tensor] = field(default_factory=list)
    val_acc: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, losses: torch.Tensor, accuracies: list[float], seconds: float,
               names: list[str]) -> None:
        """Add one finished epoch (after checking it did not diverge) and print it."""
        self.epoch += 1
        stop_if_diverged(losses, self.epoch, names)
        self.losses.append(losses.cpu())  # curves and checkpoints stay device-free
        self.val_acc.append(accuracies)
        self.seconds += seconds
        print(f"epoch {self.epoch} [{', '.join(names)}]  train loss "
              + " ".join(f"{v:.4f}" for v in losses.mean(dim=1))
              + "  valid acc " + " ".join(f"{v:.4f}" for v in accuracies), flush=True)


def stop_if_diverged(losses: torch.Tensor, epoch: int, names: list[str]) -> None:
    """End the run (exit status 1) at the first non-finite batch loss of the epoch, before
    the epoch is checkpointed or anything is plotted or written: a diverged network's scores
    are not results. Checked once per epoch, so the training loop itself is untouched."""
    bad = (~torch.isfinite(losses)).nonzero().tolist()  # [run, step] pairs
    if bad:
        r, step = min(bad, key=lambda rs: (rs[1], rs[0]))
        raise fail(f"training diverged: loss {losses[r, step].item()} at epoch {epoch}, step "
                   f"{step + 1} of {losses.shape[1]} ({names[r]}); nothing was written for "
                   "it; lower the learning rate")


def open_checkpoint(names: list[str], args: argparse.Namespace, identity: dict) -> Checkpoint:
    """The checkpoint of the runs `names`, <checkpoint_dir>/<names>-seed<seed>.pt."""
    path = Path(args.checkpoint_dir) / ("+".join(names) + f"-seed{args.seed}.pt")
    return Checkpoint(path, {**identity, "checkpoint_format": CHECKPOINT_FORMAT}, args.resume)


def resume(checkpoint: Checkpoint, model: nn.Module,
           optimizer: torch.optim.Optimizer | None = None) -> History:
    """With -resume and a checkpoint of this training: its model, optimizer (if it has one),
    RNG and history; else a fresh history."""
    state = checkpoint.load()
    if state is None:
        return History()
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    print(f"resuming after epoch {state['epoch']} from {checkpoint.path}")
    return History(state["epoch"], state["losses"], state["val_acc"], state["seconds"])


def save(checkpoint: Checkpoint, history: History, model: nn.Module,
         optimizer: torch.optim.Optimizer | None = None) -> None:
    checkpoint.save({**asdict(history), "model": model.state_dict(),
                     "optimizer": optimizer.state_dict() if optimizer is not None else None})


# ---------------------------------------------------------------------------------------------
# The handed-out training loop, one configuration
# ---------------------------------------------------------------------------------------------
def train_batch(X: torch.Tensor, y: torch.Tensor, model: nn.Module,
                optimizer: torch.optim.Optimizer, criterion: nn.Module) -> float:
    """One optimizer step on the batch, as handed out; returns the batch loss."""
    optimizer.zero_grad()
    loss = criterion(model(X), y)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    model.eval()
    predictions = torch.cat([model(X[i:i + batch_size]).argmax(dim=-1)
                             for i in range(0, len(X), batch_size)])
    model.train()
    return predictions


def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy; under no_grad and in batches (the handed-out one kept the graph)."""
    return (predict(model, X) == y).double().mean().item()


def train_one(lr: float, model: CNN, args: argparse.Namespace, data: octmnist.Data,
              checkpoint: Checkpoint, name: str) -> History:
    """The handed-out training loop for one configuration."""
    optimizer = OPTIMIZERS[args.optimizer](model.parameters(), lr=lr, weight_decay=args.l2_decay)
    criterion = nn.NLLLoss()
    train_loader = DataLoader(TensorDataset(*data.splits["train"]), batch_size=args.batch_size,
                              shuffle=True)
    history = resume(checkpoint, model, optimizer)
    for _ in range(history.epoch, args.epochs):
        with Timer() as timer:
            model.train()
            losses = [train_batch(X, y, model, optimizer, criterion)
                      for X, y in tqdm(train_loader, leave=False, disable=args.no_progress)]
            accuracy = evaluate(model, *data.splits["dev"])
        history.record(torch.tensor([losses]), [accuracy], timer.seconds, [name])
        save(checkpoint, history, model, optimizer)
    return history


# ---------------------------------------------------------------------------------------------
# Several learning rates side by side (SGD), with the handed-out loop's updates
# ---------------------------------------------------------------------------------------------
def train_side_by_side(learning_rates: list[float], model: CNN, args: argparse.Namespace,
                       data: octmnist.Data, checkpoint: Checkpoint, names: list[str]
                       ) -> tuple[History, list[dict[str, torch.Tensor]]]:
    """The loop above for the runs `names` at once, as one SideBySideCNN starting from `model`'s
    weights; validation runs through `model` loaded with each copy's weights. Returns the
    history and each run's final weights."""
    copies = side_by_side.SideBySideCNN([model] * len(learning_rates))
    rates = torch.tensor(learning_rates, device=args.device)
    history = resume(checkpoint, copies)
    for _ in range(history.epoch, args.epochs):
        with Timer() as timer:
            losses = side_by_side.train_epoch(copies, *data.splits["train"], rates,
                                              args.l2_decay, args.batch_size)
            accuracies = []
            for r in range(len(learning_rates)):
                model.load_state_dict(copies.copy_state_dict(r))
                accuracies.append(evaluate(model, *data.splits["dev"]))
        history.record(losses, accuracies, timer.seconds, names)
        save(checkpoint, history, copies)
    return history, [copies.copy_state_dict(r) for r in range(len(learning_rates))]


def train_models(learning_rates: list[float], model: CNN, args: argparse.Namespace,
                 data: octmnist.Data, checkpoint: Checkpoint, names: list[str]
                 ) -> tuple[History, list[dict[str, torch.Tensor]]]:
    """Train `model`'s weights at each learning rate: one rate by the handed-out loop, several
    side by side. Returns the history and each run's final weights."""
    if len(learning_rates) == 1:
        history = train_one(learning_rates[0], model, args, data, checkpoint, names[0])
        return history, [model.state_dict()]
    return train_side_by_side(learning_rates, model, args, data, checkpoint, names)


def train_runs(learning_rates: list[float], no_maxpool: bool, args: argparse.Namespace,
               data: octmnist.Data, out: cli.Outputs) -> list[dict]:
    """Train one configuration per learning rate from seed `args.seed`; returns each run's
    curves and test scores, and draws its two figures."""
    names = [config_name(lr, args, no_maxpool) for lr in learning_rates]
    identity = run_identity(learning_rates, no_maxpool, args, data.info)
    configure_seed(args.seed)
    model = CNN(args.dropout, no_maxpool=no_maxpool).to(args.device)
    with open_checkpoint(names, args, identity) as checkpoint:
        history, states = train_models(learning_rates, model, args, data, checkpoint, names)
    losses = torch.stack(history.losses, dim=1)  # (runs, epochs, batches)
    epochs = torch.arange(1, args.epochs + 1)
    running = losses.flatten(1).cumsum(dim=1).view_as(losses)[..., -1] / (losses.shape[2] * epochs)
    runs = []
    for r, (lr, name, state) in enumerate(zip(learning_rates, names, states)):
        model.load_state_dict(state)
        run = {"config": name, "learning_rate": lr, "no_maxpool": no_maxpool,
               "train_loss": losses[r].mean(dim=1).tolist(),
               "train_loss_running_mean": running[r].tolist(),  # the handed-out curve
               "val_acc": [v[r] for v in history.val_acc],
               "test_acc": evaluate(model, *data.splits["test"]),
               "test_acc_full": evaluate(model, *data.splits["test_full"]),
               "real_80_acc": evaluate(model, *data.real_check) if data.real_check else None,
               "trainable_params": get_number_trainable_params(model),
               "wall_time_s": history.seconds,
               "trained_with": "the handed-out loop" if len(learning_rates) == 1
               else f"{len(learning_rates)} runs side by side"}
        print(f"[{name}] final test acc {run['test_acc']:.4f} (529-image subset), "
              f"{run['test_acc_full']:.4f} (full test split)")
        figures.plot_q2_run(run, out.plots, "q2" if args.sweep else "q2-run")
        runs.append(run)
    return runs


# ---------------------------------------------------------------------------------------------
# The protocol: every learning rate of both networks, the best chosen on validation
# ---------------------------------------------------------------------------------------------
def sweep_groups(args: argparse.Namespace) -> list[tuple[list[float], bool]]:
    """The sweep's trainings: per network, its learning rates side by side (SGD) or one by
    one (Adam, whose update does not separate by learning rate)."""
    rates = [args.learning_rates] if args.optimizer == "sgd" else \
        [[lr] for lr in args.learning_rates]
    return [(group, no_maxpool) for no_maxpool in (False, True) for group in rates]


def finished_run_path(lr: float, no_maxpool: bool, args: argparse.Namespace) -> Path:
    return Path(args.checkpoint_dir) / f"{config_name(lr, args, no_maxpool)}-seed{args.seed}.json"


def save_finished_run(path: Path, run: dict, identity: dict) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps({"identity": identity, "run": run}))


def load_finished_run(path: Path, identity: dict) -> dict:
    """The run stored in `path`, if it was trained with `identity`."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise fail(f"{path}: unreadable finished-run file ({type(err).__name__}); delete it "
                   "to train the run again") from None
    check_identity(path, record.get("identity") if isinstance(record, dict) else None, identity)
    return record["run"]


def group_runs(learning_rates: list[float], no_maxpool: bool, args: argparse.Namespace,
               data: octmnist.Data, out: cli.Outputs) -> list[dict]:
    """A sweep group's runs: with -resume, reused from their finished-run files when all are
    there with the same identity; else trained, and their files written."""
    identity = run_identity(learning_rates, no_maxpool, args, data.info)
    paths = [finished_run_path(lr, no_maxpool, args) for lr in learning_rates]
    if args.resume and all(p.exists() for p in paths):
        print("resuming: reusing " + ", ".join(str(p) for p in paths))
        return [load_finished_run(p, identity) for p in paths]
    runs = train_runs(learning_rates, no_maxpool, args, data, out)
    for path, run in zip(paths, runs):
        save_finished_run(path, run, identity)
    return runs


def sweep(args: argparse.Namespace, data: octmnist.Data, out: cli.Outputs) -> dict:
    """Both networks x the learning rates (with -jobs N, the groups on N processes); the best
    rate chosen on validation."""
    groups = sweep_groups(args)
    trained = train_in_pool(groups, args, out) if args.jobs > 1 else \
        [group_runs(*group, args, data, out) for group in groups]
    runs = [run for group in trained for run in group]
    figures.plot_q2_comparison(runs, out.plots)
    return summarize(runs)


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


# ---------------------------------------------------------------------------------------------
# -jobs N: the sweep's groups on a pool of N processes
# ---------------------------------------------------------------------------------------------
class GroupFailed(Exception):
    """A sweep group's error, as it crosses from its worker to the sweep."""


def train_in_pool(groups: list[tuple[list[float], bool]], args: argparse.Namespace,
                  out: cli.Outputs) -> list[list[dict]]:
    """Each group's runs, trained by `args.jobs` spawned processes of one torch thread each
    (or -threads): batch-8 kernels are too small for two threads to help one process, but two
    processes do twice the work. Leaving the block, by an error, Ctrl-C or SIGTERM,
    terminate()s the pool; the first group to fail ends the sweep in one line."""
    if __name__ != "__main__":  # the processes find this file's functions by its path
        raise fail("-jobs needs hw2-q2.py run as a script: python hw2-q2.py ...")
    tasks = [(g, group, args, out) for g, group in enumerate(groups)]
    trained = {}
    with multiprocessing.get_context("spawn").Pool(
            min(args.jobs, len(groups)), initializer=start_worker,
            initargs=(os.getpid(), args.threads or 1)) as pool:
        workers = {process.pid for process in multiprocessing.active_children()}
        results = pool.imap_unordered(train_group, tasks)
        while len(trained) < len(tasks):
            trained.update([next_group(results, workers, args.checkpoint_dir)])
        pool.close()  # all done: the processes end by themselves, not by terminate()
        pool.join()
    return [trained[g] for g in range(len(groups))]


def next_group(results, workers: set[int], checkpoint_dir: str) -> tuple[int, list[dict]]:
    """The next group to finish. A pool process that dies (killed, out of memory) loses its
    task without a word, and the pool would wait for it forever: a process of `workers`
    missing while groups are pending ends the sweep in one line."""
    while True:
        try:
            return results.next(timeout=1)
        except GroupFailed as err:
            raise fail(str(err)) from None
        except multiprocessing.TimeoutError:
            if workers - {process.pid for process in multiprocessing.active_children()}:
                raise fail("a sweep process died before its group finished (killed, or out of "
                           f"memory?); every finished epoch is kept in {checkpoint_dir}: rerun "
                           "with -resume to continue") from None


def train_group(task: tuple) -> tuple[int, list[dict]]:
    """A worker's task: group g's runs, on the data read again here. Any error, a one-line
    exit included, comes back as a GroupFailed naming the group and the cause."""
    g, (learning_rates, no_maxpool), args, out = task
    args.no_progress = True  # several processes' progress bars would garble each other
    try:
        data = octmnist.load(args.data_dir, args.subset, args.real_images, args.device)
        return g, group_runs(learning_rates, no_maxpool, args, data, out)
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise  # stop_worker's: the pool is being terminated
        cause = stop.code.removeprefix("error: ")
    except Exception as err:
        cause = f"{type(err).__name__}: {err}"
    network = "no max-pool" if no_maxpool else "max-pool"
    rates = ", ".join(map(str, learning_rates))
    raise GroupFailed(f"sweep group {g} ({network}, learning rates {rates}) failed: {cause}")


def start_worker(parent: int, threads: int) -> None:
    """A pool process's set-up: Ctrl-C is left to the parent, which terminate()s the pool
    (SIGTERM, which unwinds: locks and temporary files go); a thread watching the parent sends
    that SIGTERM too when the parent ends, however it ends, SIGKILL included."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop_worker)
    # a process already ending by itself (the pool's work done) ignores it
    multiprocessing.util.Finalize(None, signal.signal, (signal.SIGTERM, ignore), exitpriority=100)
    threading.Thread(target=watch_parent, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)


def watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def stop_worker(signum, frame) -> None:
    """SIGTERM in a pool process: exit through `finally` blocks, once."""
    signal.signal(signal.SIGTERM, ignore)
    raise SystemExit(128 + signum)


def ignore(signum, frame) -> None:
    """A no-op signal handler. Not SIG_IGN: Python reports a signal already pending when its
    handler becomes SIG_IGN as an error."""


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Question 2: a CNN on OCTMNIST. Q2.1 the conv-pool network, its learning "
                    "rate tuned on validation; Q2.2 the same without max-pooling "
                    "(-no_maxpool); Q2.3 the trainable-parameter counts.")
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
                        help="the whole protocol: both networks x -learning_rates, the best "
                             "learning rate chosen on validation, test reported")
    parser.add_argument("-learning_rates", type=positive_float, nargs="+",
                        default=list(LEARNING_RATES),
                        help="learning rates of -sweep (default: %(default)s)")
    parser.add_argument("-jobs", type=positive_int, default=1,
                        help="-sweep: train the two networks in this many processes at once, "
                             "one torch thread each (default: %(default)s; 2 puts both cores of "
                             "a 2-core CPU to work)")
    parser.add_argument("-subset", type=positive_int, default=None,
                        help="train and validate on the first N images only (smoke runs)")
    parser.add_argument("-real_images", default=None,
                        help="the 80 genuine Kermany OCT images to score as a check (default: "
                             f"{octmnist.REAL_CHECK_FILENAME} in -data_dir or $HW2_DATA_DIR)")
    parser.add_argument("-checkpoint_dir", default=None,
                        help="where each epoch's training state and finished runs are kept "
                             "(default: checkpoints/q2 under -out_dir, else under the current "
                             "folder)")
    parser.add_argument("-resume", action="store_true",
                        help="continue from -checkpoint_dir: finished runs are reused, an "
                             "interrupted one continues after its last finished epoch; only "
                             "runs of the same configuration, data and library versions")
    parser.add_argument("-device", default="cpu", type=cli.torch_device,
                        help="torch device, e.g. cuda (default: %(default)s, as handed out)")
    parser.add_argument("-no_progress", action="store_true", help="no progress bars")
    add_common_args(parser, threads=True)
    args = parser.parse_args(argv)
    if not 0 <= args.dropout < 1:
        parser.error(f"argument -dropout: must lie in [0, 1) (got {args.dropout})")
    if args.checkpoint_dir is None:  # two output folders never share checkpoints
        args.checkpoint_dir = str(Path(args.out_dir or ".") / "checkpoints" / "q2")
    return args


def main(argv: list[str] | None = None) -> None:
    """Load and check the data, check the output folders and take the lock on the results
    file, then train: a bad input stops the run before any training, and an interruption
    ends in one line, every finished epoch kept in the checkpoints for -resume."""
    args = parse_args(argv)
    out = cli.apply_common_args(args)
    name = "q2" if args.sweep else \
        f"q2-run-{config_name(args.learning_rate, args, args.no_maxpool)}"
    check_replaceable(out.results, name, vars(args), args.force)  # else only with -force
    try:
        data = octmnist.load(args.data_dir, args.subset, args.real_images, args.device)
        check_replaceable(out.results, name, vars(args), args.force, {"md5": data.info["md5"]})
        out.ensure_writable()
        cli.ensure_writable(Path(args.checkpoint_dir), "-checkpoint_dir")
        with exclusive(out.results / f"{name}.lock", f"{name}.json"):
            with Timer() as wall:
                results = sweep(args, data, out) if args.sweep else \
                    {"runs": train_runs([args.learning_rate], args.no_maxpool, args, data, out)}
            layers = {"max-pool": params_per_layer(CNN(args.dropout)),
                      "no max-pool": params_per_layer(CNN(args.dropout, no_maxpool=True))}
            results.update(params_per_layer=layers,
                           trainable_params={k: sum(v.values()) for k, v in layers.items()})
            path = write_results(name, results, config=vars(args), seed=args.seed,
                                 data=data.info, wall_time_s=wall.seconds,
                                 results_dir=out.results)
    except KeyboardInterrupt:
        raise fail(f"interrupted; every finished epoch is kept in {args.checkpoint_dir}: rerun "
                   "with -resume to continue") from None
    print("Number of trainable parameters: "
          f"{get_number_trainable_params(CNN(args.dropout, no_maxpool=args.no_maxpool))}")
    print(f"wrote {path} ({wall.seconds:.0f} s)")


def interrupt(signum, frame) -> None:
    """SIGINT and SIGTERM handler: stop like Ctrl-C, so that `finally` blocks run (a -jobs
    sweep terminates its pool; locks are released and removed), ignoring further signals
    meanwhile."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, ignore)
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    main()
